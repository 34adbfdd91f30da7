"""The capacitated facility location problem (CFLP) of the paper's second case study.

A first stage opens facilities (binary ``y``); once the customers' demands ``d`` are known, a
second stage assigns each customer to one open facility within the capacities, or leaves it
unserved at a penalty (docs/method.md, section 6):

    Q(y, d) = min  sum_ij c_ij d_j x_ij + sum_j p d_j u_j
              s.t. sum_i x_ij + u_j = 1                  (each customer: one facility, or none)
                   sum_j d_j x_ij <= s_i y_i             (capacities of open facilities)
                   x_ij in {0, 1},  0 <= u_j <= 1

The instances follow Cornuejols, Sridharan and Thizy (1991), as Neur2SP (Dumouchelle et al.
2022) uses them: :func:`make_instance`.  :func:`recourse_cost` solves ``Q`` on HiGHS with a
time limit (through the package's one HiGHS wrapper, no Pyomo), :func:`expected_cost`
estimates ``c_f' y + E[Q(y, d)]`` on sampled scenarios.

>>> inst = make_instance(3, 4, seed=0)
>>> inst.n_facilities, inst.n_customers
(3, 4)
>>> r = recourse_cost(inst, [1, 1, 1], inst.mean_demand())
>>> r.optimal, round(r.cost, 3)
(True, 238.255)
>>> recourse_cost(inst, [0, 0, 0], inst.mean_demand()).cost == inst.all_unserved_cost(
...     inst.mean_demand())
True
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass

import numpy as np

from ..checks import positive_float, positive_int
from ..errors import SolverError
from ..formulations.matrix_model import MatrixModel, MatrixModelBuilder
from ..lp.highs import HighsModel

DEMAND_RANGE = (5, 35)
"""Integer demands of a customer, uniform on this range inclusive (Cornuejols et al.)."""


@dataclass(frozen=True, eq=False)
class CFLPInstance:
    """One CFLP instance: facilities ``i`` and customers ``j``.

    Attributes
    ----------
    fixed_costs : ndarray (n_f,)
        ``c_f``: cost of opening each facility (first stage).
    capacities : ndarray (n_f,)
        ``s``: capacity of each facility, in units of demand.
    unit_costs : ndarray (n_f, n_c)
        ``c_ij``: cost per unit of customer ``j``'s demand served from facility ``i``.
    penalty : float
        ``p``: cost per unit of unserved demand.
    demand_range : (int, int)
        Each scenario draws every customer's demand uniformly from these integers.
    """

    fixed_costs: np.ndarray
    capacities: np.ndarray
    unit_costs: np.ndarray
    penalty: float
    demand_range: tuple[int, int] = DEMAND_RANGE

    def __post_init__(self) -> None:
        f = _array("fixed_costs", self.fixed_costs, 1)
        s = _array("capacities", self.capacities, 1)
        c = _array("unit_costs", self.unit_costs, 2)
        if not (f.size == s.size == c.shape[0]) or f.size == 0 or c.shape[1] == 0:
            raise ValueError(
                f"fixed_costs {f.shape}, capacities {s.shape} and unit_costs {c.shape} must "
                "describe the same n_f >= 1 facilities (unit_costs: n_f rows, n_c >= 1 columns)"
            )
        for name, values in (("fixed_costs", f), ("capacities", s), ("unit_costs", c)):
            if np.any(values < 0):
                raise ValueError(f"{name} must be >= 0, got a minimum of {values.min()}")
        positive_float("penalty", self.penalty)
        lo, hi = self.demand_range
        if not (isinstance(lo, (int, np.integer)) and isinstance(hi, (int, np.integer))):
            raise ValueError(f"demand_range must be two integers, got {self.demand_range!r}")
        if not 0 <= lo <= hi:
            raise ValueError(f"demand_range must satisfy 0 <= low <= high, got {lo, hi}")
        for name, values in (("fixed_costs", f), ("capacities", s), ("unit_costs", c)):
            object.__setattr__(self, name, values)
        object.__setattr__(self, "penalty", float(self.penalty))
        object.__setattr__(self, "demand_range", (int(lo), int(hi)))

    @property
    def n_facilities(self) -> int:
        return self.fixed_costs.size

    @property
    def n_customers(self) -> int:
        return self.unit_costs.shape[1]

    def sample_demands(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` demand scenarios (n, n_c), integers uniform on ``demand_range``."""
        lo, hi = self.demand_range
        return rng.integers(lo, hi + 1, size=(n, self.n_customers)).astype(np.float64)

    def mean_demand(self) -> np.ndarray:
        """The expected demand of every customer (n_c,)."""
        return np.full(self.n_customers, sum(self.demand_range) / 2.0)

    def all_unserved_cost(self, demand) -> float:
        """``Q`` with no facility open: every unit of demand pays the penalty."""
        return float(self.penalty * np.sum(demand))

    def fingerprint(self) -> str:
        """A hash of every number of the instance (what data caches are keyed by)."""
        digest = hashlib.sha256()
        for values in (self.fixed_costs, self.capacities, self.unit_costs):
            digest.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
        digest.update(json.dumps([self.penalty, list(self.demand_range)]).encode())
        return digest.hexdigest()[:16]

    def describe(self) -> dict:
        """Sizes and summary figures, for logs and cache folders."""
        return {
            "n_facilities": self.n_facilities,
            "n_customers": self.n_customers,
            "penalty": self.penalty,
            "demand_range": list(self.demand_range),
            "total_capacity": float(self.capacities.sum()),
            "mean_total_demand": float(self.mean_demand().sum()),
            "fingerprint": self.fingerprint(),
        }


def make_instance(
    n_facilities: int,
    n_customers: int,
    ratio: float = 5.0,
    penalty_factor: float = 3.0,
    seed: int = 0,
) -> CFLPInstance:
    """A random CFLP instance after Cornuejols, Sridharan and Thizy (1991).

    Facilities and customers lie uniformly in the unit square.  Capacities ``s_i ~ U[10,
    160]``, fixed costs ``f_i = U[0, 90] + U[100, 110] sqrt(s_i)`` (from the capacities drawn),
    then the capacities are scaled so that their total is ``ratio`` times the expected total
    demand.  Serving a unit of demand costs ``10 x`` the Euclidean distance; a unit of
    unserved demand costs ``penalty_factor`` times the largest of those unit costs.
    """
    n_f = positive_int("n_facilities", n_facilities)
    n_c = positive_int("n_customers", n_customers)
    ratio = positive_float("ratio", ratio)
    penalty_factor = positive_float("penalty_factor", penalty_factor)
    rng = np.random.default_rng(seed)
    facilities = rng.random((n_f, 2))
    customers = rng.random((n_c, 2))
    capacities = rng.uniform(10.0, 160.0, n_f)
    fixed = rng.uniform(0.0, 90.0, n_f) + rng.uniform(100.0, 110.0, n_f) * np.sqrt(capacities)
    expected_demand = n_c * sum(DEMAND_RANGE) / 2.0
    capacities *= ratio * expected_demand / capacities.sum()
    distance = np.linalg.norm(facilities[:, None, :] - customers[None, :, :], axis=2)
    unit_costs = 10.0 * distance
    return CFLPInstance(fixed, capacities, unit_costs, penalty_factor * float(unit_costs.max()))


# ---------------------------------------------------------------------- the second stage
@dataclass(frozen=True)
class RecourseResult:
    """One solve of the recourse MILP.

    ``cost`` is the best assignment's cost (the optimum when ``optimal``; at a time limit the
    incumbent, an upper bound on ``Q``), ``bound`` HiGHS's proven lower bound (``-inf`` when
    it proved none), ``served`` the facility of each customer (-1: unserved).
    """

    cost: float
    bound: float
    optimal: bool
    seconds: float
    served: np.ndarray


def check_decision(instance: CFLPInstance, y) -> np.ndarray:
    """``y`` as a float 0/1 vector of the instance's length, or a ValueError naming ``y``."""
    y = _vector("y", y, instance.n_facilities, "open/closed facilities")
    rounded = np.round(y)
    if np.any(np.abs(y - rounded) > 1e-6) or not np.all((rounded == 0) | (rounded == 1)):
        raise ValueError(f"y must hold 0 or 1 per facility, got {y.tolist()}")
    return rounded + 0.0  # no -0.0


def check_demand(instance: CFLPInstance, demand) -> np.ndarray:
    """``demand`` as a float vector of the instance's customers, or a ValueError."""
    demand = _vector("demand", demand, instance.n_customers, "customer demands")
    if not np.all(np.isfinite(demand)) or np.any(demand < 0):
        raise ValueError("demand must be finite and >= 0")
    return demand


def _vector(name: str, values, size: int, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size != size:
        raise ValueError(f"{name} must be a vector of {size} {what}, got shape {array.shape}")
    return array


def recourse_model(instance: CFLPInstance, y, demand) -> tuple[MatrixModel, np.ndarray]:
    """The recourse MILP at ``(y, d)`` in matrix form, and its objective coefficients.

    Columns ``assign`` (``x_ij`` of the open facilities only, row-major over (open i, j)) and
    ``unserved`` (``u_j``); rows ``serve`` (one per customer) and ``capacity`` (one per open
    facility).  Closed facilities get no columns, so no ``x_ij <= y_i`` rows are needed.
    """
    y = check_decision(instance, y)
    d = check_demand(instance, demand)
    open_ = np.flatnonzero(y)
    n_o, n_c = open_.size, instance.n_customers
    builder = MatrixModelBuilder()
    assign = builder.add_vars("assign", np.zeros(n_o * n_c), 1.0, integer=True)
    unserved = builder.add_vars("unserved", np.zeros(n_c), 1.0)
    grid = assign.reshape(n_o, n_c) if n_o else np.zeros((0, n_c), dtype=np.int64)
    serve_terms = [(unserved, np.ones(n_c))]
    serve_terms += [(grid[k], np.ones(n_c)) for k in range(n_o)]
    builder.add_rows("serve", serve_terms, 1.0, 1.0)
    if n_o:
        capacity_terms = [(grid[:, j], np.full(n_o, d[j])) for j in range(n_c)]
        builder.add_rows("capacity", capacity_terms, -np.inf, instance.capacities[open_])
    costs = np.concatenate([(instance.unit_costs[open_] * d).reshape(-1), instance.penalty * d])
    return builder.build(), costs


def recourse_cost(
    instance: CFLPInstance, y, demand, time_limit: float | None = None
) -> RecourseResult:
    """``Q(y, d)``: solve the recourse MILP on HiGHS (``time_limit`` seconds, if given).

    Leaving every customer unserved is always feasible, so a time-limited solve still returns
    an assignment (if HiGHS found none in time, the all-unserved one); ``optimal`` says
    whether it was proven best.  Any other solve without an assignment raises
    :class:`~pyomo_nnrelax.SolverError`.
    """
    model, costs = recourse_model(instance, y, demand)
    options = {"mip_rel_gap": 1e-6}
    if time_limit is not None:
        options["time_limit"] = positive_float("time_limit", time_limit)
    start = time.perf_counter()
    highs = HighsModel(model, **options)
    highs.set_objective(np.arange(model.n_cols), costs)
    result = highs.solve()
    seconds = time.perf_counter() - start
    n_c = instance.n_customers
    bound = result.bound if math.isfinite(result.bound) else -math.inf
    if result.x is None:
        if "time limit" not in result.status.lower():  # unserved is feasible: HiGHS failed
            raise SolverError(
                f"HiGHS returned no assignment for the recourse MILP: {result.status}"
            )
        cost = instance.all_unserved_cost(check_demand(instance, demand))  # a feasible point
        return RecourseResult(cost, bound, False, seconds, np.full(n_c, -1))
    open_ = np.flatnonzero(check_decision(instance, y))
    x = np.round(result.x[: open_.size * n_c]).reshape(open_.size, n_c)
    served = np.full(n_c, -1)
    rows, cols = np.nonzero(x > 0.5)
    served[cols] = open_[rows]
    return RecourseResult(float(result.objective), bound, result.optimal, seconds, served)


def assignment_cost(instance: CFLPInstance, demand, served) -> float:
    """The cost of an assignment ``served`` (facility per customer, -1 unserved) at ``demand``."""
    d = check_demand(instance, demand)
    served = np.asarray(served)
    cost = instance.penalty * float(d[served < 0].sum())
    j = np.flatnonzero(served >= 0)
    return cost + float(np.sum(instance.unit_costs[served[j], j] * d[j]))


# ---------------------------------------------------------------------- decisions
@dataclass(frozen=True)
class ExpectedCost:
    """``c_f' y + E[Q(y, d)]`` estimated on ``scenarios`` demand samples.

    ``mean`` and ``stderr`` (standard error of the mean); ``limit_hits`` counts recourse
    solves stopped by their time limit (their incumbent, an upper bound, is used).
    """

    mean: float
    stderr: float
    scenarios: int
    limit_hits: int

    def __str__(self) -> str:
        return f"{self.mean:.2f} +- {self.stderr:.2f}"


def evaluation_scenarios(instance: CFLPInstance, n: int, seed: int = 12345) -> np.ndarray:
    """``n`` fresh demand scenarios (n, n_c) for judging decisions; the same ones for every
    decision (common random numbers), so differences between decisions are estimated well."""
    return instance.sample_demands(positive_int("n", n), np.random.default_rng([seed, 7]))


def expected_cost(
    instance: CFLPInstance, y, scenarios: np.ndarray, time_limit: float | None = None
) -> ExpectedCost:
    """The true expected cost of decision ``y`` on the demand ``scenarios`` (n, n_c)."""
    y = check_decision(instance, y)
    scenarios = np.atleast_2d(np.asarray(scenarios, dtype=np.float64))
    results = [recourse_cost(instance, y, d, time_limit) for d in scenarios]
    costs = np.array([r.cost for r in results]) + float(instance.fixed_costs @ y)
    stderr = float(costs.std(ddof=1) / math.sqrt(costs.size)) if costs.size > 1 else math.nan
    hits = sum(not r.optimal for r in results)
    return ExpectedCost(float(costs.mean()), stderr, costs.size, hits)


def _array(name: str, values, ndim: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-dimensional array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array
