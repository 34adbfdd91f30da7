"""Progress bars: figures that are not known yet are left out, not shown as None."""

from __future__ import annotations

from pyomo_nnrelax.progress import progress_bar


def test_unknown_figures_are_left_out_and_floats_are_short(capsys):
    bar = progress_bar(2, "refine", "round")
    bar.update(1)
    bar.show(unstable=12, lp_gap=None, loss=0.123456789)
    bar.close()
    err = capsys.readouterr().err
    assert "unstable=12" in err and "loss=0.1235" in err
    assert "None" not in err and "lp_gap" not in err
    assert "1/2" in err and " round" in err


def test_a_silent_bar_prints_nothing(capsys):
    bar = progress_bar(None, "x", "step", show=False)
    bar.update(3)
    bar.show(a=None)
    bar.close()
    assert bar.n == 3 and capsys.readouterr().err == ""
