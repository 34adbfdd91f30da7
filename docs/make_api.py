"""Write docs/api.md from the package itself: each public name's signature and docstring summary.

    python docs/make_api.py           # rewrite docs/api.md
    python docs/make_api.py --check   # exit 1 if docs/api.md is out of date (the tests run this)

The page lists exactly the names of ``pyomo_nnrelax`` (its ``__all__``) and the regularizers of
``pyomo_nnrelax.training``, grouped below (``GROUPS``; a name missing from the groups, or a
group naming something the root does not export, stops the script).  Signatures and first
docstring paragraphs are read from the code, so the page cannot drift from it.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path

API_PAGE = Path(__file__).resolve().parent / "api.md"

GROUPS: dict[str, list[str]] = {
    "Embedding a network": ["NNBlock", "Network", "Layer", "WeightTie", "InputBox"],
    "ONNX in and out": ["read_onnx", "write_onnx", "run_onnxruntime"],
    "Bounds": ["NetworkBounds", "interval_bounds", "tighten_bounds"],
    "Solving and measuring": ["solve_model", "SolveStats", "difficulty"],
    "Training and refinement": ["Trainer", "refine", "RefineResult", "RefineHistory"],
    "Verification": ["verify", "clipped_ball"],
    "Errors": [
        "NNRelaxError",
        "OnnxImportError",
        "UnsupportedOperationError",
        "StaleBoundsError",
        "InvalidNetworkError",
        "InputBoundsError",
        "SolverError",
        "ParallelError",
    ],
}
"""The root's names, each once."""

REGULARIZERS = [
    "BoundWidth",
    "StableNeuron",
    "ReLUStability",
    "LPGap",
    "L1",
    "L2",
    "PinballLoss",
    "CrossEntropyLoss",
    "PGD",
    "parse_regularizer",
]
"""What ``pyomo_nnrelax.training`` adds for a user: the regularizers (composed with ``+`` and
``*``), the quantile and cross-entropy losses, PGD adversarial training, and regularizers
written as text."""

HEADER = """# API reference

Everything a user needs is a name of `pyomo_nnrelax`, plus the regularizers of
`pyomo_nnrelax.training`; this page lists exactly those, grouped by what they are for. Every
class and function has a numpy-style docstring with the details (`help(name)`); errors are
listed in `troubleshooting.md`. This page is written by `python docs/make_api.py` (the tests
check that it is up to date and that it lists exactly the root's names).
"""

FOOTER = """## NNBlock members

| member | what |
|---|---|
| `inputs[i]`, `outputs[j]` | Pyomo variables over the flattened input and output |
| `layer[l].z`, `layer[l].xh` | pre-activations and ReLU outputs of layer `l` (0-based) |
| `layer[l].is_active` | binaries of the unstable neurons, 1 = active (both formulations) |
| `layer[l].partition_p` | partition formulation: the partial sums of the active case |
| `layer[l].affine`, `relu_*`, `partition_*` | constraints, indexed by neuron |
| `network`, `bounds`, `matrix_model` | the embedded Network, its NetworkBounds, the matrix form |
| `summary()`, `layer_stats()` | binaries, stability counts and big-M statistics per layer |
| `check()` | block outputs vs onnxruntime at the block's input values |
| `warm_start(x=None)` | set every variable from a forward pass (at `x` or the best sample) |
| `input_values()`, `output_values()` | current values as arrays |
"""


def resolve(dotted: str):
    """The object named ``module.attribute`` (the longest importable module prefix)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def summary(obj) -> str:
    """The first paragraph of the docstring."""
    doc = inspect.getdoc(obj) or ""
    return doc.split("\n\n", 1)[0].strip()


class _Annotation(str):
    """An annotation kept as text (``from __future__ import annotations``), shown unquoted."""

    def __repr__(self) -> str:
        return str(self)


def signature(obj) -> str:
    """``(parameters) -> return`` with the annotations as written in the code."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"

    def plain(annotation):
        return _Annotation(annotation) if isinstance(annotation, str) else annotation

    params = [p.replace(annotation=plain(p.annotation)) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=plain(sig.return_annotation)))


def entry(dotted: str) -> str:
    obj = resolve(dotted)
    head = f"### `{dotted}`\n\n"
    if inspect.isclass(obj) and issubclass(obj, Exception):
        return f"{head}{summary(obj)}\n"
    return f"{head}```python\n{dotted}{signature(obj)}\n```\n{summary(obj)}\n"


def check_groups() -> None:
    """Every root name in exactly one group, and nothing else."""
    import pyomo_nnrelax

    grouped = [name for names in GROUPS.values() for name in names]
    missing = set(pyomo_nnrelax.__all__) - set(grouped)
    extra = set(grouped) - set(pyomo_nnrelax.__all__)
    if missing or extra or len(grouped) != len(set(grouped)):
        raise SystemExit(f"GROUPS is out of date: missing {sorted(missing)}, extra {sorted(extra)}")


def render() -> str:
    check_groups()
    sections = [HEADER]
    for title, names in GROUPS.items():
        entries = [entry(f"pyomo_nnrelax.{n}") for n in names]
        sections.append(f"## {title}\n\n" + "\n".join(entries))
    entries = [entry(f"pyomo_nnrelax.training.{n}") for n in REGULARIZERS]
    sections.append(
        "## Regularizers and losses (`pyomo_nnrelax.training`)\n\n" + "\n".join(entries)
    )
    sections.append(FOOTER)
    return "\n".join(sections)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Only compare; exit 1 if stale.")
    args = parser.parse_args()
    text = render()
    if args.check:
        if API_PAGE.read_text() != text:
            print(f"{API_PAGE} is out of date: run python docs/make_api.py", file=sys.stderr)
            return 1
        return 0
    API_PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
