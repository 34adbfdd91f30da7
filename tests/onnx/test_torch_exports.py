"""Convolutions, pools, piecewise linear activations, maxima and minima (MaxPool, ReduceMax,
ReduceMin, Max, Min) and skip connections read from ONNX.

Torch exports here (both exporters), hand-built graphs in ``tests/onnx/test_hand_built_graphs.py``.
Each graph is folded into the package's normal form (affine layers with ReLU or linear
neurons, see ``pyomo_nnrelax.onnx.values``) and checked against onnxruntime on random inputs.
Tolerances: float32 models (torch exports, and hand-built graphs of ops that onnxruntime runs
in float32 only: Conv, ConvTranspose, AveragePool, HardSigmoid) rtol 1e-5 with an absolute
slack of 1e-5 times the output scale; hand-built float64 graphs 1e-9.  Every layer's weight
tie is checked, and for convolutions that the kernel stays shared: re-reading the graph with
another kernel gives weights that the first network's tie reaches with its fixed entries kept.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import onnx
import pytest

from pyomo_nnrelax import Network
from pyomo_nnrelax.onnx import read_onnx
from tests.support.onnx_graphs import (
    RNG,
    assert_in_tie_family,
    assert_matches,
)
from tests.support.torch_export import export_layers, requires_torch

try:
    import torch
except ImportError:  # only the torch tests are skipped (see tests.support.torch_export)
    torch = None


def torch_check(module, input_shape, tmp_path, dynamo=False, name="m") -> Network:
    path = tmp_path / f"{name}_{dynamo}.onnx"
    export_layers(module, input_shape, path, dynamo)
    network = read_onnx(path)
    X = RNG.normal(size=(7, *input_shape))
    assert network.input_shape == tuple(input_shape)
    assert_matches(network, path, X)
    with torch.no_grad():
        expected = module(torch.tensor(X, dtype=torch.float32)).numpy().reshape(len(X), -1)
    np.testing.assert_allclose(network.forward(X), expected, rtol=1e-4, atol=1e-4)
    return network


def seeded(seed: int, build):
    torch.manual_seed(seed)
    return build().eval()


def assert_parameters_are(layer, weight) -> None:
    """The tie's parameters are the values of the torch ``weight`` (a kernel or a Linear's
    matrix), each once: the layer's entries are built from them, not merely checked."""
    theta = layer.tie.parameters(layer.entries)
    expected = weight.detach().numpy().ravel()
    np.testing.assert_allclose(np.sort(theta), np.sort(expected), rtol=1e-6, atol=1e-7)


# ====================================================================== torch: convolutions
CONV_CASES = {
    "conv2d_pad_stride_bias": lambda: torch.nn.Conv2d(2, 3, 3, stride=2, padding=1),
    "conv2d_dilation_groups": lambda: torch.nn.Conv2d(4, 6, 3, dilation=2, groups=2, bias=False),
    "conv2d_same": lambda: torch.nn.Conv2d(2, 3, (3, 4), padding="same"),
    "conv2d_asymmetric": lambda: torch.nn.Conv2d(2, 2, (2, 3), stride=(1, 2), padding=(0, 2)),
    "conv1d": lambda: torch.nn.Conv1d(2, 3, 3, stride=2, padding=2, dilation=2, groups=1),
    "conv1d_groups": lambda: torch.nn.Conv1d(4, 4, 2, groups=4),
    "conv_transpose2d": lambda: torch.nn.ConvTranspose2d(
        2, 3, 3, stride=2, padding=1, output_padding=1
    ),
    "conv_transpose2d_groups": lambda: torch.nn.ConvTranspose2d(4, 2, 2, stride=1, groups=2),
}


def _conv_input(name: str) -> tuple[int, ...]:
    channels = 4 if "groups" in name or "dilation" in name else 2
    return (channels, 9) if "1d" in name else (channels, 5, 6)


@requires_torch
@pytest.mark.parametrize("name", sorted(CONV_CASES))
def test_torch_convolutions_match_onnxruntime_and_share_their_kernel(tmp_path, name):
    shape = _conv_input(name)
    conv = seeded(0, CONV_CASES[name])
    network = torch_check(torch.nn.Sequential(conv, torch.nn.ReLU()), shape, tmp_path)

    layer = network.layers[0]
    assert layer.kind == "relu" and layer.tie is not None
    assert layer.tie.n_params == conv.weight.numel()  # the kernel, not the nonzeros
    assert np.count_nonzero(layer.tie.tied) > conv.weight.numel()
    assert_parameters_are(layer, conv.weight)
    other = seeded(1, CONV_CASES[name])
    second = torch_check(torch.nn.Sequential(other, torch.nn.ReLU()), shape, tmp_path, name="b")
    assert_in_tie_family(network, second)


@requires_torch
@pytest.mark.parametrize("dynamo", [False, True])
def test_conv_batchnorm_is_folded_into_one_layer(tmp_path, dynamo):
    def build():
        bn = torch.nn.BatchNorm2d(3)
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), bn, torch.nn.ReLU())

    network = torch_check(seeded(3, build), (2, 4, 4), tmp_path, dynamo)

    assert len(network.layers) == 1
    assert network.layers[0].tie.n_params == 3 * 2 * 9


# ====================================================================== torch: pools
POOL_CASES = {
    "avg_pad_include": lambda: torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=True),
    "avg_pad_exclude": lambda: torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
    "avg_ceil": lambda: torch.nn.AvgPool2d(2, stride=2, ceil_mode=True),
    "avg_global": lambda: torch.nn.AdaptiveAvgPool2d(1),
    "max_pad": lambda: torch.nn.MaxPool2d(3, stride=2, padding=1),
    "max_overlap": lambda: torch.nn.MaxPool2d(2, stride=1),
    "max_ceil": lambda: torch.nn.MaxPool2d(2, stride=2, ceil_mode=True),
    "max_dilated": lambda: torch.nn.MaxPool2d(2, stride=1, dilation=2),
    "max_1d": lambda: torch.nn.MaxPool1d(3, stride=2, padding=1),
    "max_global": lambda: torch.nn.AdaptiveMaxPool2d(1),
}


@requires_torch
@pytest.mark.parametrize("name", sorted(POOL_CASES))
def test_torch_pools_after_a_relu_match_onnxruntime(tmp_path, name):
    shape = (2, 9) if "1d" in name else (2, 5, 7)
    module = torch.nn.Sequential(torch.nn.ReLU(), POOL_CASES[name](), torch.nn.Flatten())

    network = torch_check(module, shape, tmp_path)

    if name.startswith("max"):
        assert any(layer.kind == "mixed" for layer in network.layers)  # the max trees
        assert all(layer.tie is None or layer.tie.n_params == 0 for layer in network.layers)


@requires_torch
@pytest.mark.parametrize("dynamo", [False, True])
def test_global_average_pool_after_a_conv_keeps_a_linear_map(tmp_path, dynamo):
    module = seeded(
        4,
        lambda: torch.nn.Sequential(
            torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
        ),
    )

    network = torch_check(module, (1, 5, 5), tmp_path, dynamo)

    assert [layer.kind for layer in network.layers] == ["linear"]


# ====================================================================== torch: activations
ACTIVATION_CASES = {
    "leaky": lambda: torch.nn.LeakyReLU(0.1),
    "leaky_steep": lambda: torch.nn.LeakyReLU(1.7),
    "leaky_negative": lambda: torch.nn.LeakyReLU(-0.4),
    "prelu_single": lambda: torch.nn.PReLU(),
    "relu6": lambda: torch.nn.ReLU6(),
    "hardtanh": lambda: torch.nn.Hardtanh(-0.5, 0.8),
    "clamp_min": lambda: Clamp(min=-0.3),
    "clamp_max": lambda: Clamp(max=0.4),
}


class Clamp(torch.nn.Module if torch else object):
    def __init__(self, min=None, max=None):
        super().__init__()
        self.min, self.max = min, max

    def forward(self, x):
        return torch.clamp(x, min=self.min, max=self.max)


@requires_torch
@pytest.mark.parametrize("name", sorted(ACTIVATION_CASES))
def test_torch_piecewise_linear_activations_match_onnxruntime(tmp_path, name):
    module = seeded(
        5,
        lambda: torch.nn.Sequential(
            torch.nn.Linear(4, 6), ACTIVATION_CASES[name](), torch.nn.Linear(6, 2)
        ),
    )

    network = torch_check(module, (4,), tmp_path)

    first = network.layers[0]  # its rows of z, repeated, share the Linear's weights
    assert first.tie.n_params == 4 * 6 < first.n_out * first.n_in
    assert_parameters_are(first, module[0].weight)


@requires_torch
@pytest.mark.parametrize("dynamo", [False, True])
def test_per_channel_prelu_after_a_conv(tmp_path, dynamo):
    def build():
        prelu = torch.nn.PReLU(3)
        prelu.weight.data = torch.tensor([0.0, 0.25, 1.5])
        return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), prelu, torch.nn.Flatten())

    network = torch_check(seeded(6, build), (2, 4, 4), tmp_path, dynamo)

    # channel 0 (slope 0) needs no linear rows: 3 * 4 ReLU rows + 2 * 4 linear rows
    assert network.layers[0].n_out == 12 + 8
    assert network.layers[0].tie.n_params == 3 * 2 * 9


# ====================================================================== torch: maxima, Abs
class Head(torch.nn.Module if torch else object):
    """``f(self, x)``: a maximum, minimum or activation of convolutions ``conv`` and ``conv2``
    of the input, and of ``t``, a constant tensor (a clamp bound)."""

    def __init__(self, f):
        super().__init__()
        self.f = f
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.t = torch.nn.Parameter(torch.randn(3, 1, 5) * 0.3)

    def forward(self, x):
        return self.f(self, x)


#: name: (f, the op the exporter writes without dynamo, with dynamo)
HEAD_CASES = {
    "adaptive_max_pool": (
        lambda m, x: torch.nn.functional.adaptive_max_pool2d(m.conv(x), 1),
        "MaxPool",
        "ReduceMax",
    ),
    "amax": (lambda m, x: torch.amax(m.conv(x), dim=(2, 3)), "ReduceMax", "ReduceMax"),
    "amin_keepdim": (
        lambda m, x: torch.amin(m.conv(x), dim=1, keepdim=True),
        "ReduceMin",
        "ReduceMin",
    ),
    "max_values": (lambda m, x: torch.max(m.conv(x), dim=-1).values, "ReduceMax", "ReduceMax"),
    "maximum": (lambda m, x: torch.maximum(m.conv(x), m.conv2(x)), "Max", "Max"),
    "minimum": (lambda m, x: torch.minimum(m.conv(x), torch.relu(m.conv2(x))), "Min", "Min"),
    "clamp_tensor_min": (lambda m, x: torch.clamp(m.conv(x), min=m.t), "Max", "Max"),
    "clamp_tensor_both": (
        lambda m, x: torch.clamp(m.conv(x), min=m.t, max=m.t + 0.5),
        "Min",
        "Min",
    ),
    "abs": (lambda m, x: torch.abs(m.conv(x)), "Abs", "Abs"),
    "hardsigmoid": (
        lambda m, x: torch.nn.functional.hardsigmoid(m.conv(x)),
        "HardSigmoid",
        "HardSigmoid",
    ),
}


@requires_torch
@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize("name", sorted(HEAD_CASES))
def test_torch_maxima_minima_and_abs_match_onnxruntime(tmp_path, name, dynamo):
    f, op, dynamo_op = HEAD_CASES[name]
    module = seeded(12, lambda: Head(f))

    network = torch_check(module, (2, 4, 5), tmp_path, dynamo)

    ops = {node.op_type for node in onnx.load(tmp_path / f"m_{dynamo}.onnx").graph.node}
    assert (dynamo_op if dynamo else op) in ops
    n_kernels = 2 if name in ("maximum", "minimum") else 1
    assert network.layers[0].tie.n_params == n_kernels * 3 * 2 * 9  # the kernels stay shared


# ====================================================================== torch: skip connections
class Residual(torch.nn.Module if torch else object):
    def __init__(self, conv: bool):
        super().__init__()
        self.f = torch.nn.Conv2d(2, 2, 3, padding=1) if conv else torch.nn.Linear(6, 6)
        self.head = torch.nn.Linear(32 if conv else 6, 2)

    def forward(self, x):
        h = torch.relu(x)
        h = h + torch.relu(self.f(h))  # h is carried through the ReLU layer of f(h)
        return self.head(torch.flatten(h + self.f(h), 1))


class Dense(torch.nn.Module if torch else object):
    def __init__(self):
        super().__init__()
        self.f = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.g = torch.nn.Conv2d(5, 2, 1)

    def forward(self, x):
        h = torch.cat([x, torch.relu(self.f(x))], 1)
        return torch.cat([h, torch.relu(self.g(h))], 1).flatten(1)


class InputConvex(torch.nn.Module if torch else object):
    """``z_{k+1} = relu(W_k z_k + U_k x)``: the input passed to every layer."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.ModuleList([torch.nn.Linear(5, 5) for _ in range(2)])
        self.u = torch.nn.ModuleList([torch.nn.Linear(3, 5) for _ in range(3)])
        self.out = torch.nn.Linear(5, 1)

    def forward(self, x):
        z = torch.relu(self.u[0](x))
        for w, u in zip(self.w, self.u[1:]):
            z = torch.relu(w(z) + u(x))
        return self.out(z) + x.sum(1, keepdim=True)


@requires_torch
@pytest.mark.parametrize(
    "name, dynamo",
    [
        ("res_conv", False),
        ("res_conv", True),
        ("res_linear", False),
        ("dense", False),
        ("dense", True),
        ("convex", False),
        ("convex", True),
    ],
)
def test_skip_connections_match_onnxruntime(tmp_path, name, dynamo):
    build = {
        "res_conv": lambda: Residual(conv=True),
        "res_linear": lambda: Residual(conv=False),
        "dense": Dense,
        "convex": InputConvex,
    }[name]
    shape = {"res_conv": (2, 4, 4), "res_linear": (6,), "dense": (2, 3, 3), "convex": (3,)}[name]

    network = torch_check(seeded(7, build), shape, tmp_path, dynamo)

    assert any(layer.kind == "mixed" for layer in network.layers)  # carried skip paths
    if name != "res_linear":
        second = torch_check(seeded(8, build), shape, tmp_path, dynamo, name="b")
        assert_in_tie_family(network, second)


@requires_torch
@pytest.mark.parametrize("dynamo", [False, True])
def test_small_cnn_matches_onnxruntime_and_keeps_both_kernels_shared(tmp_path, dynamo):
    def build():
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, 3, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(3, 4, 3),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(16, 2),
        )

    network = torch_check(seeded(9, build), (1, 8, 8), tmp_path, dynamo)

    kinds = [layer.kind for layer in network.layers]
    assert kinds == ["relu", "mixed", "mixed", "relu", "linear"]  # two max-tree levels
    # the first convolution (12% of its entries stored) is sparse, the dense layer dense
    assert network.layers[0].is_sparse and not network.layers[4].is_sparse
    assert network.layers[0].tie.n_params == 3 * 9
    assert network.layers[3].tie.n_params == 4 * 3 * 9
    assert network.layers[4].tie is None  # an ordinary dense layer
    second = torch_check(seeded(10, build), (1, 8, 8), tmp_path, dynamo, name="b")
    assert_in_tie_family(network, second)


def mnist_cnn():
    """The MNIST network of Wong and Kolter (2017) that MIPVerify and Xiao et al. verify."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 4, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 4, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(1568, 100),
        torch.nn.ReLU(),
        torch.nn.Linear(100, 10),
    )


@requires_torch
@pytest.mark.parametrize("dynamo", [False, True])
def test_the_mnist_cnn_is_read_sparse_in_little_memory(tmp_path, dynamo):
    path = tmp_path / "mnist.onnx"
    export_layers(seeded(13, mnist_cnn), (1, 28, 28), path, dynamo)

    tracemalloc.start()
    network = read_onnx(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    # the dense reader peaked at 873 MB (two dense conv matrices and their tags)
    assert peak < 100e6, f"reading took {peak / 1e6:.0f} MB"
    assert network.widths == (784, 3136, 1568, 100, 10)
    assert [layer.is_sparse for layer in network.layers] == [True, True, False, False]
    assert [layer.tie.n_params for layer in network.layers[:2]] == [16 * 16, 32 * 16 * 16]
    assert network.layers[2].tie is None and network.layers[3].tie is None
    assert_matches(network, path, RNG.uniform(0.0, 1.0, size=(5, 1, 28, 28)))


@requires_torch
def test_a_plain_mlp_still_has_untied_layers(tmp_path):
    module = seeded(
        11,
        lambda: torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)),
    )

    network = torch_check(module, (3,), tmp_path)

    assert [layer.tie for layer in network.layers] == [None, None]
    assert network.widths == (3, 4, 2)
