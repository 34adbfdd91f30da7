"""Mini-batch Adam training of a ReLU network with a MILP-friendliness regularizer.

``Trainer(network, X, y, ...).fit()`` minimises ``loss + lam * R`` on targets min-max scaled
to [0, 1] and returns the best-validation network in the user's target units.  The
constructor only stores and checks parameters (scikit-learn style); ``fit`` does the work and
may be called again to continue from the current state (Adam moments included).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..box import InputBox, resolve_box
from ..checks import positive_float, positive_int
from ..errors import InputBoundsError
from ..network import Layer, Network, forward_cache
from ..options import LOSSES, LP_BACKENDS, LossName, LPBackend, check_option
from ..progress import progress_bar
from .adversarial import PGD
from .backprop import add_grads, backward, predict
from .context import RegContext
from .losses import CrossEntropyLoss, Loss, MSELoss, PinballLoss
from .optim import Adam
from .parameters import parameter_grads, parameters, with_parameters
from .regularizers import Regularizer
from .scaling import TargetScaling


@dataclass(frozen=True)
class EpochStats:
    """One epoch of training; losses are in training (scaled-target) units.

    Attributes
    ----------
    epoch : int
        1-based, counted over every ``fit`` call.
    train_loss : float
        Mean prediction loss over the epoch's mini-batches (without the regularizer).
    val_loss : float or None
        Prediction loss on the validation set after the epoch (None without validation).
    regularizer : float
        Mean regularizer value over the mini-batches, before multiplying by ``lam`` (0
        without a regularizer or with ``lam = 0``, when it is not evaluated).
    seconds : float
        Wall time of the epoch.
    lp_failures : int
        LP solves of the regularizer that failed and were skipped.
    """

    epoch: int
    train_loss: float
    val_loss: float | None
    regularizer: float
    seconds: float
    lp_failures: int


@dataclass(frozen=True)
class TrainResult:
    """What one ``fit`` call produced.

    Attributes
    ----------
    network : Network
        Best-validation weights of this call (last epoch without validation), predicting in
        the user's target units.
    history : list of EpochStats
        The epochs of this call.
    best_epoch : int or None
        Epoch whose weights ``network`` holds (None if no epoch ran).
    """

    network: Network
    history: list[EpochStats]
    best_epoch: int | None


def _data(name: str, X, y, network: Network, loss: str) -> tuple[np.ndarray, np.ndarray]:
    """Check one (X, y) pair against the network; returns float arrays X (n, d), y (n, m)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != network.n_inputs:
        raise ValueError(f"{name}: X has shape {X.shape}, expected (n, {network.n_inputs})")
    y = y.reshape(-1, 1) if y.ndim == 1 else y
    n_out = network.n_outputs
    allowed = {"pinball": (n_out, 1), "cross_entropy": (1,)}.get(loss, (n_out,))
    if loss == "cross_entropy" and y.ndim == 2 and y.shape[1] == 1:
        labels = y[:, 0]
        if not (np.all(labels == np.round(labels)) and np.all((labels >= 0) & (labels < n_out))):
            raise ValueError(f"{name}: y must hold class indices 0..{n_out - 1}")
    if y.ndim != 2 or y.shape[0] != X.shape[0] or y.shape[1] not in allowed:
        raise ValueError(
            f"{name}: y has shape {y.shape}, expected ({X.shape[0]}, {n_out})"
            + (" or one column" if loss == "pinball" else "")
        )
    if X.shape[0] == 0:
        raise ValueError(f"{name}: no samples")
    for part, array in (("X", X), ("y", y)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name}: {part} contains NaN or infinite values")
    return X, y


class Trainer:
    """Train a ReLU network for accuracy and for an easy MILP.

    Parameters
    ----------
    network : Network
        Starting weights, predicting in the user's target units (e.g. ``Network.mlp`` or a
        network read from ONNX).
    X, y : array-like
        Training inputs (n, n_inputs) and targets (n,) or (n, n_outputs); for the pinball
        loss one target column may be shared by all outputs.
    input_bounds : box, optional
        The input box of the MILP, over which bound-based regularizers act.  Defaults to the
        network's own input bounds; required when the regularizer uses bounds.
    validation : (X_val, y_val), optional
        Held-out data for best-validation restore.
    loss : {"mse", "pinball", "cross_entropy"}
        ``"cross_entropy"`` trains a classifier: one logit per class, ``y`` the class index
        of each sample.
    quantiles : sequence of float in (0, 1), optional
        One quantile level per output; required for ``loss="pinball"``.
    regularizer : Regularizer, optional
        E.g. ``BoundWidth() + LPGap()``.
    lam : float
        Weight of the regularizer.
    epochs, batch_size, lr, seed :
        Adam settings and the seed of the shuffling / subsampling rng.
    scale_targets : bool
        Train on targets min-max scaled to [0, 1] (the exported network is unscaled); not
        for ``"cross_entropy"``, whose targets are classes.
    lp_backend : {"highs", "pyomo"}
        Backend of the LP solves of :class:`LPGap`.
    adversarial : PGD, optional
        Adversarial training: every mini-batch is replaced by the points its PGD attack finds
        in each sample's eps-ball (clipped to the input box), for the loss and the
        regularizer alike (``docs/training.md``).
    progress : bool
        Show a tqdm progress bar over epochs.
    """

    def __init__(
        self,
        network: Network,
        X,
        y,
        *,
        input_bounds=None,
        validation=None,
        loss: LossName = "mse",
        quantiles=None,
        regularizer: Regularizer | None = None,
        lam: float = 0.0,
        epochs: int = 200,
        batch_size: int = 64,
        lr: float = 1e-3,
        seed: int | None = 0,
        scale_targets: bool = True,
        lp_backend: LPBackend = "highs",
        progress: bool = False,
        adversarial: PGD | None = None,
    ) -> None:
        if not isinstance(network, Network):
            raise ValueError(f"network must be a Network, got {type(network).__name__}")
        check_option("loss", loss, LOSSES)
        if regularizer is not None and not isinstance(regularizer, Regularizer):
            raise ValueError(
                "regularizer must be a Regularizer (e.g. BoundWidth()) or None, "
                f"got {regularizer!r}"
            )
        check_option("lp_backend", lp_backend, LP_BACKENDS)
        self.network = network
        self.loss = loss
        self.X, self.y = _data("training data", X, y, network, loss)
        self.validation = None
        if validation is not None:
            if not isinstance(validation, (tuple, list)) or len(validation) != 2:
                raise ValueError("validation must be a pair (X_val, y_val)")
            self.validation = _data("validation", *validation, network, loss)
        self.quantiles = self._check_quantiles(quantiles, loss, network.n_outputs)
        self.regularizer = regularizer
        self.lam = positive_float("lam", lam, allow_zero=True)
        self.epochs = positive_int("epochs", epochs, allow_zero=True)
        self.batch_size = positive_int("batch_size", batch_size)
        if len(self.X) < self.batch_size:
            warnings.warn(
                f"training data has only {len(self.X)} samples, fewer than one mini-batch of "
                f"{self.batch_size}: the network will fit these points and little else",
                stacklevel=2,
            )
        self.lr = positive_float("lr", lr)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        self.seed = seed
        self.scale_targets = bool(scale_targets)
        self.lp_backend = lp_backend
        self.progress = bool(progress)
        if adversarial is not None and not isinstance(adversarial, PGD):
            raise ValueError(f"adversarial must be a PGD or None, got {adversarial!r}")
        self.adversarial = adversarial
        self.input_bounds = self._check_box(input_bounds, network, regularizer)
        if self.scale_targets and network.layers[-1].kind != "linear":
            raise ValueError(
                "scale_targets=True needs a linear last layer to fold the scaling into; "
                "pass scale_targets=False for a network ending in a ReLU"
            )
        self._layers: tuple[Layer, ...] | None = None

    @staticmethod
    def _check_quantiles(quantiles, loss: str, n_outputs: int) -> tuple[float, ...] | None:
        if loss != "pinball":
            if quantiles is not None:
                raise ValueError('quantiles are only used with loss="pinball"')
            return None
        if quantiles is None:
            raise ValueError('loss="pinball" needs quantiles=[...], one level per output')
        q = np.atleast_1d(np.asarray(quantiles, dtype=np.float64))
        if q.ndim != 1 or q.size != n_outputs or not np.all((q > 0.0) & (q < 1.0)):
            raise ValueError(
                f"quantiles must be {n_outputs} levels in (0, 1), one per output, got {quantiles!r}"
            )
        return tuple(q.tolist())

    @staticmethod
    def _check_box(input_bounds, network: Network, regularizer) -> InputBox | None:
        if input_bounds is None and network.input_bounds is None:
            if regularizer is not None and regularizer.uses_bounds:
                raise InputBoundsError(
                    f"input_bounds are required for {regularizer!r} (bounds are taken over the "
                    f"input box); pass input_bounds or a network that carries them"
                )
            return None
        return resolve_box(input_bounds, network)

    # ------------------------------------------------------------------ state
    def _start(self) -> None:
        """Create the learned state on the first ``fit``."""
        self.scaling_ = (
            TargetScaling.min_max(self.y, self.network.n_outputs)
            if self.scale_targets and self.loss != "cross_entropy"
            else TargetScaling.identity(self.network.n_outputs)
        )
        losses = {"mse": MSELoss, "cross_entropy": CrossEntropyLoss}
        self.loss_: Loss = (
            losses[self.loss]() if self.loss in losses else PinballLoss(self.quantiles)
        )
        self.optimizer_ = Adam(self.lr)
        self.rng_ = np.random.default_rng(self.seed)
        self.history_: list[EpochStats] = []
        self.steps_ = 0
        self._layers = self.scaling_.unfold(self.network.layers)
        self._y_train = self.scaling_.to_training(self.y)
        self._y_val = (
            None if self.validation is None else self.scaling_.to_training(self.validation[1])
        )

    @property
    def network_(self) -> Network:
        """The current network in user units (after ``fit``: the returned best weights).

        It carries the training input box as its input bounds when one is known.
        """
        if self._layers is None:
            raise RuntimeError("the trainer is not fitted yet; call fit() first")
        network = self.network.with_layers(self.scaling_.fold(self._layers))
        if self.input_bounds is None:
            return network
        return network.with_input_bounds(*self.input_bounds)

    def predict(self, X) -> np.ndarray:
        """Predictions of the current weights in user units, shape (n, n_outputs)."""
        if self._layers is None:
            raise RuntimeError("the trainer is not fitted yet; call fit() first")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.network.n_inputs:
            raise ValueError(f"X has shape {X.shape}, expected (n, {self.network.n_inputs})")
        return self.scaling_.to_user(predict(self._layers, X))

    def restore(self, network: Network) -> None:
        """Continue training from ``network``'s weights (same architecture; its activations
        and ties are taken from the trainer's network), with fresh Adam moments: how the
        refinement loop backs off to its last in-budget checkpoint."""
        if self._layers is None:
            self._start()
        if network.widths != self.network.widths:
            raise ValueError(
                f"restore: network has widths {network.widths}, the trainer {self.network.widths}"
            )
        # activations and ties come from the trainer's network, whatever the file kept (a
        # float32 file, or one written before ties were stored, has none)
        self._layers = self.scaling_.unfold(network.with_structure_of(self.network).layers)
        self.optimizer_ = Adam(self.lr)

    def state(self) -> dict[str, np.ndarray]:
        """What training continues from, as named arrays: the parameters in training units
        (``parameter_0``, ...), Adam's step count and moments (``adam_*``), the random
        generator's state (``rng``), the step counter (``steps``) and the regularizer's own
        state (``regularizer.*``: an :class:`LPGap`'s dual-network slopes).

        :meth:`load_state` on a trainer built with the same arguments continues exactly where
        this one is: a refinement saves it beside each checkpoint so that a resumed run is the
        run that was interrupted.  Not included: the epoch count (``history_``).
        """
        if self._layers is None:
            self._start()
        arrays = {f"parameter_{i}": p for i, p in enumerate(parameters(self._layers))}
        arrays.update({f"adam_{k}": v for k, v in self.optimizer_.state().items()})
        arrays["rng"] = np.array(json.dumps(self.rng_.bit_generator.state))
        arrays["steps"] = np.array(self.steps_)
        if self.regularizer is not None:
            arrays.update({f"regularizer.{k}": v for k, v in self.regularizer.state().items()})
        return arrays

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from :meth:`state`'s arrays (unlike :meth:`restore`, Adam's moments and
        the random state come back too).  Raises ValueError naming what does not fit."""
        if self._layers is None:
            self._start()
        current = parameters(self._layers)
        try:
            params = [
                np.array(state[f"parameter_{i}"], dtype=np.float64) for i in range(len(current))
            ]
            rng, steps = json.loads(str(state["rng"])), int(state["steps"])
        except KeyError as exc:
            raise ValueError(f"the training state lacks {exc.args[0]!r}") from None
        for i, (own, saved) in enumerate(zip(current, params)):
            if own.shape != saved.shape:
                raise ValueError(
                    f"the training state's parameter {i} has shape {saved.shape}, the "
                    f"network's {own.shape}"
                )
        optimizer = Adam(self.lr)
        optimizer.load_state({k[5:]: v for k, v in state.items() if k.startswith("adam_")})
        self._layers = with_parameters(self._layers, params)
        self.optimizer_, self.steps_ = optimizer, steps
        self.rng_.bit_generator.state = rng
        if self.regularizer is not None:
            prefix = "regularizer."
            own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if own:
                self.regularizer.load_state(own)

    def held_out_loss(self, network: Network) -> float:
        """``network``'s prediction loss on the validation data (else the training data), in
        the units training reports (scaled targets): what a loss budget compares."""
        if self._layers is None:
            self._start()
        X, y = (
            (self.X, self._y_train)
            if self.validation is None
            else (self.validation[0], self._y_val)
        )
        return float(self.loss_(predict(self.scaling_.unfold(network.layers), X), y)[0])

    # ------------------------------------------------------------------ training
    def _step(
        self, X: np.ndarray, y: np.ndarray, rows: np.ndarray | None = None
    ) -> tuple[float, float, int]:
        """One Adam step on a mini-batch (``rows`` of the training set, if known); returns
        loss, regularizer value, LP failures."""
        if self.adversarial is not None:  # the batch's worst points in its eps-balls
            lo, hi = self.input_bounds if self.input_bounds is not None else (None, None)
            X = self.adversarial.attack(self._layers, X, y, self.loss_, lo, hi, self.rng_)
        forward = forward_cache(self._layers, X)
        loss, d_out = self.loss_(forward[0], y)
        reg_value, reg_grads, failures = 0.0, None, 0
        if self.regularizer is not None and self.lam > 0.0:
            lo, hi = self.input_bounds if self.input_bounds is not None else (None, None)
            ctx = RegContext(
                self._layers, lo, hi, X, self.rng_, self.lp_backend, rows=rows,
                forward=forward, defer_output=True, output_scale=self.scaling_.scale,
                step=self.steps_,
            )  # fmt: skip
            reg_value, reg_grads = self.regularizer.value_and_grad(ctx)
            failures = ctx.lp_failures
            if ctx.output_seed is not None:  # one backward pass for the loss and the gap
                d_out = d_out + self.lam * ctx.output_seed
        grads = backward(self._layers, forward[1], forward[2], d_out)
        if reg_grads is not None:
            grads = add_grads(grads, reg_grads, self.lam)
        params = parameters(self._layers)
        new = self.optimizer_.step(params, parameter_grads(self._layers, grads))
        self._layers = with_parameters(self._layers, new)
        self.steps_ += 1
        return loss, reg_value, failures

    def _epoch(self) -> EpochStats:
        start = time.perf_counter()
        order = self.rng_.permutation(len(self.X))
        losses, regs, failures = [], [], 0
        for i in range(0, len(order), self.batch_size):
            rows = order[i : i + self.batch_size]
            loss, reg, fails = self._step(self.X[rows], self._y_train[rows], rows)
            losses.append(loss)
            regs.append(reg)
            failures += fails
        val = None
        if self.validation is not None:
            val = self.loss_(predict(self._layers, self.validation[0]), self._y_val)[0]
        return EpochStats(
            len(self.history_) + 1,
            float(np.mean(losses)),
            val,
            float(np.mean(regs)),
            time.perf_counter() - start,
            failures,
        )

    def fit(self, epochs: int | None = None) -> TrainResult:
        """Train for ``epochs`` (default: the constructor's) more epochs.

        The first call initialises the state; later calls continue it.  At the end the
        state is set to the best-validation weights of this call, which are returned.
        """
        epochs = self.epochs if epochs is None else positive_int("epochs", epochs, allow_zero=True)
        if self._layers is None:
            self._start()
        records: list[EpochStats] = []
        best, best_epoch, best_val = self._layers, None, np.inf
        bar = progress_bar(epochs, "training", "epoch", show=self.progress)
        for _ in range(epochs):
            record = self._epoch()
            records.append(record)
            self.history_.append(record)
            bar.update(1)
            bar.show(loss=record.train_loss, val=record.val_loss, reg=record.regularizer)
            if record.val_loss is None or record.val_loss < best_val:
                best, best_epoch = self._layers, record.epoch
                best_val = np.inf if record.val_loss is None else record.val_loss
        bar.close()
        self._layers = best
        self.best_epoch_ = best_epoch
        return TrainResult(self.network_, records, best_epoch)
