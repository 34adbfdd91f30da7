"""Robustness verification of a classifier: is every point of an L-infinity ball around an
input classified as the input's label?

For each input ``x`` with label ``t`` the question is the sign of the smallest margin
``min_j min_{x' in B(x, eps)} f_t(x') - f_j(x')`` over the ball ``B`` clipped to the input box.
Verification needs the sign, not the optimum, so the stages stop as soon as it is known
(MIPVerify's progression, Tjeng et al. 2019):

1. interval bounds over the ball: a margin whose lower bound is positive is proven;
2. the big-M LP relaxation over those bounds, margin by margin;
3. LP-tightened bounds, and the LP again;
4. the MILP of each margin still open, with a cut-off at 0 (a proof that the margin is
   positive ends it) and a target below 0 (a point that makes it negative ends it); a
   negative point is checked with onnxruntime before it counts as a counterexample.

Each input is *verified*, *falsified* (with a checked counterexample), *unknown* (the time
limit, or a counterexample onnxruntime does not confirm) or *misclassified* (its own
prediction is wrong, so it cannot count as robust).  The margins are the outputs of a
network with one more affine map, folded into the last layer when that layer is linear, so
the bounds are those of the margins themselves.  Everything runs on HiGHS directly, without
building Pyomo models.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

import numpy as np

from . import matrices
from .bounds import NetworkBounds, interval_bounds
from .box import InputBox, ball_ends, resolve_box
from .formulations.bigm import bigm_model
from .lp.highs import HighsModel
from .lp.tightening import tighten_bounds
from .network import Layer, Network
from .onnx import run_onnxruntime, write_onnx
from .progress import progress_bar

STATUSES = ("verified", "falsified", "unknown", "misclassified")

LP_CUTOFF = 1e-6
"""Objective bound of the LP stage: HiGHS's dual simplex stops once its (dual feasible)
objective proves the margin above this, which is all verification needs; the margin's proven
bound is then this value rather than the LP optimum."""

BOUND_REACHED = "Bound on objective reached"
"""HiGHS's status text when a solve stopped at its ``objective_bound``."""


TIGHTENING_CHUNKS = 4
"""Chunks each layer's tightening LPs are solved in: the stage checks the input's time
before each chunk (each chunk loads its layer's LP into HiGHS once)."""


class _OutOfTime(Exception):
    """An input's time ran out inside a stage."""


class _Deadline(Executor):
    """Runs the tightening's chunks of solves here, one after the other, and ends the stage
    (:class:`_OutOfTime`) when a chunk would start after the input's time is up."""

    def __init__(self, left: Callable[[], float]) -> None:
        self.left = left

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if self.left() <= 0.0:
            raise _OutOfTime
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def clipped_ball(x, eps: float, box: InputBox) -> InputBox:
    """The L-infinity ball of radius ``eps`` around ``x`` (flattened), clipped to ``box``.

    >>> clipped_ball([0.05, 0.5], 0.1, InputBox([0.0, 0.0], [1.0, 1.0]))
    InputBox(lower=[0.0, 0.4], upper=[0.15000000000000002, 0.6])
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    return InputBox(*ball_ends(x, eps, box.lower, box.upper))


def margin_network(network: Network, label: int) -> Network:
    """The network whose outputs are ``f_label - f_j`` for every other class ``j``.

    The difference is folded into the last layer when it is linear (its interval bounds are
    then those of the margins, not of two outputs apart), else appended as a linear layer.
    """
    n = network.n_outputs
    others = np.array([j for j in range(n) if j != label], dtype=np.int64)
    M = -np.eye(n)[others]
    M[:, label] += 1.0
    last = network.layers[-1]
    if last.kind == "linear":
        weight = matrices.choose_form(matrices.times(M, last.weight))  # M @ W
        layers = (*network.layers[:-1], Layer(weight, M @ last.bias, "linear"))
    else:
        layers = (*network.layers, Layer(M, np.zeros(others.size), "linear"))
    return Network(layers, input_shape=network.input_shape)


@dataclass(frozen=True)
class ImageResult:
    """How one input ended.

    ``status`` is one of :data:`STATUSES`; ``decided_by`` the stage that settled it
    ("prediction", "interval", "lp", "tightened lp", "milp", "time limit", "onnxruntime");
    ``margin_bound`` a proven lower bound on the smallest margin over the ball (positive
    when verified; NaN when none was proven); ``counterexample`` a point of the ball that
    onnxruntime classifies otherwise, with its onnxruntime margin (negative).
    """

    index: int
    label: int
    predicted: int
    status: str
    decided_by: str
    seconds: float
    unstable: int
    margin_bound: float
    counterexample: np.ndarray | None = None
    counterexample_margin: float | None = None

    def as_dict(self) -> dict:
        """A flat dict for tables and JSON (the counterexample as a list)."""
        row = {k: getattr(self, k) for k in self.__dataclass_fields__}
        ce = row.pop("counterexample")
        row["counterexample"] = None if ce is None else ce.tolist()
        row["margin_bound"] = None if math.isnan(self.margin_bound) else self.margin_bound
        return row


@dataclass(frozen=True)
class VerificationResult:
    """Every input's :class:`ImageResult`, and the summary Xiao et al. report."""

    eps: float
    images: list[ImageResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.images)

    def summary(self) -> dict:
        """Clean accuracy, provable (verified) accuracy, falsified and unknown shares, and
        median and 90th-percentile seconds per input (the block's build included)."""
        n = len(self.images)
        seconds = np.array([r.seconds for r in self.images]) if n else np.zeros(1)
        return {
            "images": n,
            "eps": self.eps,
            "clean_accuracy": (n - self.count("misclassified")) / n if n else math.nan,
            "verified": self.count("verified") / n if n else math.nan,
            "falsified": self.count("falsified") / n if n else math.nan,
            "unknown": self.count("unknown") / n if n else math.nan,
            "median_seconds": float(np.median(seconds)),
            "p90_seconds": float(np.percentile(seconds, 90)),
            "median_unstable": float(np.median([r.unstable for r in self.images] or [0])),
        }

    def table(self) -> str:
        """One line per input, then the summary."""
        lines = [
            f"{'image':>6}{'label':>6}{'pred':>5}  {'status':<14}{'by':<13}{'s':>8}"
            f"{'unstable':>9}{'margin >=':>11}"
        ]
        for r in self.images:
            bound = "" if math.isnan(r.margin_bound) else f"{r.margin_bound:.4g}"
            lines.append(
                f"{r.index:>6}{r.label:>6}{r.predicted:>5}  {r.status:<14}"
                f"{r.decided_by:<13}{r.seconds:>8.3f}{r.unstable:>9}{bound:>11}"
            )
        s = self.summary()
        lines.append(
            f"{s['images']} images, eps {s['eps']:g}: clean accuracy {s['clean_accuracy']:.3f}, "
            f"verified {s['verified']:.3f}, falsified {s['falsified']:.3f}, unknown "
            f"{s['unknown']:.3f}; seconds per image median {s['median_seconds']:.3f}, "
            f"90th percentile {s['p90_seconds']:.3f}"
        )
        return "\n".join(lines)


def verify(
    source,
    X,
    labels,
    eps: float,
    *,
    input_bounds=None,
    time_limit: float = 60.0,
    progress: bool = False,
) -> VerificationResult:
    """Verify a classifier's robustness in the L-infinity ball of radius ``eps`` around each
    row of ``X`` (the balls clipped to the input box), input by input.

    Parameters
    ----------
    source : path, onnx.ModelProto or Network
        The classifier: one output (logit) per class.
    X : array (n, n_inputs) or (n, *input_shape)
    labels : array of int (n,)
    eps : float
        The radius of each ball.
    input_bounds : box, optional
        Where the balls are clipped (pixels: ``[(0, 1)] * n_inputs``); default the box the
        network carries, else an :class:`~pyomo_nnrelax.errors.InputBoundsError`.
    time_limit : float
        Seconds per input, the stages and their models' building included; an input not
        settled by then is "unknown".
    progress : bool
        A progress bar over the inputs.
    """
    from .onnx import read_onnx

    network = source if isinstance(source, Network) else read_onnx(source)
    reference = source
    if isinstance(source, Network):  # the exact network: dense, float64
        reference = write_onnx(network, dtype="float64", graph="dense")
    box = resolve_box(input_bounds, network)
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(labels) != len(X):
        raise ValueError(f"labels has {len(labels)} entries for {len(X)} inputs")
    if np.any((labels < 0) | (labels >= network.n_outputs)):
        raise ValueError(f"labels must be classes 0..{network.n_outputs - 1}")
    if not eps > 0:
        raise ValueError(f"eps must be a positive radius, got {eps!r}")
    margins: dict[int, Network] = {}
    result = VerificationResult(float(eps))
    bar = progress_bar(len(X), "verify", "image", show=progress)
    for i, (x, label) in enumerate(zip(X, labels.tolist())):
        if label not in margins:
            margins[label] = margin_network(network, label)
        checker = _Checker(network, margins[label], reference, label, box, eps, time_limit)
        result.images.append(checker.run(i, x))
        bar.update(1)
        bar.show(verified=result.count("verified"))
    bar.close()
    return result


@dataclass
class _Checker:
    """The stages for one input (see the module docstring)."""

    network: Network
    margins: Network
    reference: object
    label: int
    box: InputBox
    eps: float
    time_limit: float

    def run(self, index: int, x: np.ndarray) -> ImageResult:
        self.began = time.perf_counter()
        predicted = int(np.argmax(self.network.forward(x[None])[0]))
        done = self._result(index, predicted)
        if predicted != self.label:
            return done("misclassified", "prediction", 0, math.nan)
        bounds = interval_bounds(self.margins, clipped_ball(x, self.eps, self.box))
        unstable = bounds.unstable_count(self.margins)
        lower = bounds.lower[-1].copy()
        for stage, improve in (("interval", None), ("lp", self._lp), ("tightened lp", self._tight)):
            if improve is not None:
                try:
                    bounds, lower = improve(bounds, lower)
                except _OutOfTime:
                    return done("unknown", "time limit", unstable, math.nan)
            if np.all(lower > 0.0):
                return done("verified", stage, unstable, float(lower.min()))
            if self._left() <= 0.0:
                return done("unknown", "time limit", unstable, math.nan)
        return self._milp(bounds, lower, done, unstable)

    def _result(self, index: int, predicted: int) -> Callable[..., ImageResult]:
        def done(status, by, unstable, bound, point=None, margin=None) -> ImageResult:
            seconds = time.perf_counter() - self.began
            return ImageResult(
                index, self.label, predicted, status, by, seconds, unstable, bound, point, margin
            )

        return done

    def _left(self) -> float:
        return self.time_limit - (time.perf_counter() - self.began)

    def _lp(self, bounds: NetworkBounds, lower: np.ndarray):
        """The LP relaxation's minimum of every open margin, as a lower bound on it; a solve
        stops as soon as its dual bound proves the margin above :data:`LP_CUTOFF`."""
        model = bigm_model(self.margins, bounds, relax=True)
        highs = HighsModel(model, relax=True, objective_bound=LP_CUTOFF)
        cols = model.cols("outputs")
        for j in np.flatnonzero(lower <= 0.0):
            if self._left() <= 0.0:
                raise _OutOfTime
            highs.highs.setOptionValue("time_limit", self._left())
            highs.set_objective(cols[j : j + 1], np.ones(1))
            result = highs.solve()
            if result.status == BOUND_REACHED:
                lower[j] = max(lower[j], LP_CUTOFF)
            elif result.optimal:
                lower[j] = max(lower[j], result.objective)
        return bounds, lower

    def _tight(self, bounds: NetworkBounds, lower: np.ndarray):
        """LP-tightened bounds of every neuron, then the LP again; stopped at the chunk of
        solves in which the input's time runs out."""
        tight = tighten_bounds(
            self.margins, bounds, "lp", time_limit=max(self._left(), 1e-3),
            executor=_Deadline(self._left), chunks=TIGHTENING_CHUNKS,
        )  # fmt: skip
        return self._lp(tight, np.maximum(lower, tight.lower[-1]))

    def _milp(self, bounds: NetworkBounds, lower: np.ndarray, done, unstable: int):
        """The MILP of each open margin, the most doubtful first, stopped at its sign."""
        model = bigm_model(self.margins, bounds)
        options = {"objective_bound": 0.0, "mip_max_improving_sols": 1}
        highs = HighsModel(model, **options)
        cols, inputs = model.cols("outputs"), model.cols("inputs")
        for j in sorted(np.flatnonzero(lower <= 0.0), key=lambda j: lower[j]):
            if self._left() <= 0.0:
                return done("unknown", "time limit", unstable, math.nan)
            highs.highs.setOptionValue("time_limit", self._left())
            highs.set_objective(cols[j : j + 1], np.ones(1))
            result = highs.solve()
            if result.x is not None and result.objective < 0.0:
                point = result.x[inputs]
                margin = self._onnx_margin(point)
                if margin < 0.0:
                    return done("falsified", "milp", unstable, math.nan, point, margin)
                return done("unknown", "onnxruntime", unstable, math.nan, point, margin)
            if result.status == "Infeasible":  # the cut-off at 0 pruned every node
                lower[j] = max(lower[j], 0.0)
            elif result.optimal:
                lower[j] = max(lower[j], result.bound)
            else:
                return done("unknown", "time limit", unstable, math.nan)
        return done("verified", "milp", unstable, float(lower.min()))

    def _onnx_margin(self, point: np.ndarray) -> float:
        """The smallest margin of the label over the other classes at ``point``, by
        onnxruntime: negative for a true counterexample."""
        shape = (1, *self.network.input_shape)
        out = run_onnxruntime(self.reference, point.reshape(shape))[0].reshape(-1)
        return float(out[self.label] - np.delete(out, self.label).max())
