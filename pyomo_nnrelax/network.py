"""The network model shared by the Pyomo block and the trainer.

A :class:`Network` is an immutable sequence of affine layers whose neurons are each followed
by a ReLU or by nothing (linear).  Every ONNX graph the package accepts is folded into this
form by :mod:`pyomo_nnrelax.onnx`: convolutions and pools are affine maps, LeakyReLU, clips and
max pools are sums of ReLUs, and skip connections are carried through by linear neurons
(``docs/design.md``, "One normal form"); nothing else in the package reads ONNX.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from math import prod
from typing import Literal

import numpy as np

from . import matrices
from .box import InputBox, as_input_box
from .errors import InputBoundsError, InvalidNetworkError
from .matrices import Matrix
from .ties import WeightTie

ACTIVATIONS = ("relu", "linear")
Storage = Literal["dense", "sparse", "auto"]


def _frozen(array: np.ndarray) -> np.ndarray:
    out = np.array(array, dtype=np.float64, copy=True)
    out.flags.writeable = False
    return out


def _frozen_matrix(weight) -> Matrix:
    """A read-only float64 copy of a dense or sparse weight (canonical CSR for sparse)."""
    if not matrices.is_sparse(weight):
        return _frozen(weight)
    csr = matrices.as_matrix(weight).copy()
    for array in (csr.data, csr.indices, csr.indptr):
        array.flags.writeable = False
    return csr


@dataclass(frozen=True, eq=False)
class Layer:
    """One affine map ``z = weight @ x + bias`` followed, neuron by neuron, by a ReLU or nothing.

    Parameters
    ----------
    weight : ndarray or scipy sparse matrix, shape (n_out, n_in)
        Dense, or sparse (kept as CSR: its stored entries are the layer's pattern, which
        training never changes; :mod:`pyomo_nnrelax.matrices`).  Convolutions and pools
        are read sparse.
    bias : ndarray, shape (n_out,)
    activation : {"relu", "linear"} or bool array (n_out,)
        The same for every neuron, or per neuron (True: ReLU, False: linear), as the layers
        a skip connection, a LeakyReLU or a clip is folded into have.  A mask that is all
        True or all False is stored as "relu" or "linear".
    tie : WeightTie, optional
        Shared and fixed entries of ``weight`` (a convolution's kernel, a skip path's
        identity), which the trainer keeps; None: every entry is free.  Its arrays are
        shaped like :attr:`entries`.
    bias_tie : WeightTie, optional
        The bias as parameters the trainer keeps shared (a convolution's bias, one per
        channel, at every position); None: every bias entry is free.
    """

    weight: np.ndarray
    bias: np.ndarray
    activation: str | np.ndarray = "relu"
    tie: WeightTie | None = None
    bias_tie: WeightTie | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", _frozen_matrix(self.weight))
        object.__setattr__(self, "bias", _frozen(self.bias))
        if self.weight.ndim != 2:
            raise InvalidNetworkError(f"layer weight must be 2-D, got shape {self.weight.shape}")
        if self.bias.shape != (self.weight.shape[0],):
            raise InvalidNetworkError(
                f"layer bias has shape {self.bias.shape}, expected ({self.weight.shape[0]},) "
                f"to match weight shape {self.weight.shape}"
            )
        object.__setattr__(self, "activation", _activation(self.activation, self.n_out))
        if self.tie is not None:
            if not isinstance(self.tie, WeightTie):
                raise InvalidNetworkError(f"tie is a {type(self.tie).__name__}, not a WeightTie")
            self.tie.check(self.entries, "layer")
        if self.bias_tie is not None:
            if not isinstance(self.bias_tie, WeightTie):
                raise InvalidNetworkError(
                    f"bias_tie is a {type(self.bias_tie).__name__}, not a WeightTie"
                )
            self.bias_tie.check(self.bias, "layer bias")

    @property
    def is_sparse(self) -> bool:
        """Whether the weight is stored sparse."""
        return not isinstance(self.weight, np.ndarray)

    @property
    def entries(self) -> np.ndarray:
        """What training updates: the weight itself, or a sparse weight's stored values."""
        return self.weight if isinstance(self.weight, np.ndarray) else self.weight.data

    @cached_property
    def outer_plan(self) -> matrices.OuterPlan | None:
        """How a sparse layer's weight gradient is gathered (None for a dense layer); made
        once per pattern, kept by the copies training makes."""
        return matrices.OuterPlan.of(self.weight) if self.is_sparse else None

    @property
    def relu_mask(self) -> np.ndarray:
        """Which neurons are followed by a ReLU (bool array of shape (n_out,))."""
        if isinstance(self.activation, np.ndarray):
            return self.activation
        return np.full(self.n_out, self.activation == "relu")

    @property
    def kind(self) -> str:
        """ "relu", "linear" or "mixed" (some neurons of each)."""
        return "mixed" if isinstance(self.activation, np.ndarray) else self.activation

    @property
    def has_relu(self) -> bool:
        """Whether any neuron of the layer is followed by a ReLU."""
        return self.kind != "linear"

    def activate(self, z: np.ndarray) -> np.ndarray:
        """The layer's activation applied to pre-activations ``z`` (..., n_out)."""
        if self.kind == "relu":
            return np.maximum(z, 0.0)
        if self.kind == "linear":
            return z
        return np.where(self.activation, np.maximum(z, 0.0), z)

    def passes(self, z: np.ndarray) -> np.ndarray:
        """Where the activation passes its input on (its slope, 1 or 0, at ``z``; 0 at a
        ReLU's kink): what backpropagation multiplies by."""
        if self.kind == "relu":
            return z > 0.0
        if self.kind == "linear":
            return np.ones(np.shape(z), dtype=bool)
        return (z > 0.0) | ~self.activation

    def with_weights(self, weight: Matrix, bias: np.ndarray) -> Layer:
        """The same layer (activations and ties) with new weights."""
        return Layer(weight, bias, self.activation, self.tie, self.bias_tie)

    def with_entries(self, values: np.ndarray, bias: np.ndarray) -> Layer:
        """The same layer with new :attr:`entries` (a sparse layer keeps its pattern)."""
        return self.with_weights(matrices.with_entries(self.weight, values), bias)

    def with_tied_parameters(self, theta: np.ndarray, bias: np.ndarray) -> Layer:
        """The same layer with entries ``tie.weight(theta)`` and a new bias.

        The weight follows the tie by construction, so it is not checked again: the
        trainer's step, where the check would cost as much as the update.
        """
        bias = _frozen(bias)
        if bias.shape != self.bias.shape:
            raise InvalidNetworkError(f"bias has shape {bias.shape}, expected {self.bias.shape}")
        layer = copy.copy(self)  # a frozen dataclass: copied without __post_init__
        weight = matrices.with_entries(self.weight, self.tie.weight(theta))
        object.__setattr__(layer, "weight", _frozen_matrix(weight))
        object.__setattr__(layer, "bias", bias)
        return layer

    def in_storage(self, storage: Storage) -> Layer:
        """The same layer stored dense, sparse, or as :func:`~pyomo_nnrelax.matrices.choose_form`
        decides ("auto"); a tie moves with the entries it describes.  A dense weight's sparse
        pattern holds its nonzeros and every entry its tie relates to a parameter."""
        if storage == "auto":
            storage = "sparse" if matrices.is_sparse(matrices.choose_form(self.weight)) else "dense"
        if storage not in ("dense", "sparse"):
            raise ValueError(f"storage must be one of ('dense', 'sparse', 'auto'), got {storage!r}")
        if (storage == "sparse") == self.is_sparse:
            return self
        if storage == "dense":
            dense = matrices.to_dense(self.weight)
            tie = None if self.tie is None else self.tie.scattered(self.weight, dense.shape)
            return Layer(dense, self.bias, self.activation, tie, self.bias_tie)
        keep = self.weight != 0.0
        if self.tie is not None:
            keep |= self.tie.tied
        rows, cols = np.nonzero(keep)
        weight = matrices.from_entries(self.weight.shape, rows, cols, self.weight[rows, cols])
        tie = None if self.tie is None else self.tie.gathered(rows, cols)
        return Layer(weight, self.bias, self.activation, tie, self.bias_tie)

    @property
    def n_in(self) -> int:
        return self.weight.shape[1]

    @property
    def n_out(self) -> int:
        return self.weight.shape[0]

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Layer)
            and np.array_equal(self.relu_mask, other.relu_mask)
            and matrices.equal(self.weight, other.weight)
            and np.array_equal(self.bias, other.bias)
        )

    __hash__ = None  # type: ignore[assignment]


def _activation(activation, n_out: int) -> str | np.ndarray:
    """A layer's activation as "relu", "linear" or a read-only per-neuron ReLU mask."""
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise InvalidNetworkError(
                f"unknown activation {activation!r}; expected one of {ACTIVATIONS} "
                "or a boolean mask per neuron"
            )
        return activation
    mask = np.asarray(activation)
    if mask.dtype != np.bool_ or mask.shape != (n_out,):
        raise InvalidNetworkError(
            f"a per-neuron activation must be a bool array of shape ({n_out},), "
            f"got {mask.dtype} of shape {mask.shape}"
        )
    if mask.all() or not mask.any():
        return "relu" if mask.all() else "linear"
    mask = mask.copy()
    mask.flags.writeable = False
    return mask


@dataclass(frozen=True, eq=False)
class Network:
    """A ReLU network: a chain of affine layers whose neurons are ReLU or linear one by one.

    Parameters
    ----------
    layers : sequence of Layer
        Applied in order; ``layers[i].n_out == layers[i+1].n_in``.
    input_shape, output_shape : tuple of int, optional
        Shape of one sample (no batch dimension); inputs are flattened row-major.
        Default: flat vectors.
    input_name, output_name : str
        Names of the ONNX graph's input and output, kept on a round trip.
    input_bounds : InputBox or (lo, hi) pairs, optional
        A box over the flattened input, e.g. read from the ONNX file's metadata; kept as an
        :class:`~pyomo_nnrelax.box.InputBox` (read by :func:`~pyomo_nnrelax.box.as_input_box`).
    origin : object, optional
        Where the reader found every parameter in the graph it read
        (:class:`pyomo_nnrelax.onnx.origin.GraphOrigin`), so that a trained network can be
        written back as that graph with new initializers; kept by every copy with new
        weights, ignored by comparisons.
    """

    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()
    input_name: str = "input"
    output_name: str = "output"
    input_bounds: InputBox | None = field(default=None)
    origin: object | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        if not layers:
            raise InvalidNetworkError("a network needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise InvalidNetworkError(f"layer {i} is a {type(layer).__name__}, not a Layer")
            for name, array in (("weight", layer.entries), ("bias", layer.bias)):
                if not np.all(np.isfinite(array)):
                    raise InvalidNetworkError(f"layer {i} {name} contains NaN or infinite values")
            if i and layer.n_in != layers[i - 1].n_out:
                raise InvalidNetworkError(
                    f"layer {i} takes {layer.n_in} inputs but layer {i - 1} gives "
                    f"{layers[i - 1].n_out}"
                )
        object.__setattr__(self, "layers", layers)
        in_shape = tuple(int(d) for d in self.input_shape) or (layers[0].n_in,)
        out_shape = tuple(int(d) for d in self.output_shape) or (layers[-1].n_out,)
        if prod(in_shape) != layers[0].n_in:
            raise InvalidNetworkError(
                f"input_shape {in_shape} has {prod(in_shape)} entries, "
                f"layer 0 takes {layers[0].n_in}"
            )
        if prod(out_shape) != layers[-1].n_out:
            raise InvalidNetworkError(
                f"output_shape {out_shape} has {prod(out_shape)} entries, "
                f"the last layer gives {layers[-1].n_out}"
            )
        object.__setattr__(self, "input_shape", in_shape)
        object.__setattr__(self, "output_shape", out_shape)
        if self.input_bounds is not None:
            box = as_input_box(self.input_bounds, layers[0].n_in)
            object.__setattr__(self, "input_bounds", box)

    # ------------------------------------------------------------------ construction
    @classmethod
    def mlp(
        cls,
        sizes: Sequence[int],
        seed: int | None = 0,
        input_bounds=None,
    ) -> Network:
        """A ReLU MLP with He-uniform random weights, e.g. ``Network.mlp([2, 25, 25, 1])``.

        Hidden layers use ReLU and the last layer is linear.

        >>> net = Network.mlp([2, 3, 1], seed=0)
        >>> net
        Network(widths=(2, 3, 1), activations='rl')
        >>> net.forward([[0.5, -0.5]]).round(6)
        array([[0.959158]])
        """
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise InvalidNetworkError(f"sizes must list at least two positive widths, got {sizes}")
        rng = np.random.default_rng(seed)
        layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            limit = np.sqrt(6.0 / n_in)
            layers.append(
                Layer(
                    rng.uniform(-limit, limit, size=(n_out, n_in)),
                    rng.uniform(-0.1, 0.1, size=n_out),
                    "linear" if i == len(sizes) - 2 else "relu",
                )
            )
        return cls(tuple(layers), input_bounds=input_bounds)

    def with_layers(self, layers: Sequence[Layer]) -> Network:
        """A copy with new layers (e.g. trained weights) and the same names, shapes, bounds and
        origin."""
        return replace(self, layers=tuple(layers))

    def with_structure_of(self, template: Network) -> Network:
        """A copy with ``template``'s per-neuron activations and weight ties.

        A network read back from a file has the ties its metadata kept, if any (a float32
        file cannot keep every tie); a checkpoint gets its structure from the network it
        was trained from this way.  Widths and ReLU masks must agree, and each weight must
        follow the template's tie; otherwise :class:`InvalidNetworkError` names the layer.
        """
        if template.widths != self.widths:
            raise InvalidNetworkError(
                f"widths {self.widths} differ from the template's {template.widths}"
            )
        layers = []
        for l, (own, other) in enumerate(zip(self.layers, template.layers)):
            if not np.array_equal(own.relu_mask, other.relu_mask):
                raise InvalidNetworkError(f"layer {l}: its ReLU neurons differ from the template's")
            try:
                layers.append(other.with_weights(_in_form_of(own.weight, other.weight), own.bias))
            except InvalidNetworkError as exc:
                raise InvalidNetworkError(f"layer {l}: {exc}") from None
        return replace(self, layers=tuple(layers), origin=self.origin or template.origin)

    def in_storage(self, storage: Storage) -> Network:
        """The same network with every layer stored ``"dense"``, ``"sparse"`` or, by its
        share of stored entries, ``"auto"`` (:meth:`Layer.in_storage`)."""
        return self.with_layers([layer.in_storage(storage) for layer in self.layers])

    def with_input_bounds(self, lower, upper) -> Network:
        """A copy that carries the input box ``[lower, upper]``."""
        return replace(self, input_bounds=InputBox(lower, upper))

    # ------------------------------------------------------------------ evaluation
    @property
    def n_inputs(self) -> int:
        return self.layers[0].n_in

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].n_out

    @property
    def widths(self) -> tuple[int, ...]:
        """Input width followed by every layer's output width, e.g. ``(2, 25, 25, 1)``."""
        return (self.n_inputs,) + tuple(layer.n_out for layer in self.layers)

    def _flat_inputs(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.shape == self.input_shape or X.ndim == 1 and X.size == self.n_inputs:
            X = X.reshape(1, -1)
        X = X.reshape(X.shape[0], -1) if X.ndim > 2 else X
        if X.ndim != 2 or X.shape[1] != self.n_inputs:
            raise InputBoundsError(
                f"inputs have shape {np.shape(X)}; expected (n, {self.n_inputs}) "
                f"or (n, *{self.input_shape})"
            )
        return X

    def pre_activations(self, X) -> list[np.ndarray]:
        """Every layer's pre-activation ``z`` for a batch ``X``, each of shape (n, n_out)."""
        return forward_cache(self.layers, self._flat_inputs(X))[2]

    def forward(self, X) -> np.ndarray:
        """Network outputs, shape (n, n_outputs), for a batch ``X`` (n, n_inputs) or
        (n, *input_shape)."""
        return self.layers[-1].activate(self.pre_activations(X)[-1])

    __call__ = forward

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Network)
            and len(self.layers) == len(other.layers)
            and all(a == b for a, b in zip(self.layers, other.layers))
            and self.input_shape == other.input_shape
            and self.output_shape == other.output_shape
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        acts = "".join({"relu": "r", "linear": "l", "mixed": "m"}[l.kind] for l in self.layers)
        return f"Network(widths={self.widths}, activations={acts!r})"


def _in_form_of(weight: Matrix, template: Matrix) -> Matrix:
    """``weight`` in the form (dense, or sparse with the same pattern) of ``template``; a
    nonzero outside a sparse template's pattern is an :class:`InvalidNetworkError`."""
    if not matrices.is_sparse(template):
        return matrices.to_dense(weight)
    same = matrices.is_sparse(weight) and weight.nnz == template.nnz
    if same and np.array_equal(weight.indptr, template.indptr):
        if np.array_equal(weight.indices, template.indices):
            return matrices.with_entries(template, weight.data)
    dense = matrices.to_dense(weight)
    rows = matrices.entry_rows(template)
    outside = dense.copy()
    outside[rows, template.indices] = 0.0
    if np.any(outside):
        raise InvalidNetworkError("the weight has nonzeros outside the template's sparse pattern")
    return matrices.with_entries(template, dense[rows, template.indices])


def forward_cache(
    layers: Sequence[Layer], X: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Outputs of the stack for a batch, with every layer's input and pre-activation (what
    :func:`pyomo_nnrelax.training.backprop.backward` needs).

    Returns
    -------
    out : ndarray (n, n_outputs)
    inputs : list of ndarray
        ``inputs[l]`` is the input of layer ``l`` (``inputs[0] = X``).
    pre : list of ndarray
        ``pre[l]`` is the pre-activation ``z`` of layer ``l``.
    """
    h = np.asarray(X, dtype=np.float64)
    inputs, pre = [], []
    for layer in layers:
        inputs.append(h)
        z = matrices.times_transpose(h, layer.weight) + layer.bias
        pre.append(z)
        h = layer.activate(z)
    return h, inputs, pre
