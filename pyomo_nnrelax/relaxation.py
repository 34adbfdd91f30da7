"""LP relaxation of the big-M network at fixed inputs: optimal values and gradient pieces.

For a point ``x`` the inputs are fixed and the LP relaxation of the whole big-M network is
solved for ``min`` (or ``max``) ``w' outputs``.  Its value ``V(x)`` is a bound on ``w' f(x)``;
the gap between the two is the LP-gap regularizer (``docs/method.md``, section 4).  The
solver's duals and primals give the derivatives of ``V`` (envelope theorem, unique
non-degenerate optimum).

Sign convention: every dual here is ``dV/d(rhs)`` of its row (or ``dV/d(bound)`` of the active
bound of its column) for the sense actually solved, so

* ``dV/db^l = nu^l`` (duals of the affine rows ``z - W h = b``),
* ``dV/dW^l = nu^l (h^{l-1})^T`` with ``h^{l-1}`` the LP's input to layer ``l``,
* ``dV/dL^l_j``, ``dV/dU^l_j`` (everything else fixed) collect every place ``L``/``U`` occur:
  the bounds of ``z`` (``[L, U]``, all neurons), the bounds of ``xh`` (``[L, U]`` for
  stable-active neurons, upper bound ``U`` for unstable ones; stable-inactive ``xh`` is fixed
  at 0 and gets nothing), and the big-M rows of unstable neurons,
  ``xh - z - L a <= -L`` (``dV/dL += y (a - 1)``) and ``xh - U a <= 0`` (``dV/dU += y a``).
  Linear layers only have the ``z`` bound terms.  The stability pattern itself is held fixed:
  these are one-sided derivatives where ``L`` or ``U`` crosses 0.

Two backends give the same values and derivatives: ``"highs"`` solves the LP projected onto
the layer outputs (:mod:`pyomo_nnrelax.lp.projected`, about half the size) with ``highspy``,
re-solved from the previous basis; ``"pyomo"`` solves the big-M LP of an
:class:`~pyomo_nnrelax.block.NNBlock` with a Pyomo solver (persistent ``appsi_highs`` by
default) and reads the derivatives off the :class:`MatrixModel`'s rows and columns.
"""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np
import pyomo.environ as pyo

from .block import NNBlock
from .bounds import NetworkBounds
from .formulations import layer_keys
from .formulations.matrix_model import Key, MatrixModel
from .lp.projected import solve_batch
from .lp.solutions import RelaxationBatch, Solutions, empty_solutions, split_by_nearer_bound
from .network import Network
from .options import LP_BACKENDS, SENSES, LPBackend, Sense, check_option


# ---------------------------------------------------------------------- assembly
def bound_duals(model: MatrixModel, sol: Solutions, key: Key) -> tuple[np.ndarray, np.ndarray]:
    """Column duals of a group split into the lower-bound and upper-bound parts."""
    cols = model.cols(*key)
    return split_by_nearer_bound(
        sol.x[:, cols], model.col_lower[cols], model.col_upper[cols], sol.col_dual[:, cols]
    )


def assemble(
    network: Network, bounds: NetworkBounds, model: MatrixModel, sol: Solutions, X
) -> RelaxationBatch:
    """Gradient pieces of :class:`RelaxationBatch` from primal and dual solutions."""
    affine, acts, lower, upper = [], [np.where(sol.ok[:, None], X, 0.0)], [], []
    for l in range(len(network.layers)):
        affine.append(sol.row_dual[:, model.rows("affine", l)])
        z_key, xh_key = layer_keys(network, l)
        if l + 1 < len(network.layers):
            acts.append(sol.x[:, model.cols(*(xh_key or z_key))])
        d_lo, d_hi = bound_duals(model, sol, z_key)
        if xh_key is not None:
            stab = bounds.stability(l, network)
            xh_lo, xh_hi = bound_duals(model, sol, xh_key)
            d_lo = d_lo + np.where(stab == 1, xh_lo, 0.0)
            d_hi = d_hi + np.where(stab >= 0, xh_hi, 0.0)
            unstable = model.row_groups[("relu_upper", l)].index
            a = sol.x[:, model.cols("is_active", l)]
            d_lo[:, unstable] += sol.row_dual[:, model.rows("relu_upper", l)] * (a - 1.0)
            d_hi[:, unstable] += sol.row_dual[:, model.rows("relu_big_m", l)] * a
        lower.append(d_lo)
        upper.append(d_hi)
    return RelaxationBatch(sol.value, affine, acts, lower, upper, sol.ok)


def sample_weights(objective_weights, n: int, n_outputs: int) -> np.ndarray:
    """Objective weights per sample, shape (n, n_outputs), from one vector or one per sample."""
    w = np.asarray(objective_weights, dtype=np.float64)
    return np.broadcast_to(w.reshape(-1) if w.ndim < 2 else w, (n, n_outputs))


# ---------------------------------------------------------------------- Pyomo backend
def solve_pyomo(
    network, bounds, X, weights, sense, solver: str | None
) -> tuple[MatrixModel, Solutions]:
    """Raw solutions with an :class:`NNBlock` LP and a Pyomo solver (persistent by default).

    The inputs are fixed with ``Var.fix`` and the objective's coefficients are mutable
    parameters, so a persistent solver (``appsi_highs``) only sees bound and cost updates.
    """
    m = pyo.ConcreteModel()
    m.nn = NNBlock(
        network, input_bounds=bounds.input_box, relax=True, bounds=bounds, rescale=False
    )  # duals in the network's own units
    model = m.nn.matrix_model
    m.w = pyo.Param(range(network.n_outputs), mutable=True, initialize=0.0)
    m.obj = pyo.Objective(
        expr=sum(m.w[j] * m.nn.outputs[j] for j in range(network.n_outputs)),
        sense=pyo.minimize if sense == "min" else pyo.maximize,
    )
    m.dual = pyo.Suffix(direction=pyo.Suffix.IMPORT)
    m.rc = pyo.Suffix(direction=pyo.Suffix.IMPORT)
    columns = block_components(m.nn, model.var_groups)
    rows = block_components(m.nn, model.row_groups)
    opt = pyo.SolverFactory(solver or "appsi_highs")
    sol = empty_solutions(len(X), model.n_cols, model.n_rows)
    for i, (x, w) in enumerate(zip(X, weights)):
        for j, v in enumerate(w.tolist()):
            m.w[j] = v
        for j, v in enumerate(x.tolist()):
            m.nn.inputs[j].fix(v)
        try:
            result = opt.solve(m, load_solutions=True)
        except RuntimeError:  # appsi raises when there is no solution to load
            continue
        if result.solver.termination_condition != pyo.TerminationCondition.optimal:
            continue
        sol.value[i] = pyo.value(m.obj)
        sol.x[i] = [v.value for v in columns]
        sol.row_dual[i] = [m.dual.get(c, 0.0) for c in rows]
        sol.col_dual[i] = [m.rc.get(v, 0.0) for v in columns]
        sol.ok[i] = True
    return model, sol


def block_components(block, groups: dict[Key, object]) -> list:
    """The block's Var or Constraint data in the order of the matrix columns or rows."""
    out = []
    for (name, layer), group in groups.items():
        component = getattr(block if layer is None else block.layer[layer], name)
        out.extend(component[label] for label in group.index.tolist())
    return out


# ---------------------------------------------------------------------- entry point
def solve_relaxations(
    network: Network,
    bounds: NetworkBounds,
    X,
    objective_weights,
    sense: Sense = "min",
    lp_backend: LPBackend = "highs",
    solver: str | None = None,
    executor: Executor | None = None,
) -> RelaxationBatch:
    """LP relaxation of the big-M network at each row of ``X``: values and gradient pieces.

    Parameters
    ----------
    network, bounds : Network, NetworkBounds
        The network and the pre-activation bounds its big-M constants come from.
    X : array (n, n_inputs)
        Inputs at which the LP is solved (each row fixes the input variables).
    objective_weights : array (n_outputs,) or (n, n_outputs)
        The LP optimises ``w' outputs``.
    sense : {"min", "max"}
    lp_backend : {"highs", "pyomo"}
        ``"highs"``: the projected LP in one highspy model, re-solved from the previous basis
        from sample to sample (:func:`pyomo_nnrelax.lp.projected.solve_batch`).  ``"pyomo"``: an
        :class:`NNBlock` and the Pyomo solver ``solver`` (default ``"appsi_highs"``).
    executor : concurrent.futures.Executor, optional
        ``"highs"`` only: split ``X`` into one chunk per CPU, each solved on its own cached
        model, on this executor (threads or processes).  It pays off for large batches;
        a training step's few LPs are faster serially.

    Returns
    -------
    RelaxationBatch
        Failed LPs (``ok`` False) have NaN value and zero gradients; the caller counts them.
    """
    check_option("sense", sense, SENSES)
    check_option("lp_backend", lp_backend, LP_BACKENDS)
    X = np.asarray(X, dtype=np.float64).reshape(-1, network.n_inputs)
    weights = sample_weights(objective_weights, len(X), network.n_outputs)
    if lp_backend == "highs":
        return solve_batch(network, bounds, X, weights, sense, executor=executor)
    if lp_backend == "pyomo":
        model, sol = solve_pyomo(network, bounds, X, weights, sense, solver)
        return assemble(network, bounds, model, sol, X)
