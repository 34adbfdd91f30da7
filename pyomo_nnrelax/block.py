"""``NNBlock``: a ReLU network embedded in a Pyomo model as an ordinary block.

    m.nn = NNBlock("model.onnx", input_bounds=[(-2, 2), (-2, 2)])
    m.obj = pyo.Objective(expr=m.nn.outputs[0])

The network is read once into a :class:`Network`, its bounds are computed in numpy, the chosen
formulation is written as a :class:`MatrixModel`, and only then are Pyomo components created,
in one pass over the matrix rows.  Components are named after what they are:
``inputs[i]``, ``outputs[j]``, ``layer[l].z[j]``, ``layer[l].xh[j]``, ``layer[l].is_active[j]``,
``layer[l].affine[j]``, ``layer[l].relu_upper[j]`` ...

>>> import pyomo.environ as pyo
>>> from pyomo_nnrelax import NNBlock, Network
>>> m = pyo.ConcreteModel()
>>> m.nn = NNBlock(Network.mlp([2, 3, 1], seed=0), input_bounds=[(-1, 1), (-1, 1)])
>>> print(m.nn.summary())
NNBlock: bigm, bounds: interval, widths (2, 3, 1), 3 binaries, 12 variables, 13 constraints
layer neurons unstable active inactive     mean M      max M
    0       3        3      0        0      2.376      3.311
    1       1        0      0        0          0          0
>>> m.obj = pyo.Objective(expr=m.nn.outputs[0])
>>> _ = pyo.SolverFactory("highs").solve(m)
>>> round(pyo.value(m.obj), 6), m.nn.check().max_abs_error < 1e-6
(-3.478096, True)
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import pyomo.environ as pyo
from pyomo.core.base.block import ScalarBlock
from pyomo.core.base.var import VarData
from pyomo.core.expr.numeric_expr import LinearExpression

from .bounds import NetworkBounds, interval_bounds, layer_statistics
from .box import InputBox, resolve_box, within_variable_bounds
from .errors import InputBoundsError, NNRelaxError, StaleBoundsError
from .formulations import Formulation, network_model, start_values
from .formulations.bigm import BIGM
from .formulations.matrix_model import MatrixModel
from .formulations.partition import partition_formulation
from .lp.tightening import tighten_bounds
from .network import Network
from .onnx import read_onnx, read_stored_bounds, run_onnxruntime, write_onnx
from .options import BOUND_METHODS, FORMULATIONS, BoundMethod, FormulationName, check_option


def load_network(source: Any) -> tuple[Network, onnx.ModelProto | str | None]:
    """A :class:`Network` from a path, ``onnx.ModelProto`` or Network, plus the ONNX source."""
    if isinstance(source, Network):
        return source, None
    if isinstance(source, (str, os.PathLike, onnx.ModelProto)):
        return read_onnx(source), source
    raise TypeError(
        f"NNBlock needs an ONNX path, an onnx.ModelProto or a Network, got {type(source).__name__}"
    )


def resolve_formulation(name: FormulationName, partitions: int, split: str) -> Formulation:
    """The :class:`Formulation` called ``name`` with its options."""
    check_option("formulation", name, FORMULATIONS)
    return BIGM if name == "bigm" else partition_formulation(partitions, split)


def resolve_bounds(
    network: Network,
    box: InputBox,
    bounds: BoundMethod | NetworkBounds | None,
    onnx_source,
    time_limit: float | None,
    executor,
    workers: int | None = None,
) -> NetworkBounds:
    """The pre-activation bounds over ``box`` that ``NNBlock(bounds=...)`` asks for.

    A method name computes them (``"stored"`` reads them from the ONNX metadata); ``None``
    uses the stored bounds when they were computed over the same box, else interval bounds;
    a :class:`NetworkBounds` is used as given, after checking its box.  Stored bounds whose
    weight fingerprint is missing or differs from the file's weights are never used:
    ``"stored"`` raises :class:`StaleBoundsError`, ``None`` warns and uses interval bounds.
    """
    if isinstance(bounds, NetworkBounds):
        if bounds.input_box != box:
            raise InputBoundsError(
                "the NetworkBounds given were computed over a different input box"
            )
        return bounds
    if bounds not in (None, *BOUND_METHODS):
        raise ValueError(
            f"bounds must be one of {BOUND_METHODS} or a NetworkBounds, got {bounds!r}"
        )
    if bounds in (None, "stored"):
        try:
            stored = read_stored_bounds(onnx_source, network) if onnx_source is not None else None
        except StaleBoundsError as exc:
            if bounds == "stored":
                raise StaleBoundsError(f"bounds='stored' cannot be used: {exc}") from None
            warnings.warn(f"{exc}; using interval bounds instead", UserWarning, stacklevel=3)
            return interval_bounds(network, box)
        if stored is not None and stored.input_box == box:
            return stored
        if bounds == "stored":
            raise InputBoundsError(
                "bounds='stored' but the ONNX model has no stored bounds over this input box"
            )
        return interval_bounds(network, box)
    if bounds == "interval":
        return interval_bounds(network, box)
    return tighten_bounds(
        network,
        None,
        bounds,
        input_bounds=box,
        time_limit=time_limit,
        executor=executor,
        workers=workers,
    )


class NNBlock(ScalarBlock):
    """A ReLU network as a Pyomo block: ``m.nn = NNBlock("model.onnx", input_bounds=...)``.

    Parameters
    ----------
    source : str, PathLike, onnx.ModelProto or Network
        The network.
    input_bounds : list of (lo, hi) pairs, or InputBox, optional
        The input box over the flattened input: one ``(lo, hi)`` pair per input, or
        ``InputBox(lower=..., upper=...)``.  Default: the box stored in the ONNX metadata.
    formulation : {"bigm", "partition"}
        How each unstable ReLU is formulated.
    relax : bool
        Build the LP relaxation (binaries become continuous in [0, 1]).
    bounds : {"interval", "lp", "milp", "stored"} or NetworkBounds, optional
        Pre-activation bounds: interval propagation, LP- or MILP-based tightening, or the
        bounds stored in the ONNX metadata.  Default: stored ones if they match the box,
        else interval.  Stored bounds are only used beside the weights they were computed
        from (a fingerprint stored with them must match the file's weights).
    partitions, split : int, str
        Options of the partition formulation (number of partitions, splitting strategy).
    bound_time_limit : float, optional
        Time limit per bound-tightening solve, seconds.
    executor : concurrent.futures.Executor, optional
        Where bound-tightening solves run (default: in this process).
    workers : int, optional
        Instead of ``executor``: bound-tightening MILPs on a pool of this many spawned
        processes (-1: one per CPU); see :func:`~pyomo_nnrelax.lp.tightening.tighten_bounds`.
    inputs, outputs : Pyomo Var, VarData or sequence of VarData, optional
        Variables the model already has, used as the network's inputs (outputs) with no copy
        variables and no linking rows: an indexed Var in the order of its index set, a scalar
        Var, or a list; binaries included.  ``m.nn.inputs[i]`` (``outputs[j]``) then refers
        to them.  The input box is ``input_bounds`` (else the stored box) intersected with
        the variables' own bounds, and either alone suffices; where the box is tighter than
        a variable's bounds, a row ``input_box[i]`` keeps the variable inside it.  The
        variables' bounds and domains are never changed.

    Every variable of the block starts with the value of a forward pass at the centre of the
    input box (as ``warm_start(center)`` sets them), so no variable is None before a solve;
    the model's own ``inputs=``/``outputs=`` variables keep the values they had.
    """

    def __init__(
        self,
        source: Any,
        input_bounds=None,
        formulation: FormulationName = "bigm",
        relax: bool = False,
        bounds: BoundMethod | NetworkBounds | None = None,
        partitions: int = 2,
        split: str = "equal_size",
        bound_time_limit: float | None = None,
        executor=None,
        workers: int | None = None,
        inputs=None,
        outputs=None,
        **kwargs,
    ) -> None:
        network, onnx_source = load_network(source)
        self._input_vars = _variables(inputs, network.n_inputs, "inputs")
        self._output_vars = _variables(outputs, network.n_outputs, "outputs")
        box = _block_box(input_bounds, network, self._input_vars)
        form = resolve_formulation(formulation, partitions, split)
        net_bounds = resolve_bounds(
            network, box, bounds, onnx_source, bound_time_limit, executor, workers
        )
        self._network = network.with_input_bounds(*box)
        self._onnx_source = onnx_source
        self._bounds = net_bounds
        self._formulation = form
        self._relax = bool(relax)
        self._matrix = network_model(network, net_bounds, form, relax=relax)
        kwargs.setdefault("rule", _build_components)
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ inspection
    @property
    def network(self) -> Network:
        """The embedded network (with the block's input box)."""
        return self._network

    @property
    def bounds(self) -> NetworkBounds:
        """The pre-activation bounds the formulation uses."""
        return self._bounds

    @property
    def matrix_model(self) -> MatrixModel:
        """The formulation in matrix form (what the Pyomo components were built from)."""
        return self._matrix

    def layer_stats(self) -> list[dict[str, float]]:
        """Per layer: neurons, unstable / stable-active / stable-inactive counts, big-M stats."""
        return layer_statistics(self._network, self._bounds)

    def summary(self) -> str:
        """A table of binaries, neuron stability and big-M constants per layer."""
        rows = self.layer_stats()
        head = (
            f"NNBlock: {self._formulation.name}{' (LP relaxation)' if self._relax else ''}, "
            f"bounds: {self._bounds.method}, widths {self._network.widths}, "
            f"{int(self._matrix.integer.sum())} binaries, {self._matrix.n_cols} variables, "
            f"{self._matrix.n_rows} constraints"
        )
        lines = [
            head,
            f"{'layer':>5} {'neurons':>7} {'unstable':>8} {'active':>6} {'inactive':>8} "
            f"{'mean M':>10} {'max M':>10}",
        ]
        for r in rows:
            lines.append(
                f"{r['layer']:>5} {r['neurons']:>7} {r['unstable']:>8} {r['stable_active']:>6} "
                f"{r['stable_inactive']:>8} {r['mean_big_m']:>10.4g} {r['max_big_m']:>10.4g}"
            )
        return "\n".join(lines)

    def input_values(self) -> np.ndarray:
        """Current values of the input variables (e.g. after a solve)."""
        return _values(self.inputs, self._network.n_inputs, "inputs")

    def output_values(self) -> np.ndarray:
        """Current values of the output variables."""
        return _values(self.outputs, self._network.n_outputs, "outputs")

    def check(self) -> CheckResult:
        """Compare the block's output values with onnxruntime at the block's input values."""
        x = self.input_values()
        source = self._onnx_source
        if source is None:
            source = write_onnx(self._network, dtype="float64")
        reference = run_onnxruntime(source, x.reshape(1, -1))[0]
        return CheckResult(x, self.output_values(), reference)

    # ------------------------------------------------------------------ starts
    def warm_start(self, x=None, samples: int = 256, seed: int = 0) -> np.ndarray:
        """Set every variable of the block from one forward pass, and return the point used.

        With ``x`` given, the forward pass is at ``x``.  Without it, ``samples`` points of the
        input box (plus its centre) are tried and the one with the best value of the model's
        single active objective is used; if that objective cannot be evaluated from the
        block's inputs and outputs alone, the centre of the box is used.  Inputs that are
        integer variables of the model (``inputs=m.y`` with ``y`` binary) are sampled at
        integer points, the centre rounded.
        """
        if x is None:
            x = self._best_sample(samples, seed)
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.size != self._network.n_inputs:
            raise InputBoundsError(
                f"warm_start: x has {x.size} entries, the network takes {self._network.n_inputs}"
            )
        values = start_values(self._network, self._bounds, self._formulation, x)
        for (name, layer), vals in values.items():
            component = _group_component(self, name, layer)
            group = self._matrix.var_groups[(name, layer)]
            for label, v in zip(group.index.tolist(), vals.tolist()):
                component[label].set_value(v, skip_validation=True)
        return x

    def _best_sample(self, samples: int, seed: int) -> np.ndarray:
        lo, hi = self._bounds.input_lower, self._bounds.input_upper
        rng = np.random.default_rng(seed)
        X = np.vstack([(lo + hi) / 2, lo + (hi - lo) * rng.random((samples, lo.size))])
        X = self._integral(X, lo, hi)
        objectives = list(self.model().component_data_objects(pyo.Objective, active=True))
        if len(objectives) != 1:
            return X[0]
        objective = objectives[0]
        Y = self._network.forward(X)
        saved = [(v, v.value) for v in (*self.inputs.values(), *self.outputs.values())]
        scores = []
        try:
            for x, y in zip(X, Y):
                for i, v in enumerate(x):
                    self.inputs[i].set_value(float(v), skip_validation=True)
                for j, v in enumerate(y):
                    self.outputs[j].set_value(float(v), skip_validation=True)
                scores.append(pyo.value(objective.expr, exception=False))
        finally:
            for var, value in saved:
                var.set_value(value, skip_validation=True)
        if any(s is None for s in scores):
            return X[0]
        scores = np.asarray(scores, dtype=float)
        best = np.argmin(scores) if objective.sense == pyo.minimize else np.argmax(scores)
        return X[best]

    def _integral(self, X: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """``X`` with the columns of integer input variables (``inputs=`` binaries, say)
        rounded into their box, so that sampled starts satisfy their domains."""
        if self._input_vars is None:
            return X
        integer = [i for i, v in enumerate(self._input_vars) if v.is_integer()]
        if integer:
            X[:, integer] = np.clip(
                np.floor(X[:, integer] + 0.5), np.ceil(lo[integer]), np.floor(hi[integer])
            )
        return X


@dataclass(frozen=True)
class CheckResult:
    """The block's outputs against onnxruntime at the block's inputs."""

    inputs: np.ndarray
    block_outputs: np.ndarray
    onnx_outputs: np.ndarray

    @property
    def max_abs_error(self) -> float:
        return float(np.max(np.abs(self.block_outputs - self.onnx_outputs)))

    def __str__(self) -> str:
        return (
            f"inputs {np.array2string(self.inputs, precision=6)}: block outputs "
            f"{np.array2string(self.block_outputs, precision=8)}, onnxruntime "
            f"{np.array2string(self.onnx_outputs, precision=8)}, max |difference| "
            f"{self.max_abs_error:.3g}"
        )


# ---------------------------------------------------------------------- user variables
def _variables(value, n: int, argument: str) -> list | None:
    """The ``n`` Pyomo variables of ``inputs=``/``outputs=``, in order (None: not given)."""
    if value is None:
        return None
    if isinstance(value, pyo.Var) and value.is_indexed():
        found = list(value.values())
    elif isinstance(value, VarData):
        found = [value]
    elif isinstance(value, (list, tuple)):
        found = list(value)
    else:
        raise TypeError(
            f"{argument}= takes a Pyomo Var, one of its elements, or a list of them; "
            f"got {type(value).__name__}"
        )
    not_vars = [i for i, v in enumerate(found) if not isinstance(v, VarData)]
    if not_vars:
        i = not_vars[0]
        raise TypeError(
            f"{argument}= must hold Pyomo variables; entry {i} is {type(found[i]).__name__}"
        )
    if len(found) != n:
        raise ValueError(
            f"{argument}= holds {len(found)} variables; the network has {n} {argument}"
        )
    return found


def _block_box(input_bounds, network: Network, variables: list | None) -> InputBox:
    """The block's input box: ``resolve_box``'s rule, intersected with the input variables'
    own bounds when the inputs are the user's variables."""
    if variables is None:
        return resolve_box(input_bounds, network)
    has_box = input_bounds is not None or network.input_bounds is not None
    return within_variable_bounds(
        resolve_box(input_bounds, network) if has_box else None,
        [v.lb for v in variables],
        [v.ub for v in variables],
        [v.name for v in variables],
    )


def _link_user_variables(block: NNBlock, name: str, variables: list, column_vars: list) -> None:
    """``block.<name>`` as a Reference to the user's variables, which stand for the group's
    columns; inputs get ``input_box`` rows where the box is tighter than their bounds."""
    setattr(block, name, pyo.Reference(dict(enumerate(variables))))
    group = block._matrix.var_groups[(name, None)]
    column_vars[group.start : group.start + len(variables)] = variables
    if name != "inputs":
        return
    lo, hi = block._bounds.input_lower.tolist(), block._bounds.input_upper.tolist()
    looser = [
        i
        for i, v in enumerate(variables)
        if v.lb is None or v.lb < lo[i] or v.ub is None or v.ub > hi[i]
    ]
    if looser:
        block.input_box = pyo.Constraint(looser, rule=lambda b, i: (lo[i], variables[i], hi[i]))


# ---------------------------------------------------------------------- pure helpers
def _values(component, n: int, name: str) -> np.ndarray:
    values = [component[i].value for i in range(n)]
    missing = [i for i, v in enumerate(values) if v is None]
    if missing:
        raise NNRelaxError(f"{name} {missing} have no value: solve the model (or warm_start) first")
    return np.asarray(values, dtype=np.float64)


def _group_component(block: NNBlock, name: str, layer: int | None):
    return getattr(block if layer is None else block.layer[layer], name)


def _build_components(block: NNBlock) -> None:
    """Create Vars and Constraints from the block's MatrixModel (the Block rule)."""
    model = block._matrix
    block.layer = pyo.Block(range(len(block._network.layers)))
    column_vars: list[Any] = [None] * model.n_cols
    user_variables = {"inputs": block._input_vars, "outputs": block._output_vars}
    for (name, layer), group in model.var_groups.items():
        if layer is None and user_variables.get(name) is not None:
            _link_user_variables(block, name, user_variables[name], column_vars)
            continue
        labels = group.index.tolist()
        pos = group.positions
        lower, upper = model.col_lower[pos].tolist(), model.col_upper[pos].tolist()
        bounds = {lab: (lo, hi) for lab, lo, hi in zip(labels, lower, upper)}
        domain = pyo.Binary if model.integer[pos].any() else pyo.Reals
        var = pyo.Var(labels, domain=domain, bounds=bounds, dense=True)
        setattr(block if layer is None else block.layer[layer], name, var)
        column_vars[group.start : group.start + len(labels)] = [var[lab] for lab in labels]
    for (name, layer), group in model.row_groups.items():
        cons = pyo.Constraint(group.index.tolist(), rule=_row_rule(model, group, column_vars))
        setattr(block if layer is None else block.layer[layer], name, cons)
    if block._formulation.name.startswith("partition"):
        _add_inactive_alias(block)
    # every variable has a value from the start (a forward pass at the box centre), so that
    # value() before a solve and solvers that read warm starts never meet None
    kept = [(v, v.value) for v in (*(block._input_vars or ()), *(block._output_vars or ()))]
    block.warm_start(block._bounds.input_box.center)
    for var, value in kept:  # the user's own variables keep their values
        var.set_value(value, skip_validation=True)


def _add_inactive_alias(block: NNBlock) -> None:
    """``layer[l].inactive[j] = 1 - is_active[j]``: the partition binary under its 0.1 name
    and sense (sigma = 1 meaning inactive), as an expression; deprecated."""
    for l in block.layer:
        sub = block.layer[l]
        if hasattr(sub, "is_active"):
            sub.inactive = pyo.Expression(
                list(sub.is_active.keys()), rule=lambda b, j: 1 - b.is_active[j]
            )


def _row_rule(model: MatrixModel, group, column_vars: list):
    """A Constraint rule giving each labelled row as a LinearExpression with its bounds."""
    rows = dict(zip(group.index.tolist(), group.positions.tolist()))

    def rule(_block, label):
        i = rows[label]
        cols, coefs = model.row(i)
        expr = LinearExpression(
            constant=0.0,
            linear_coefs=coefs.tolist(),
            linear_vars=[column_vars[c] for c in cols.tolist()],
        )
        lo, hi = float(model.row_lower[i]), float(model.row_upper[i])
        if lo == hi:
            return expr == lo
        return (None if lo == -np.inf else lo, expr, None if hi == np.inf else hi)

    return rule
