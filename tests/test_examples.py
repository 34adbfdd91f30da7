"""Every example runs end to end in its reduced (--quick) mode."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_in_quick_mode(script, tmp_path):
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    checks = [float(v) for v in re.findall(r"max \|difference\| = (\S+)", done.stdout)]
    assert checks, "the example prints no check of its optima against onnxruntime"
    assert max(checks) < 1e-6, done.stdout
