"""Write docs/api.md from the package itself: each public name's signature and docstring summary.

    python docs/make_api.py           # rewrite docs/api.md
    python docs/make_api.py --check   # exit 1 if docs/api.md is out of date (the tests run this)

The names and their grouping are listed below (``GROUPS``); the signatures and first docstring
paragraphs are read from the code, so the page cannot drift from it.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path

API_PAGE = Path(__file__).resolve().parent / "api.md"

GROUPS: dict[str, list[str]] = {
    "Embedding a network": [
        "pyomo_nnrelax.NNBlock",
        "pyomo_nnrelax.Network",
        "pyomo_nnrelax.Layer",
        "pyomo_nnrelax.WeightTie",
        "pyomo_nnrelax.InputBox",
    ],
    "Bounds": [
        "pyomo_nnrelax.NetworkBounds",
        "pyomo_nnrelax.interval_bounds",
        "pyomo_nnrelax.tighten_bounds",
    ],
    "ONNX": [
        "pyomo_nnrelax.onnx.read_onnx",
        "pyomo_nnrelax.onnx.write_onnx",
        "pyomo_nnrelax.onnx.read_stored_bounds",
        "pyomo_nnrelax.onnx.run_onnxruntime",
    ],
    "Formulations": [
        "pyomo_nnrelax.formulations.bigm.bigm_model",
        "pyomo_nnrelax.formulations.partition.partition_formulation",
    ],
    "LP relaxation at fixed inputs": [
        "pyomo_nnrelax.relaxation.solve_relaxations",
    ],
    "Training": [
        "pyomo_nnrelax.training.Trainer",
        "pyomo_nnrelax.training.LPGap",
        "pyomo_nnrelax.training.BoundWidth",
        "pyomo_nnrelax.training.StableNeuron",
        "pyomo_nnrelax.training.ReLUStability",
        "pyomo_nnrelax.training.L1",
        "pyomo_nnrelax.training.L2",
        "pyomo_nnrelax.training.regularizers.parse_regularizer",
    ],
    "Experiments: solving, measuring, refining, sweeping": [
        "pyomo_nnrelax.experiments.solvers.solve_model",
        "pyomo_nnrelax.experiments.measure.difficulty",
        "pyomo_nnrelax.experiments.measure.solve_block",
        "pyomo_nnrelax.experiments.refine.refine",
        "pyomo_nnrelax.experiments.sweep.run_sweep",
        "pyomo_nnrelax.experiments.sweep.run_config",
        "pyomo_nnrelax.experiments.data.read_data",
    ],
    "Two-stage stochastic programming (facility location)": [
        "pyomo_nnrelax.experiments.cflp.make_instance",
        "pyomo_nnrelax.experiments.cflp.CFLPInstance",
        "pyomo_nnrelax.experiments.cflp.recourse_cost",
        "pyomo_nnrelax.experiments.cflp.expected_cost",
        "pyomo_nnrelax.experiments.cflp.evaluation_scenarios",
        "pyomo_nnrelax.experiments.scenarios.generate_samples",
        "pyomo_nnrelax.experiments.twostage.quantile_levels",
        "pyomo_nnrelax.experiments.twostage.objective_weights",
        "pyomo_nnrelax.experiments.twostage.first_stage_model",
        "pyomo_nnrelax.experiments.twostage.solve_first_stage",
    ],
    "Benchmark functions": [
        "pyomo_nnrelax.experiments.functions.peaks",
        "pyomo_nnrelax.experiments.functions.himmelblau",
        "pyomo_nnrelax.experiments.functions.ackley",
        "pyomo_nnrelax.experiments.functions.box",
        "pyomo_nnrelax.experiments.functions.latin_hypercube",
    ],
}

HEADER = """# API reference

The public names, grouped by what they are for, with the module they live in. Every class and
function has a numpy-style docstring with the details (`help(name)`); errors are listed in
`troubleshooting.md`. This page is written by `python docs/make_api.py` (the tests check that
it is up to date).

0.1's module paths still import, with a `DeprecationWarning`: `pyomo_nnrelax.onnx_io` (now
`pyomo_nnrelax.onnx`), `pyomo_nnrelax.tightening` (`pyomo_nnrelax.lp.tightening`, also
`pyomo_nnrelax.tighten_bounds`), `pyomo_nnrelax.measure`, `pyomo_nnrelax.sweep`,
`pyomo_nnrelax.training.refine` and `pyomo_nnrelax.benchmarks.functions` (all now in
`pyomo_nnrelax.experiments`).
"""

FOOTER = """## NNBlock members

| member | what |
|---|---|
| `inputs[i]`, `outputs[j]` | Pyomo variables over the flattened input and output |
| `layer[l].z`, `layer[l].xh` | pre-activations and ReLU outputs of layer `l` (0-based) |
| `layer[l].is_active` | binaries of the unstable neurons, 1 = active (both formulations) |
| `layer[l].partition_p` | partition formulation: the partial sums of the active case |
| `layer[l].inactive` | partition formulation: `1 - is_active`, an expression kept from 0.1 |
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
    return f"```python\n{dotted}{signature(obj)}\n```\n{summary(obj)}\n"


def render() -> str:
    sections = [HEADER]
    for title, names in GROUPS.items():
        sections.append(f"## {title}\n\n" + "\n".join(entry(n) for n in names))
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
