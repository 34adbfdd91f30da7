"""The package's layers (docs/design.md): every import goes to the same layer or one below,
there is no import cycle, and the trainer runs without loading Pyomo."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pyomo_nnrelax"

LAYERS = {
    # 1. foundations
    "errors": 1, "checks": 1, "options": 1, "files": 1, "parallel": 1, "progress": 1,
    # 2. the model: numpy only
    "box": 2, "ties": 2, "network": 2, "bounds": 2,
    # 3. the file format
    "onnx": 3,
    # 4. MILPs as matrices
    "formulations": 4,
    # 5. HiGHS
    "lp": 5,
    # 6. Pyomo
    "block": 6, "relaxation": 6,
    # 7. the trainer
    "training": 7,
    # 8. experiments built on the library
    "experiments": 8,
    # 9. the command line
    "cli": 9,
}  # fmt: skip
"""Layer of every top-level module or subpackage, lowest first (as in docs/design.md)."""

ALIASES = {"onnx_io", "tightening", "measure", "sweep", "benchmarks", "training.refine"}
"""0.1's module paths, kept as re-exports of the new homes: above every layer."""

LAZY_FACADES = {("network", "onnx")}
"""The imports allowed to go up a layer, only inside a function: ``Network.from_onnx`` and
``Network.to_onnx`` import the ONNX package when they are called."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def layer_of(module: str) -> int | None:
    """The module's layer; None for 0.1's aliases.  The package root counts as layer 1: it
    imports the errors and ``__version__`` eagerly and everything else on first use."""
    if module == "":
        return 1
    if module in ALIASES or module.split(".")[0] in ALIASES:
        return None
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
    own = layer_of(source)
    if own is None or source == "":  # 0.1's aliases sit above everything; the root is lazy
        return
    for target, inside_function in imports(path):
        theirs = layer_of(target)
        assert theirs is not None, f"{source} imports the 0.1 alias {target}"
        if theirs > own:
            pair = (source.split(".")[0], target.split(".")[0])
            assert pair in LAZY_FACADES and inside_function, (
                f"{source} (layer {own}) imports {target} (layer {theirs})"
            )


def test_there_is_no_import_cycle():
    graph = {module_name(p): {t for t, _ in imports(p)} for p in MODULES}
    graph = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}
    for a, b in LAZY_FACADES:
        for m in graph:
            if m.split(".")[0] == a:
                graph[m] = {t for t in graph[m] if t.split(".")[0] != b}
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
        assert name == "" or name.split(".")[0] in LAYERS or layer_of(name) is None, name


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


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("pyomo_nnrelax.onnx_io", "read_onnx", "pyomo_nnrelax.onnx"),
        ("pyomo_nnrelax.tightening", "tighten_bounds", "pyomo_nnrelax.lp.tightening"),
        ("pyomo_nnrelax.measure", "difficulty", "pyomo_nnrelax.experiments.measure"),
        ("pyomo_nnrelax.sweep", "run_sweep", "pyomo_nnrelax.experiments.sweep"),
        ("pyomo_nnrelax.training.refine", "refine", "pyomo_nnrelax.experiments.refine"),
        ("pyomo_nnrelax.benchmarks.functions", "peaks", "pyomo_nnrelax.experiments.functions"),
    ],
)
def test_the_module_paths_of_0_1_still_work_and_say_where_to_go(old, name, new):
    code = f"import warnings; warnings.simplefilter('error'); from {old} import {name}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "DeprecationWarning" in result.stderr and new in result.stderr
    ok = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", f"from {old} import {name}"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr


def _readme_layout() -> str:
    """The code block of the README's "Layout" section."""
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1]


def test_readme_layout_names_every_module_at_its_layer():
    """Every module and subpackage of the package appears in the README's layout, on the line
    of its layer number (or, for 0.1's aliases, on the aliases' line)."""
    layout = _readme_layout()
    entries = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    entries |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert entries - ALIASES == set(LAYERS), "LAYERS is out of date with the package"
    lines = layout.splitlines()
    for name in sorted(entries):
        spelled = f"{name}.py" if (PACKAGE / f"{name}.py").is_file() else f"{name}/"
        index = next((i for i, line in enumerate(lines) if spelled in line.split()), None)
        assert index is not None, f"README layout does not name {spelled}"
        if name in ALIASES:
            assert "DeprecationWarning" in lines[index + 1], f"{spelled}: not on the aliases' line"
            continue
        layer_line = lines[index] if lines[index].startswith("  ") else ""
        numbers = [w for w in (layer_line + " " + lines[index + 1]).split() if w.isdigit()]
        assert numbers[:1] == [str(LAYERS[name])], f"README layout puts {spelled} at {numbers[:1]}"
