"""The documentation stays true to the code: the API page is generated from it, and every
``pyomo_nnrelax.`` name the README and docs/ mention exists."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOTTED = re.compile(r"\bpyomo_nnrelax(?:\.[A-Za-z_]\w*)+")

sys.path.insert(0, str(ROOT / "docs"))
from make_api import resolve  # noqa: E402


@pytest.mark.slow
def test_api_page_is_up_to_date():
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "make_api.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def _mentioned_names() -> list[tuple[str, str]]:
    names = set()
    for page in PAGES:
        for match in DOTTED.findall(page.read_text()):
            names.add((page.name, match.rstrip(".")))
    return sorted(names)


@pytest.mark.parametrize("page, dotted", _mentioned_names())
def test_every_mentioned_name_exists(page, dotted):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 0.1's paths are named on purpose
        try:
            resolve(dotted)
        except (ImportError, AttributeError) as exc:
            pytest.fail(f"{page} names {dotted}, which does not exist ({exc})")


def test_docs_cite_only_the_repository():
    """The repository explains itself: nothing cites files outside it."""
    for page in [*PAGES, *ROOT.joinpath("pyomo_nnrelax").rglob("*.py")]:
        assert "../shared" not in page.read_text(), page


TEST_PATH = re.compile(r"\b((?:tests|benchmarks|examples)/[\w/]+\.py)(?:::(\w+))?")


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name
)
def test_every_file_and_test_the_docs_cite_exists(page):
    """A test, benchmark or example the docs cite (``tests/lp/test_highs.py::name``) exists,
    and so does the named test function."""
    for path, name in TEST_PATH.findall(page.read_text()):
        file = ROOT / path
        assert file.is_file(), f"{page.name} cites {path}, which does not exist"
        if name:
            assert f"def {name}(" in file.read_text(), f"{page.name} cites {path}::{name}"


def _readme_block(heading: str) -> str:
    """The first python block after ``heading`` in the README."""
    text = (ROOT / "README.md").read_text().split(f"\n{heading}\n", 1)[1]
    return text.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_embedding_example_runs_and_its_check_holds(tmp_path, monkeypatch, capsys):
    """The README's embedding example, run as written on a small network saved as
    ``model.onnx``: the solve is optimal and the printed check is within 1e-6."""
    from pyomo_nnrelax import Network, write_onnx

    write_onnx(Network.mlp([2, 8, 8, 1], seed=0), tmp_path / "model.onnx", dtype="float64")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(_readme_block("## Embedding a network"), namespace)
    assert namespace["stats"].optimal
    assert namespace["m"].nn.check().max_abs_error < 1e-6
    assert "max |difference|" in capsys.readouterr().out
