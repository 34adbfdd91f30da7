"""Cost per LP of the LP-gap regularizer: solve, duals and gradient assembly at fixed inputs.

Four ways to get :class:`~pyomo_nnrelax.relaxation.RelaxationBatch` for a batch of points:

* ``highs``: :func:`solve_relaxations`, the projected LP in one highspy model re-solved from
  the previous basis; every call gets a new network object (as in training), so the model is
  rebuilt once per batch;
* ``big-M``: the same, on the full big-M LP (``z``, ``xh`` and ``a`` columns) in highspy;
* ``linprog``: dense ``A_eq``/``A_ub`` built for every sample and solved with
  ``scipy.optimize.linprog(method="highs")`` (what the paper's reference code did);
* ``pyomo``: :func:`solve_relaxations` with ``lp_backend="pyomo"`` (NNBlock + persistent
  appsi_highs).

A second table times training epochs (peaks data, batch 64) with no regularizer, BW, and
BW+LP at 8 LPs per mini-batch (the paper's subsample size), as ratios to no regularizer; with
torch installed, also BW+LP relative to the same unregularized loop in PyTorch.

A third table (``--gap-methods``, alone with ``--only-methods``) trains BW+LP with
``LPGap(gap_method="exact_lp")`` (8 LPs per mini-batch) and
``LPGap(gap_method="dual_network")`` (the dual-network
bound on the whole mini-batch) side by side: seconds per epoch as ratios to no regularizer,
the relative slack ``(LP - bound) / |LP|`` of the dual bound at the training points (median
and 90th percentile, with the slopes the regularizer kept for them), and the exactly measured
mean LP gap ``f - V_min`` at the training points after training.

    python benchmarks/lp_gap_cost.py [--points 64] [--repeats 3] [--no-pyomo] [--epochs 3]
                                     [--gap-methods] [--only-methods] [--lam 1e-3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import linprog

from pyomo_nnrelax import InputBox, Layer, Network, interval_bounds
from pyomo_nnrelax.experiments.functions import box, latin_hypercube, peaks
from pyomo_nnrelax.formulations.bigm import bigm_model
from pyomo_nnrelax.lp.highs import HighsModel
from pyomo_nnrelax.lp.projected import solve_batch
from pyomo_nnrelax.relaxation import (
    RelaxationBatch,
    Solutions,
    assemble,
    empty_solutions,
    solve_relaxations,
)
from pyomo_nnrelax.training import BoundWidth, LPGap, Trainer
from pyomo_nnrelax.training.dual import SlopeLayout, dual_forward
from pyomo_nnrelax.training.ibp import ibp_forward

ARCHITECTURES = ([2] + [25] * 2 + [1], [2] + [25] * 3 + [1], [2] + [25] * 5 + [1])
BOX = InputBox(lower=np.full(2, -1.0), upper=np.full(2, 1.0))


def linprog_batch(network: Network, X: np.ndarray) -> RelaxationBatch:
    """One dense ``linprog`` per sample, building the matrices from the weights every time."""
    sol: Solutions | None = None
    for i, x in enumerate(X):
        bounds = interval_bounds(network, BOX)
        model = bigm_model(network, bounds, relax=True)
        sol = sol or empty_solutions(len(X), model.n_cols, model.n_rows)
        A = model.dense()
        eq = model.row_lower == model.row_upper
        le = ~eq & np.isfinite(model.row_upper)
        ge = ~eq & ~le
        c = np.zeros(model.n_cols)
        c[model.cols("outputs")] = 1.0
        lower, upper = model.col_lower.copy(), model.col_upper.copy()
        lower[model.cols("inputs")] = upper[model.cols("inputs")] = x
        res = linprog(
            c,
            A_ub=np.vstack([A[le], -A[ge]]),
            b_ub=np.concatenate([model.row_upper[le], -model.row_lower[ge]]),
            A_eq=A[eq],
            b_eq=model.row_upper[eq],
            bounds=np.column_stack([lower, upper]),
            method="highs",
        )
        if res.status != 0:
            continue
        sol.value[i], sol.x[i], sol.ok[i] = res.fun, res.x, True
        sol.row_dual[i, eq] = res.eqlin.marginals
        sol.row_dual[i, le] = res.ineqlin.marginals[: le.sum()]
        sol.row_dual[i, ge] = -res.ineqlin.marginals[le.sum() :]
        sol.col_dual[i] = res.lower.marginals + res.upper.marginals
    return assemble(network, bounds, model, sol, X)


def big_m_batch(network: Network, X: np.ndarray) -> RelaxationBatch:
    """The big-M LP in one highspy model, inputs fixed by column bounds, warm-started."""
    bounds = interval_bounds(network, BOX)
    model = bigm_model(network, bounds, relax=True)
    highs = HighsModel(model, relax=True)
    highs.set_objective(model.cols("outputs"), [1.0], "min")
    sol = empty_solutions(len(X), model.n_cols, model.n_rows)
    for i, x in enumerate(X):
        highs.set_col_bounds(model.cols("inputs"), x, x)
        result = highs.solve()
        if result.optimal and result.row_dual is not None:
            sol.value[i], sol.x[i], sol.ok[i] = result.objective, result.x, True
            sol.row_dual[i], sol.col_dual[i] = result.row_dual, result.col_dual
    return assemble(network, bounds, model, sol, X)


def retrained(network: Network) -> Network:
    """A new network object with the same weights, as after a (zero-size) training step."""
    return network.with_layers([Layer(L.weight, L.bias, L.activation) for L in network.layers])


def per_lp_ms(run, network: Network, X: np.ndarray, repeats: int) -> tuple[float, RelaxationBatch]:
    """Best-of-``repeats`` milliseconds per LP of ``run(network, X)`` on fresh network objects."""
    best, batch = np.inf, None
    for _ in range(repeats):
        net = retrained(network)
        start = time.perf_counter()
        batch = run(net, X)
        best = min(best, (time.perf_counter() - start) * 1000 / len(X))
    return best, batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-pyomo", action="store_true", help="skip the Pyomo backend")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per training timing")
    parser.add_argument(
        "--gap-methods",
        action="store_true",
        help="also compare LPGap gap_method=exact_lp and dual_network",
    )
    parser.add_argument("--only-methods", action="store_true", help="only that comparison")
    parser.add_argument("--lam", type=float, default=1e-3, help="lam of the method comparison")
    args = parser.parse_args()
    if args.only_methods:
        method_comparison(args.epochs, args.lam)
        return
    X = np.random.default_rng(0).uniform(-1, 1, size=(args.points, 2))
    runs = {
        "highs": lambda net, X: solve_relaxations(net, interval_bounds(net, BOX), X, [1.0]),
        "big-M": big_m_batch,
        "linprog": linprog_batch,
    }
    if not args.no_pyomo:
        runs["pyomo"] = lambda net, X: solve_relaxations(
            net, interval_bounds(net, BOX), X, [1.0], lp_backend="pyomo"
        )
    names = list(runs)
    header = f"{'network':>18} {'binaries':>8} " + " ".join(f"{n + ' ms':>11}" for n in names)
    header += " " + " ".join(f"{n + '/highs':>14}" for n in names[1:]) + f" {'max |nu| diff':>13}"
    print(f"ms per LP (solve + duals + gradients), best of {args.repeats}, {args.points} points")
    print(header)
    for sizes in ARCHITECTURES:
        net = Network.mlp(sizes, seed=0)
        timed = {name: per_lp_ms(run, net, X, args.repeats) for name, run in runs.items()}
        ref = timed["highs"][1]
        diff = max(
            float(
                np.max(
                    np.abs(
                        np.concatenate(
                            [a - b for a, b in zip(t[1].affine_duals, ref.affine_duals)], axis=1
                        )
                    )
                )
            )
            for t in timed.values()
        )
        name = "-".join(map(str, sizes))
        line = f"{name:>18} {interval_bounds(net, BOX).unstable_count(net):>8} "
        line += " ".join(f"{timed[n][0]:>11.3f}" for n in names)
        line += " " + " ".join(f"{timed[n][0] / timed['highs'][0]:>14.1f}" for n in names[1:])
        print(line + f" {diff:>13.2e}")
    training_ratios(args.epochs)
    if args.gap_methods:
        method_comparison(args.epochs, args.lam)


def torch_epoch_seconds(sizes: list[int], X: np.ndarray, y: np.ndarray, epochs: int) -> float:
    """Seconds per epoch of the same unregularized training loop in PyTorch (CPU, torch's
    default threads, float64): the kind of baseline the paper's training-time ratios use."""
    import torch

    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-2], sizes[-1])).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    X_t = torch.from_numpy(X)
    y_t = torch.from_numpy(((y - y.min()) / (y.max() - y.min())).reshape(-1, 1))
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in torch.randperm(len(X_t)).split(64):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(X_t[batch]), y_t[batch])
            loss.backward()
            optimizer.step()
    return (time.perf_counter() - start) / epochs


def training_ratios(epochs: int) -> None:
    """Seconds per epoch of BW and BW+LP training relative to no regularizer, same data.

    With torch installed, a last column gives BW+LP relative to unregularized PyTorch.
    """
    domain = box("peaks")
    X = latin_hypercube(3000, domain, seed=0)
    y = peaks(X)
    regularizers = {
        "none": None,
        "bw": BoundWidth(),
        "bw+lp": BoundWidth() + LPGap(sense="min", gap_method="exact_lp", samples=8),
    }
    try:
        import torch  # noqa: F401

        with_torch = True
    except ImportError:
        with_torch = False
    print(f"\ntraining, 3000 points, batch 64, {epochs} epochs: seconds per epoch (ratio to none)")
    header = f"{'network':>18} " + " ".join(f"{name:>16}" for name in regularizers)
    print(header + (f" {'torch none':>11} {'bw+lp/torch':>12}" if with_torch else ""))
    for sizes in ARCHITECTURES:
        seconds = {}
        for name, reg in regularizers.items():
            trainer = Trainer(
                Network.mlp(sizes, seed=0),
                X,
                y,
                input_bounds=domain,
                regularizer=reg,
                lam=1e-3 if reg else 0.0,
                epochs=epochs,
                seed=0,
            )
            start = time.perf_counter()
            trainer.fit()
            seconds[name] = (time.perf_counter() - start) / epochs
        cells = " ".join(f"{t:>8.3f} ({t / seconds['none']:>4.1f}x)" for t in seconds.values())
        if with_torch:
            base = torch_epoch_seconds(list(sizes), X, y, epochs)
            cells += f" {base:>11.3f} {seconds['bw+lp'] / base:>11.1f}x"
        print(f"{'-'.join(map(str, sizes)):>18} {cells}")


def dual_slack(trainer: Trainer, reg: LPGap) -> tuple[np.ndarray, np.ndarray]:
    """At every training point of ``trainer``, with ``V`` the exact LP value of ``min f``
    (projected LP) and ``B`` the dual bound with the slopes ``reg`` kept for the point, in
    the user's units: ``(V - B) / |V|`` (the slack relative to the LP value) and
    ``(V - B) / (f - V)`` (how much the dual gap ``f - B`` overstates the LP gap ``f - V``)."""
    layers = trainer._layers  # training units, as the regularizer saw them
    lo, hi = trainer.input_bounds
    trace = ibp_forward(layers, lo, hi)
    network = Network(layers).with_input_bounds(lo, hi)
    X = trainer.X
    exact = solve_batch(network, trace.to_bounds(), X, np.ones((len(X), 1)), "min")
    store = reg._slopes["min"]
    layout = SlopeLayout.of(layers)
    kept, unseen = store.read(layout, np.arange(len(X)))
    kept.reset(unseen, layout.start(trace.lower, trace.upper))
    slopes = layout.split(kept.alpha)
    bound = dual_forward(layers, trace.lower, trace.upper, X, np.ones(1), slopes).value
    f = network.forward(X)[:, 0]
    scale, offset = trainer.scaling_.scale[0], trainer.scaling_.offset[0]
    ok = exact.ok
    V, B, f = (scale * a[ok] + offset for a in (exact.value, bound, f))
    return (V - B) / np.maximum(np.abs(V), 1e-12), (V - B) / np.maximum(f - V, 1e-12)


def exact_gap(network: Network, domain, X: np.ndarray) -> float:
    """Mean ``f(x) - V_min(x)`` over ``X`` with the exact projected LP (user units)."""
    batch = solve_batch(network, interval_bounds(network, domain), X, np.ones((len(X), 1)), "min")
    return float(np.mean(network.forward(X)[batch.ok, 0] - batch.value[batch.ok]))


def method_comparison(epochs: int, lam: float) -> None:
    """BW, and BW+LP with ``LPGap(gap_method="exact_lp")``,
    ``LPGap(gap_method="dual_network")`` and the dual
    bound at every other step (``every=2``), trained side by side: one epoch of each in
    turn, so that a change in machine load hits all of them; the ratios are of median epoch
    times."""
    domain = box("peaks")
    X = latin_hypercube(3000, domain, seed=0)
    y = peaks(X)
    print(
        f"\nBW+LP, method lp (8 LPs/batch) vs dual (whole batch): 3000 points, batch 64, "
        f"{epochs} epochs, lam {lam:g}, one epoch of each in turn; time: median epoch, ratio "
        "to no regularizer; dual slack at the training points (user units, median and 90th "
        "percentile): (LP - bound)/|LP| and (LP - bound)/(f - LP); exact mean LP gap f - V_min "
        "at the training points after training"
    )
    print(
        f"{'network':>18} {'none s/ep':>9} {'bw':>6} {'lp':>6} {'dual':>6} {'dual/2':>6} "
        f"{'slack/|LP| med':>14} {'p90':>8} {'slack/gap med':>13} {'p90':>8} "
        f"{'gap none':>9} {'gap lp':>9} {'gap dual':>9} {'gap dual/2':>10}"
    )
    for sizes in ARCHITECTURES:
        regularizers = {
            "none": None,
            "bw": BoundWidth(),
            "lp": BoundWidth() + LPGap(sense="min", gap_method="exact_lp"),
            "dual": BoundWidth() + LPGap(sense="min", gap_method="dual_network"),
            "dual/2": BoundWidth() + LPGap(sense="min", gap_method="dual_network", every=2),
        }
        trainers = {
            name: Trainer(
                Network.mlp(sizes, seed=0),
                X,
                y,
                input_bounds=domain,
                regularizer=reg,
                lam=lam if reg is not None else 0.0,
                epochs=epochs,
                seed=0,
            )
            for name, reg in regularizers.items()
        }
        times: dict[str, list[float]] = {name: [] for name in trainers}
        for _ in range(epochs):
            for name, trainer in trainers.items():
                start = time.perf_counter()
                trainer.fit(1)
                times[name].append(time.perf_counter() - start)
        median = {name: float(np.median(t)) for name, t in times.items()}
        gaps = {name: exact_gap(trainers[name].network_, domain, X) for name in ("none", "lp")}
        gaps["dual"] = exact_gap(trainers["dual"].network_, domain, X)
        gaps["dual/2"] = exact_gap(trainers["dual/2"].network_, domain, X)
        relative, of_gap = dual_slack(trainers["dual"], regularizers["dual"].terms[1][1])
        ratio = {name: median[name] / median["none"] for name in median}
        print(
            f"{'-'.join(map(str, sizes)):>18} {median['none']:>9.4f} {ratio['bw']:>5.1f}x "
            f"{ratio['lp']:>5.1f}x {ratio['dual']:>5.1f}x {ratio['dual/2']:>5.1f}x "
            f"{np.median(relative):>14.2e} {np.quantile(relative, 0.9):>8.2e} "
            f"{np.median(of_gap):>13.2e} {np.quantile(of_gap, 0.9):>8.2e} "
            f"{gaps['none']:>9.4f} {gaps['lp']:>9.4f} {gaps['dual']:>9.4f} {gaps['dual/2']:>10.4f}"
        )


if __name__ == "__main__":
    main()
