"""Every layer type the reader supports, embedded with NNBlock: fixed inputs reproduce
onnxruntime, and the MILP's minimum lies at or below a dense sample of the network, equal to
the network at its argmin, for big-M and partition alike.

Networks without convolutions are exported in float64 and compared with onnxruntime at 1e-6;
onnxruntime has no float64 kernels for Conv and the pools, so the convolutional ones are
compared with the network's float64 forward pass (which ``tests/onnx/test_torch_exports.py`` checks
against onnxruntime at float32 precision).
"""

from __future__ import annotations

import numpy as np
import pyomo.environ as pyo
import pytest

from pyomo_nnrelax import InputBox, interval_bounds, tighten_bounds
from pyomo_nnrelax.block import NNBlock
from pyomo_nnrelax.matrices import to_dense
from pyomo_nnrelax.onnx import read_onnx, run_onnxruntime
from tests.support.reference import grid, grid_tolerance
from tests.support.solving import solve_optimal
from tests.support.torch_export import export_layers, requires_torch

try:
    import torch
except ImportError:  # only the torch tests are skipped (see tests.support.torch_export)
    torch = None


class Residual(torch.nn.Module if torch else object):
    """``h + relu(W h)`` after a first layer: a residual block."""

    def __init__(self):
        super().__init__()
        self.first, self.inner, self.out = (
            torch.nn.Linear(2, 6),
            torch.nn.Linear(6, 6),
            torch.nn.Linear(6, 1),
        )

    def forward(self, x):
        h = torch.relu(self.first(x))
        return self.out(h + torch.relu(self.inner(h)))


class Dense(torch.nn.Module if torch else object):
    """DenseNet-style: ``cat([x, relu(W x)])`` feeds the next layer."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(2, 5), torch.nn.Linear(7, 1)

    def forward(self, x):
        return self.b(torch.cat([x, torch.relu(self.a(x))], dim=1))


class ConvPool(torch.nn.Module if torch else object):
    """Conv - ReLU - MaxPool and AvgPool side by side - Linear, on a 1x4x4 image."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.max, self.avg = torch.nn.MaxPool2d(2), torch.nn.AvgPool2d(2)
        self.fc = torch.nn.Linear(16, 1)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(torch.cat([self.max(h).flatten(1), self.avg(h).flatten(1)], dim=1))


def builders():
    nn = torch.nn
    return {
        "leaky_prelu": lambda: nn.Sequential(
            nn.Linear(2, 6), nn.LeakyReLU(0.1), nn.Linear(6, 6), nn.PReLU(6), nn.Linear(6, 1)
        ),
        "relu6_hardtanh": lambda: nn.Sequential(
            nn.Linear(2, 6), nn.ReLU6(), nn.Linear(6, 6), nn.Hardtanh(-0.5, 0.5), nn.Linear(6, 1)
        ),
        "residual": Residual,
        "dense": Dense,
        "conv_pool": ConvPool,
        "conv1d": lambda: nn.Sequential(
            nn.Conv1d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(12, 1)
        ),
    }


SHAPES = {"conv_pool": (1, 4, 4), "conv1d": (1, 4)}
CONVOLUTIONAL = {"conv_pool", "conv1d"}


def exported(tmp_path, name: str, dynamo: bool):
    torch.manual_seed(7)
    module = builders()[name]().eval()
    if name not in CONVOLUTIONAL:
        with torch.no_grad():  # weights big enough that the box holds kinks of every neuron
            for p in module.parameters():
                p.mul_(2.0)
    dtype = torch.float32 if name in CONVOLUTIONAL else torch.float64
    path = tmp_path / f"{name}_{dynamo}.onnx"
    export_layers(module.to(dtype), SHAPES.get(name, (2,)), path, dynamo)
    return path


def box(name: str) -> InputBox:
    n = int(np.prod(SHAPES.get(name, (2,))))
    return InputBox(lower=np.full(n, -1.0), upper=np.full(n, 1.0))


@requires_torch
@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize("name", ["leaky_prelu", "residual", "conv_pool", "conv1d"])
def test_fixed_inputs_reproduce_onnxruntime(tmp_path, name, dynamo):
    path = exported(tmp_path, name, dynamo)
    network = read_onnx(path)
    shape = SHAPES.get(name, (2,))
    for x in np.random.default_rng(0).uniform(-1, 1, size=(3, int(np.prod(shape)))):
        m = pyo.ConcreteModel()
        m.nn = NNBlock(str(path), input_bounds=box(name))
        for i, v in enumerate(x):
            m.nn.inputs[i].fix(float(v))
        m.obj = pyo.Objective(expr=m.nn.outputs[0])
        solve_optimal(m)
        if name in CONVOLUTIONAL:
            expected = network.forward(x.reshape(1, *shape))[0]
        else:
            expected = run_onnxruntime(path, x.reshape(1, *shape))[0]
        np.testing.assert_allclose(m.nn.output_values(), expected, atol=1e-6, rtol=0)


@requires_torch
@pytest.mark.parametrize("formulation", ["bigm", "partition"])
@pytest.mark.parametrize(
    "name", ["leaky_prelu", "relu6_hardtanh", "residual", "dense", "conv_pool", "conv1d"]
)
def test_milp_minimum_is_the_networks_minimum(tmp_path, name, formulation):
    path = exported(tmp_path, name, dynamo=False)
    network, domain = read_onnx(path), box(name)
    m = pyo.ConcreteModel()
    m.nn = NNBlock(str(path), input_bounds=domain, formulation=formulation)
    m.obj = pyo.Objective(expr=m.nn.outputs[0], sense=pyo.minimize)
    solve_optimal(m)
    value, x = pyo.value(m.obj), m.nn.input_values()
    assert abs(network.forward(x.reshape(1, -1))[0, 0] - value) < 1e-6  # exact at its argmin
    assert m.nn.check().max_abs_error < 1e-5  # onnxruntime (float32 for the conv networks)
    if domain.lower.size == 2:  # a dense grid: the MILP minimum is the network's, to within
        points = grid(domain.lower, domain.upper, 401)  # the grid's Lipschitz tolerance
        sampled = network.forward(points)[:, 0].min()
        layers = [(to_dense(layer.weight), layer.bias) for layer in network.layers]
        tolerance = grid_tolerance(layers, domain.lower, domain.upper, 401)[0]
        assert sampled - tolerance - 1e-9 <= value <= sampled + 1e-9
    else:
        sample = np.random.default_rng(1).uniform(-1, 1, size=(20000, domain.lower.size))
        assert value <= network.forward(sample)[:, 0].min() + 1e-9


@requires_torch
@pytest.mark.parametrize(
    "name, method",
    [("relu6_hardtanh", "milp"), ("residual", "milp"), ("dense", "lp"), ("conv_pool", "lp")],
)
def test_tightened_bounds_contain_sampled_pre_activations(tmp_path, name, method):
    network, domain = read_onnx(exported(tmp_path, name, dynamo=False)), box(name)
    bounds = tighten_bounds(network, bounds=interval_bounds(network, domain), method=method)
    sample = np.random.default_rng(2).uniform(-1, 1, size=(5000, domain.lower.size))
    assert bounds.contains(network, np.vstack([sample, domain.lower, domain.upper]), tol=1e-7)
    assert bounds.unstable_count(network) <= interval_bounds(network, domain).unstable_count(
        network
    )
