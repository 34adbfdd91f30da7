"""``NNBlock``: a ReLU network embedded in a Pyomo model as an ordinary block.

    m.nn = NNBlock("model.onnx", input_bounds=[(-2, 2), (-2, 2)])
    m.obj = pyo.Objective(expr=m.nn.outputs[0])

The network is read once into a :class:`Network`, its bounds are computed in numpy (for every
copy at once when the block holds many, :mod:`.copies`), the chosen formulation is written as
one :class:`MatrixModel` per copy, and only then are Pyomo components created, in one pass
over the matrix rows (:mod:`.components`).  Components are named after what they are:
``inputs[i]``, ``outputs[j]``, ``layer[l].z[j]``, ``layer[l].xh[j]``,
``layer[l].is_active[j]``, ``layer[l].affine[j]``, ``layer[l].relu_upper[j]`` ...

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

import inspect
import sys
import warnings
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyomo.environ as pyo
from pyomo.core.base.block import BlockData, ScalarBlock

from .block_arguments import (
    check_arguments,
    copy_bounds,
    load_network,
    resolve_formulation,
)
from .bounds import NetworkBounds, big_m_summary, layer_statistics
from .box import InputBox, resolve_box, within_variable_bounds
from .components import add_components, index_of
from .copies import matching_outputs, read_variables
from .errors import InputBoundsError, NNRelaxError
from .formulations import Formulation, network_model, start_values
from .formulations.matrix_model import MatrixModel
from .network import Network
from .onnx import run_onnxruntime, write_onnx
from .options import BoundMethod, FormulationName
from .solve import MODERATE, CheckResult, output_tolerance, rescaled, scale_warning
from .starts import FEASIBILITY, best_sample, evaluable_constraints, relaxation_inputs


@dataclass(frozen=True)
class CopyModel:
    """One copy of the network in a block: its box and bounds, and the formulation built
    over them (``network`` and ``model_bounds`` rescaled by ``scale``, :func:`~.solve.rescaled`)."""

    box: InputBox
    bounds: NetworkBounds
    network: Network
    model_bounds: NetworkBounds
    scale: tuple[np.ndarray, ...]
    matrix: MatrixModel

    @classmethod
    def build(
        cls, network: Network, bounds: NetworkBounds, form: Formulation, relax: bool, band: float
    ) -> CopyModel:
        model_network, model_bounds, scale = rescaled(network, bounds, band)
        matrix = network_model(model_network, model_bounds, form, relax=relax)
        return cls(bounds.input_box, bounds, model_network, model_bounds, scale, matrix)

    @property
    def largest_constant(self) -> float:
        return float(np.max(np.abs(self.matrix.data), initial=0.0))


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
    partitions, split : int, str, optional
        Options of the partition formulation only (number of partitions, default 2;
        splitting strategy, default ``"equal_size"``).
    bound_time_limit : float, optional
        Time limit per bound-tightening solve, seconds (``bounds="lp"`` or ``"milp"`` only,
        as are ``executor`` and ``workers``).
    executor : concurrent.futures.Executor, optional
        Where bound-tightening solves run (default: in this process).
    workers : int, optional
        Instead of ``executor``: bound-tightening MILPs on a pool of this many spawned
        processes (-1: one per CPU); see :func:`~pyomo_nnrelax.lp.tightening.tighten_bounds`.
    inputs, outputs : Pyomo Var, VarData, sequence of VarData, or rows of them, optional
        Variables the model already has, used as the network's inputs (outputs) with no copy
        variables and no linking rows: an indexed Var in the order of its index set, a scalar
        Var, or a list; binaries included.  ``m.nn.inputs[i]`` (``outputs[j]``) then refers
        to them.  The input box is ``input_bounds`` (else the stored box) intersected with
        the variables' own bounds, and either alone suffices; where the box is tighter than
        a variable's bounds, a row ``input_box[i]`` keeps the variable inside it.  The
        variables' bounds and domains are never changed.

        Many copies of the network in one block (a plan's periods, a program's scenarios):
        a Var indexed by two sets, copies first and inputs last (``m.x[t, i]``), a list of
        rows of variables, a 2-D array of them or a DataFrame (:mod:`~pyomo_nnrelax.copies`).
        Every component is then indexed by the copy first: ``m.nn.outputs[t, j]``,
        ``m.nn.layer[l].z[t, j]``.  Each copy has its own box (its variables' bounds within
        ``input_bounds``) and bounds, computed for all copies at once; the network is read
        once.
    rescale : bool
        Divide each hidden neuron whose bounds reach beyond [2^-10, 2^10] by a power of two
        near their size, and multiply its outgoing weights by it: the same function (ReLU is
        positively homogeneous) with moderate big-M constants (:func:`~.solve.rescaled`);
        ``layer[l].z[j]`` and ``xh[j]`` then hold the neuron's value over ``scale[l][j]``.

    Unknown keywords, and options the formulation or bounds would ignore, raise before anything
    is built; constants too large for the solver's tolerances warn.  The block is built when
    it is made, so it can be attached anywhere (``m.nn = ...``, ``add_component``, inside a
    Block rule as ``b.nn = NNBlock(...)``); a Block rule that *returns* an NNBlock raises, as
    Pyomo would copy its components into a plain block and lose the network.  Every variable
    starts at a forward pass at the box's centre (``warm_start(center)``), so none is None
    before a solve; the model's own ``inputs=``/``outputs=`` variables keep the values they
    had.
    """

    def __init__(
        self,
        source: Any,
        input_bounds=None,
        formulation: FormulationName = "bigm",
        relax: bool = False,
        bounds: BoundMethod | NetworkBounds | None = None,
        partitions: int | None = None,
        split: str | None = None,
        bound_time_limit: float | None = None,
        executor=None,
        workers: int | None = None,
        inputs=None,
        outputs=None,
        rescale: bool = True,
        **kwargs,
    ) -> None:
        tightening = dict(bound_time_limit=bound_time_limit, executor=executor, workers=workers)
        check_arguments(
            kwargs, _KEYWORDS, formulation, bounds, dict(partitions=partitions, split=split),
            tightening,
        )  # fmt: skip
        network, onnx_source = load_network(source)
        self._inputs = read_variables(inputs, network.n_inputs, "inputs")
        self._outputs = read_variables(outputs, network.n_outputs, "outputs")
        matching_outputs(self._inputs, self._outputs)
        self._labels = self._inputs.labels if self._inputs is not None else None
        rows = self._inputs.rows if self._inputs is not None else [None]
        boxes = [_block_box(input_bounds, network, row) for row in rows]
        form = resolve_formulation(formulation, partitions, split)
        band = MODERATE if rescale else np.inf
        self._copies = [
            CopyModel.build(network, b, form, relax, band)
            for b in copy_bounds(
                network, boxes, bounds, onnx_source, bound_time_limit, executor, workers
            )
        ]
        hull = (np.min([b.lower for b in boxes], axis=0), np.max([b.upper for b in boxes], axis=0))
        self._network = network.with_input_bounds(*hull)
        self._onnx_source = onnx_source
        self._formulation = form
        self._relax = bool(relax)
        samples = self._network.forward(InputBox(*hull).sample(64, np.random.default_rng(0)))
        if note := scale_warning(self.largest_constant, samples):
            warnings.warn(note, UserWarning, stacklevel=2)
        super().__init__(**kwargs)
        self.construct()  # built now: attached anywhere, it is complete (see the class doc)
        user = {"inputs": self._inputs, "outputs": self._outputs}
        n_layers = len(network.layers)
        add_components(self, [c.matrix for c in self._copies], self._labels, n_layers, user, boxes)
        if form.name.startswith("partition"):
            _add_inactive_alias(self)
        # every variable has a value from the start (a forward pass at each box's centre), so
        # that value() before a solve and solvers that read warm starts never meet None
        mine = [
            v for c in (self._inputs, self._outputs) if c is not None for r in c.rows for v in r
        ]
        kept = [(v, v.value) for v in mine]
        self.warm_start(np.array([c.box.center for c in self._copies]).reshape(self._shape))
        for var, value in kept:  # the user's own variables keep their values
            var.set_value(value, skip_validation=True)

    def del_component(self, name_or_object) -> None:
        """Pyomo's ``del_component``; raises when a Block rule returned this block, as Pyomo
        would move its components into a plain block and lose the network's methods."""
        caller = sys._getframe(1)
        if caller.f_code is BlockData.transfer_attributes_from.__code__:
            target = caller.f_locals.get("self")
            where = getattr(target, "name", "a Block")
            raise TypeError(
                f"a Block rule returned an NNBlock for {where}: Pyomo would copy its components "
                "into a plain block and lose the network (no check(), no summary()). Assign it "
                "inside the rule instead, def rule(b, t): b.nn = NNBlock(...), or make one block "
                "of all the copies: NNBlock(network, inputs=m.x) with m.x indexed by (copy, input)"
            )
        super().del_component(name_or_object)

    # ------------------------------------------------------------------ inspection
    @property
    def network(self) -> Network:
        """The embedded network (with the block's input box; with many copies, the hull of
        their boxes)."""
        return self._network

    @property
    def copies(self) -> int:
        """How many copies of the network the block holds (1 unless ``inputs=`` held rows)."""
        return len(self._copies)

    @property
    def bounds(self) -> NetworkBounds:
        """The network's pre-activation bounds (the MILP's are these divided by ``scale``);
        a block of many copies has one set per copy: :meth:`copy_bounds`."""
        return self._one().bounds

    @property
    def scale(self) -> tuple[np.ndarray, ...]:
        """Per layer, what each neuron's variables are divided by in the MILP (``rescale``)."""
        return self._one().scale

    @property
    def matrix_model(self) -> MatrixModel:
        """The formulation in matrix form (what the Pyomo components were built from)."""
        return self._one().matrix

    @property
    def largest_constant(self) -> float:
        """The largest coefficient of the MILP's rows: its big-M constants and weights."""
        return max(c.largest_constant for c in self._copies)

    def copy_names(self) -> list[str]:
        """Each copy's name in messages: the block's name, or ``name[label]`` per copy."""
        if self._labels is None:
            return [self.name]
        return [f"{self.name}[{_text(label)}]" for label in self._labels]

    def copy_boxes(self) -> list[InputBox]:
        """Each copy's input box."""
        return [c.box for c in self._copies]

    def copy_bounds(self) -> list[NetworkBounds]:
        """Each copy's pre-activation bounds (unscaled)."""
        return [c.bounds for c in self._copies]

    def layer_stats(self, copy: int | None = None) -> list[dict[str, float]]:
        """Per layer: neurons, unstable / stable counts, the MILP's big-M constants; of one
        copy, or summed over all copies (``copy=None``)."""
        chosen = self._copies if copy is None else [self._copies[copy]]
        per_copy = [layer_statistics(c.network, c.model_bounds) for c in chosen]
        return [_summed(rows) for rows in zip(*per_copy)]

    def summary(self, copy: int | None = None) -> str:
        """A table of binaries, neuron stability and big-M constants per layer, of one copy
        or of all (with the spread of unstable neurons over the copies)."""
        chosen = self._copies if copy is None else [self._copies[copy]]
        moved = sum(int(np.count_nonzero(s != 1.0)) for c in chosen for s in c.scale)
        what = "" if len(chosen) == 1 else f"{len(chosen)} copies, "
        head = (
            f"NNBlock: {self._formulation.name}{' (LP relaxation)' if self._relax else ''}, "
            f"bounds: {chosen[0].bounds.method}, widths {self._network.widths}, {what}"
            f"{sum(int(c.matrix.integer.sum()) for c in chosen)} binaries, "
            f"{sum(c.matrix.n_cols for c in chosen)} variables, "
            f"{sum(c.matrix.n_rows for c in chosen)} constraints"
            f"{f', {moved} neurons rescaled' if moved else ''}"
        )
        lines = [head]
        if len(chosen) > 1:
            unstable = [sum(r["unstable"] for r in self.layer_stats(i)) for i in range(len(chosen))]
            lines.append(
                f"unstable neurons per copy: min {min(unstable)}, median "
                f"{float(np.median(unstable)):g}, max {max(unstable)}"
            )
        lines.append(
            f"{'layer':>5} {'neurons':>7} {'unstable':>8} {'active':>6} {'inactive':>8} "
            f"{'mean M':>10} {'max M':>10}"
        )
        for r in self.layer_stats(copy):
            lines.append(
                f"{r['layer']:>5} {r['neurons']:>7} {r['unstable']:>8} {r['stable_active']:>6} "
                f"{r['stable_inactive']:>8} {r['mean_big_m']:>10.4g} {r['max_big_m']:>10.4g}"
            )
        return "\n".join(lines)

    def input_values(self) -> np.ndarray:
        """Current values of the input variables (e.g. after a solve): (n_inputs,), or
        (copies, n_inputs) for a block of many copies."""
        return self._values(self.inputs, self._network.n_inputs, "inputs")

    def output_values(self) -> np.ndarray:
        """Current values of the output variables: (n_outputs,), or (copies, n_outputs)."""
        return self._values(self.outputs, self._network.n_outputs, "outputs")

    def check(self, copy: int | None = None) -> CheckResult:
        """The block's output values against onnxruntime at its input values, and whether they
        agree within the solver's tolerances (:func:`~.solve.output_tolerance`): ``passed``.
        With many copies, all of them at once (arrays of one row per copy), or one."""
        X = np.atleast_2d(self.input_values())
        Y = np.atleast_2d(self.output_values())
        chosen = range(len(self._copies)) if copy is None else [copy]
        X, Y = X[list(chosen)], Y[list(chosen)]
        source = self._onnx_source or write_onnx(self._network, dtype="float64", graph="dense")
        reference = run_onnxruntime(source, X.reshape(len(X), *self._network.input_shape))
        reference = np.asarray(reference).reshape(len(X), -1)
        tolerance = np.array(
            [output_tolerance(self._copies[c].network, self._copies[c].model_bounds, x)
             for c, x in zip(chosen, X)]
        )  # fmt: skip
        if self._labels is None or copy is not None:
            X, Y, reference, tolerance = X[0], Y[0], reference[0], tolerance[0]
        return CheckResult(X, Y, reference, tolerance, self.largest_constant)

    def check_solution(self) -> CheckResult | None:
        """What ``solve_model`` checks after a solve: :meth:`check` (None if relaxed)."""
        return None if self._relax else self.check()

    # ------------------------------------------------------------------ starts
    def warm_start(self, x=None, samples: int = 256, seed: int = 0) -> np.ndarray:
        """Set every variable of the block from one forward pass per copy, and return the
        inputs used ((n_inputs,), or (copies, n_inputs)).

        With ``x`` given, the forward pass is at ``x``, which must lie in each copy's box.
        Without it, a start that respects the model: for one copy, of ``samples`` points of
        its box (plus its centre) the one with the best value of the model's objective among
        those that satisfy the model's constraints on the block's inputs and outputs; for many
        copies (or when no sample satisfies them), the inputs of the model's LP relaxation;
        the box's centre when neither exists.  Inputs that are integer variables of the
        model (``inputs=m.y`` with ``y`` binary) are sampled at integer points.
        """
        X = self._start(samples, seed) if x is None else self._given(x)
        for c, (copy, row) in enumerate(zip(self._copies, X)):
            values = start_values(copy.network, copy.model_bounds, self._formulation, row)
            for (name, layer), vals in values.items():
                component = getattr(self if layer is None else self.layer[layer], name)
                group = copy.matrix.var_groups[(name, layer)]
                for j, v in zip(group.index.tolist(), vals.tolist()):
                    component[index_of(self._labels, c, j)].set_value(v, skip_validation=True)
        return X.reshape(self._shape)

    def _given(self, x) -> np.ndarray:
        """``x`` as one row per copy, after checking its size and that each row lies in its
        copy's box (within the solver's feasibility tolerance)."""
        X = np.asarray(x, dtype=np.float64)
        if X.size != len(self._copies) * self._network.n_inputs:
            raise InputBoundsError(
                f"warm_start: x has {X.size} entries, the network takes {self._network.n_inputs}"
                + ("" if self._labels is None else f" per copy, for {len(self._copies)} copies")
            )
        X = X.reshape(len(self._copies), -1)
        for name, copy, row in zip(self.copy_names(), self._copies, X):
            low, high = copy.box.lower - FEASIBILITY, copy.box.upper + FEASIBILITY
            outside = np.flatnonzero((row < low) | (row > high) | np.isnan(row))
            if outside.size:
                i = int(outside[0])
                raise InputBoundsError(
                    f"warm_start: input {i} of {name} is {row[i]:g}, outside its box "
                    f"[{copy.box.lower[i]:g}, {copy.box.upper[i]:g}]"
                )
        return X

    def _start(self, samples: int, seed: int) -> np.ndarray:
        """The inputs :meth:`warm_start` uses without ``x`` (see there)."""
        centres = np.array([c.box.center for c in self._copies])
        if len(self._copies) == 1:
            X = self._samples(samples, seed)
            variables = [*self.inputs.values(), *self.outputs.values()]
            best = best_sample(
                list(self.inputs.values()), list(self.outputs.values()), X,
                self._network.forward(X), evaluable_constraints(self, variables),
            )  # fmt: skip
            if best is not None:
                return X[best][None]
        keys = [index_of(self._labels, c, i) for c in range(len(self._copies))
                for i in range(self._network.n_inputs)]  # fmt: skip
        found = relaxation_inputs(self, keys)
        if found is None:
            return centres
        found = found.reshape(len(self._copies), -1)
        lower = np.array([c.box.lower for c in self._copies])
        upper = np.array([c.box.upper for c in self._copies])
        return self._integral(np.clip(found, lower, upper), 0)

    def _samples(self, samples: int, seed: int) -> np.ndarray:
        """The box's centre and ``samples`` points of it (integral for integer variables)."""
        box = self._copies[0].box
        X = np.vstack([box.center, box.sample(samples, np.random.default_rng(seed))])
        return self._integral(X, 0)

    def _integral(self, X: np.ndarray, copy: int) -> np.ndarray:
        """``X`` with the columns of integer input variables (``inputs=`` binaries, say)
        rounded into their box, so that sampled starts satisfy their domains."""
        if self._inputs is None:
            return X
        for c, row in enumerate(self._inputs.rows):
            integer = [i for i, v in enumerate(row) if v.is_integer()]
            if not integer:
                continue
            lo, hi = self._copies[c].box.lower[integer], self._copies[c].box.upper[integer]
            rows = slice(None) if len(self._copies) == 1 else c
            X[rows, integer] = np.clip(np.floor(X[rows, integer] + 0.5), np.ceil(lo), np.floor(hi))
        return X

    # ------------------------------------------------------------------ helpers
    @property
    def _shape(self) -> tuple[int, ...]:
        n = self._network.n_inputs
        return (n,) if self._labels is None else (len(self._copies), n)

    def _one(self) -> CopyModel:
        if self._labels is not None:
            raise NNRelaxError(
                f"{self.name} holds {len(self._copies)} copies, each with its own bounds, "
                "scale and matrix: use copy_bounds(), or summary(copy) and layer_stats(copy)"
            )
        return self._copies[0]

    def _values(self, component, n: int, name: str) -> np.ndarray:
        keys = [index_of(self._labels, c, i) for c in range(len(self._copies)) for i in range(n)]
        values = [component[k].value for k in keys]
        missing = [k for k, v in zip(keys, values) if v is None]
        if missing:
            raise NNRelaxError(
                f"{name} {missing[:5]} have no value: solve the model (or warm_start) first"
            )
        array = np.asarray(values, dtype=np.float64)
        return array if self._labels is None else array.reshape(len(self._copies), n)


_KEYWORDS = [*inspect.signature(NNBlock.__init__).parameters][1:-1]


def _block_box(input_bounds, network: Network, variables: list | None) -> InputBox:
    """A copy's input box: ``resolve_box``'s rule, intersected with the input variables'
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


def _summed(rows: tuple[dict, ...]) -> dict:
    """One layer's :func:`layer_statistics` over several copies."""
    unstable, mean_big_m = big_m_summary(list(rows))
    total = {k: sum(r[k] for r in rows) for k in ("neurons", "relu_neurons", "stable_active",
                                                   "stable_inactive")}  # fmt: skip
    return {
        **rows[0], **total, "unstable": unstable, "mean_big_m": mean_big_m,
        "max_big_m": max(r["max_big_m"] for r in rows),
    }  # fmt: skip


def _text(label: Hashable) -> str:
    return ", ".join(map(str, label)) if isinstance(label, tuple) else str(label)


def _add_inactive_alias(block: NNBlock) -> None:
    """``layer[l].inactive[j] = 1 - is_active[j]``: the partition binary under its 0.1 name
    and sense (sigma = 1 meaning inactive), as an expression; deprecated."""
    for l in block.layer:
        sub = block.layer[l]
        if hasattr(sub, "is_active"):
            sub.inactive = pyo.Expression(
                list(sub.is_active.keys()),
                rule=lambda b, *j: 1 - b.is_active[j if len(j) > 1 else j[0]],
            )
