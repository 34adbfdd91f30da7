"""The package's shape (docs/design.md): every import goes to the same layer or one below,
with no exception; there is no import cycle; the trainer runs without loading Pyomo; no module
is over 500 lines and no function over 80 lines of code; the design page names every module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pyomo_nnrelax"

LAYERS = {
    # 1. foundations
    "errors": 1, "checks": 1, "options": 1, "files": 1, "parallel": 1, "progress": 1,
    "data": 1, "plots": 1, "matrices": 1,
    # 2. the model: numpy only
    "box": 2, "ties": 2, "network": 2, "bounds": 2,
    # 3. the file format
    "onnx": 3,
    # 4. MILPs as matrices
    "formulations": 4,
    # 5. HiGHS
    "lp": 5,
    # 6. Pyomo
    "block": 6, "block_arguments": 6, "copies": 6, "components": 6, "starts": 6,
    "relaxation": 6, "solve": 6, "measure": 6, "verification": 6,
    # 7. the trainer
    "training": 7,
    # 8. the refinement loop and sweeps built on the trainer and the block
    "refinement": 8, "sweep": 8,
    # 9. studies
    "experiments": 9,
    # 10. the command line
    "cli": 10,
}  # fmt: skip
"""Layer of every top-level module or subpackage, lowest first (as in docs/design.md)."""

MAX_MODULE_LINES = 500
MAX_FUNCTION_CODE_LINES = 80


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def layer_of(module: str) -> int:
    """The module's layer.  The package root counts as layer 1: it imports the errors and
    ``__version__`` eagerly and everything else on first use."""
    if module == "":
        return 1
    return LAYERS[module.split(".")[0]]


def imports(path: Path) -> list[tuple[str, bool]]:
    """Package modules imported by ``path``, each with whether the import sits in a function."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        inside = getattr(node, "_inside_function", False)
        for child in ast.iter_child_nodes(node):
            child._inside_function = inside or isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef)
            )
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                names = [f"{target}.{a.name}".strip(".") for a in node.names]
                found += [(_existing(n, target), inside) for n in names]
            elif node.module and node.module.startswith("pyomo_nnrelax"):
                found.append((node.module.removeprefix("pyomo_nnrelax").strip("."), inside))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pyomo_nnrelax"):
                    found.append((alias.name.removeprefix("pyomo_nnrelax").strip("."), inside))
    return found


def _existing(candidate: str, fallback: str) -> str:
    """``pkg.name`` when it is a module of the package (``from . import x``), else ``pkg``."""
    path = PACKAGE.joinpath(*candidate.split("."))
    return candidate if path.with_suffix(".py").exists() or path.is_dir() else fallback


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) or "root" for p in MODULES])
def test_every_import_goes_to_the_same_layer_or_below(path):
    source = module_name(path)
    if source == "":  # the root imports its public names on first use
        return
    own = layer_of(source)
    for target, _ in imports(path):
        theirs = layer_of(target)
        assert theirs <= own, f"{source} (layer {own}) imports {target} (layer {theirs})"


def test_there_is_no_import_cycle():
    graph = {module_name(p): {t for t, _ in imports(p)} for p in MODULES}
    graph = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            assert state.get(t) != 1, "import cycle: " + " -> ".join([*trail, m, t])
            if t not in state:
                visit(t, [*trail, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_every_module_has_a_layer():
    for path in MODULES:
        name = module_name(path)
        assert name == "" or name.split(".")[0] in LAYERS, name


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) or "root" for p in MODULES])
def test_modules_and_functions_stay_small(path):
    """No module over 500 lines; no function over 80 lines of code (its body without the
    docstring, blank lines and comments)."""
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name} is over {MAX_MODULE_LINES}"
    lines = text.splitlines()
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the docstring
        if not body:
            continue
        span = lines[body[0].lineno - 1 : node.end_lineno]
        code = [line for line in span if line.strip() and not line.strip().startswith("#")]
        assert len(code) <= MAX_FUNCTION_CODE_LINES, (
            f"{module_name(path)}.{node.name} has {len(code)} lines of code"
        )


@pytest.mark.slow
def test_training_runs_without_loading_pyomo():
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from pyomo_nnrelax import Network
        from pyomo_nnrelax.training import BoundWidth, LPGap, Trainer

        X = np.random.default_rng(0).uniform(-1, 1, (64, 2))
        trainer = Trainer(Network.mlp([2, 6, 6, 1]), X, X.sum(axis=1),
                          input_bounds=[(-1, 1), (-1, 1)], regularizer=BoundWidth() + LPGap(),
                          lam=1e-2, epochs=2, batch_size=32)
        trainer.fit()
        loaded = sorted(m for m in sys.modules if m == "pyomo" or m.startswith("pyomo."))
        print(loaded)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_design_page_names_every_module():
    """``docs/design.md`` names every module and subpackage of the package, and every module of
    ``onnx/`` (the rooms a newcomer looks for)."""
    design = (PACKAGE.parent / "docs" / "design.md").read_text()
    entries = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    entries |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert entries == set(LAYERS), "LAYERS is out of date with the package"
    for name in sorted(entries):
        assert f"`{name}`" in design or f"`{name}/`" in design, f"design.md does not name {name}"
    for path in sorted((PACKAGE / "onnx").glob("*.py")):
        if path.stem != "__init__":
            assert f"`{path.stem}`" in design, f"design.md does not name onnx/{path.name}"


def test_the_root_exports_exactly_what_docs_api_lists():
    """``docs/api.md`` documents the root's names (and the regularizers of ``training``)."""
    import pyomo_nnrelax

    api = (PACKAGE.parent / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^### `pyomo_nnrelax\.(\w+)`", api, flags=re.M))
    assert documented == set(pyomo_nnrelax.__all__)


PUBLIC = {"pyomo_nnrelax", "pyomo_nnrelax.training"}
IMPORT = re.compile(
    r"^\s*(?:from\s+(pyomo_nnrelax[\w.]*)\s+import|import\s+(pyomo_nnrelax[\w.]*))", re.M
)


def _python_blocks(markdown: str) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", markdown, flags=re.S))


@pytest.mark.parametrize(
    "path",
    [*sorted((PACKAGE.parent / "examples").glob("*.py")), PACKAGE.parent / "README.md"],
    ids=lambda p: p.name,
)
def test_examples_and_the_readme_import_only_the_public_api(path):
    """A user needs ``pyomo_nnrelax`` and ``pyomo_nnrelax.training``, nothing deeper."""
    text = path.read_text()
    code = _python_blocks(text) if path.suffix == ".md" else text
    modules = {a or b for a, b in IMPORT.findall(code)}
    assert modules, f"{path.name} imports nothing from the package"
    assert modules <= PUBLIC, f"{path.name} imports {sorted(modules - PUBLIC)}"
