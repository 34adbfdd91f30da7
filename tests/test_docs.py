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
