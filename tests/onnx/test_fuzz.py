"""Mutation fuzzing of ONNX files: a broken file gives the package's own error, never a raw one.

Two parts. Structured mutations (dropped or reshaped initializers, wrong dtypes, NaN and
infinite weights, cycles, missing outputs, unknown ops, dangling inputs, broken metadata,
empty and truncated files) are applied to small valid networks and loaded in this process
with both readers: ``read_onnx`` and ``NNBlock(path, input_bounds=...)``. Each must end in a
:class:`~pyomo_nnrelax.errors.NNRelaxError` whose message names the file and the node,
initializer or metadata entry at fault. Random byte mutations (bit flips, random bytes,
truncations, insertions) run in a subprocess (``tests/onnx/fuzz_worker.py``) with a timeout,
so that a reader that hangs fails the test instead of blocking the run; every load must end
in success or a package error naming the file.

``NNRELAX_FUZZ_CASES`` sets the number of random byte mutations per base network (default
150); the seeds are fixed, so a failure is reproduced by running the test again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pyomo.environ as pyo
import pytest
from onnx import TensorProto, helper, numpy_helper

from pyomo_nnrelax import Network, NNBlock, interval_bounds, write_onnx
from pyomo_nnrelax.errors import (
    InvalidNetworkError,
    NNRelaxError,
    OnnxImportError,
    UnsupportedOperationError,
)
from pyomo_nnrelax.onnx import read_onnx

FUZZ_CASES = int(os.environ.get("NNRELAX_FUZZ_CASES", "150"))
WORKER = Path(__file__).with_name("fuzz_worker.py")
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------- base networks
def written_network() -> onnx.ModelProto:
    """A 3-5-4-2 network as the package writes it: Gemm + Relu, float64, bounds in metadata."""
    network = Network.mlp([3, 5, 4, 2], seed=0).with_input_bounds([-1.0] * 3, [1.0] * 3)
    return write_onnx(network, dtype="float64", bounds=interval_bounds(network))


def hand_built_network() -> onnx.ModelProto:
    """MatMul + Add + Relu, a Constant scale, a Reshape by a Constant shape, then Gemm; float32."""
    rng = np.random.default_rng(7)
    nodes = [
        helper.make_node("MatMul", ["x", "W0"], ["h0"], name="mm0"),
        helper.make_node("Add", ["h0", "b0"], ["z0"], name="add0"),
        helper.make_node("Relu", ["z0"], ["a0"], name="relu0"),
        helper.make_node(
            "Constant",
            [],
            ["scale"],
            name="const_scale",
            value=numpy_helper.from_array(np.array([2.0, 0.5, 1.5, 1.0], np.float32), "scale"),
        ),
        helper.make_node("Mul", ["a0", "scale"], ["m0"], name="mul0"),
        helper.make_node(
            "Constant",
            [],
            ["shape"],
            name="const_shape",
            value=numpy_helper.from_array(np.array([-1, 4], np.int64), "shape"),
        ),
        helper.make_node("Reshape", ["m0", "shape"], ["r0"], name="reshape0"),
        helper.make_node("Gemm", ["r0", "W1", "b1"], ["y"], name="gemm1", transB=1),
    ]
    inits = {
        "W0": rng.normal(size=(3, 4)),
        "b0": rng.normal(size=4),
        "W1": rng.normal(size=(2, 4)),
        "b1": rng.normal(size=2),
    }
    graph = helper.make_graph(
        nodes,
        "hand_built",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


BASES: dict[str, Callable[[], onnx.ModelProto]] = {
    "written": written_network,
    "hand_built": hand_built_network,
}


def test_the_base_networks_are_valid_and_read(tmp_path):
    for name, build in BASES.items():
        path = tmp_path / f"{name}.onnx"
        onnx.save(build(), path)
        onnx.checker.check_model(onnx.load(path), full_check=True)
        assert read_onnx(path).n_inputs == 3
        load_with(path, "NNBlock")


# ---------------------------------------------------------------------- readers
READERS = ("read_onnx", "NNBlock")


def load_with(path: Path, reader: str) -> None:
    """Load ``path`` with one of the package's readers."""
    if reader == "read_onnx":
        read_onnx(path)
    else:
        m = pyo.ConcreteModel()
        m.nn = NNBlock(path, input_bounds=[(-1.0, 1.0)] * 3)


def assert_package_error(
    path: Path,
    reader: str,
    error: type[NNRelaxError],
    names: tuple[str, ...],
    file_named: bool = True,
) -> NNRelaxError:
    """Loading ``path`` raises ``error`` (nothing else) naming each of ``names`` and, with
    ``file_named``, the file."""
    try:
        load_with(path, reader)
    except NNRelaxError as exc:
        assert isinstance(exc, error), f"{reader}: {type(exc).__name__}: {exc}"
        message = str(exc)
        if file_named:
            assert path.name in message, f"{reader}: the message does not name the file: {message}"
        for name in names:
            assert name in message, f"{reader}: the message does not name {name!r}: {message}"
        return exc
    except Exception as exc:
        raise AssertionError(
            f"{reader} raised a raw {type(exc).__module__}.{type(exc).__name__}: {exc}"
        ) from exc
    raise AssertionError(f"{reader} read the broken file {path.name} without an error")


# ---------------------------------------------------------------------- structured mutations
def initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def replace_initializer(model: onnx.ModelProto, name: str, tensor: onnx.TensorProto) -> None:
    initializer(model, name).CopyFrom(tensor)


def set_weight(model: onnx.ModelProto, name: str, index: int, value: float) -> None:
    array = numpy_helper.to_array(initializer(model, name)).copy()
    array.flat[index] = value
    replace_initializer(model, name, numpy_helper.from_array(array, name))


def first_weight(base: str) -> str:
    return "nnrelax/layer0/weight" if base == "written" else "W0"


def first_bias(base: str) -> str:
    return "nnrelax/layer0/bias" if base == "written" else "b0"


def first_node(base: str) -> str:
    return "layer0_gemm" if base == "written" else "mm0"


def drop_initializer(model, base):
    name = first_weight(base)
    model.graph.initializer.remove(initializer(model, name))
    return OnnxImportError, (name,)


def transposed_weight(model, base):
    name = first_weight(base)
    array = numpy_helper.to_array(initializer(model, name))
    replace_initializer(model, name, numpy_helper.from_array(np.ascontiguousarray(array.T), name))
    return OnnxImportError, (first_node(base),)


def flattened_weight(model, base):
    name = first_weight(base)
    array = numpy_helper.to_array(initializer(model, name))
    replace_initializer(model, name, numpy_helper.from_array(array.reshape(-1), name))
    return NNRelaxError, (first_node(base),)


def extra_dim_bias(model, base):
    name = first_bias(base)
    array = numpy_helper.to_array(initializer(model, name))
    replace_initializer(model, name, numpy_helper.from_array(np.stack([array, array]), name))
    return NNRelaxError, ((first_node(base) if base == "written" else "add0"),)


def dims_disagree_with_data(model, base):
    tensor = initializer(model, first_weight(base))
    tensor.dims[0] += 1
    return OnnxImportError, (first_weight(base),)


def unknown_data_type(model, base):
    initializer(model, first_weight(base)).data_type = 63
    return OnnxImportError, (first_weight(base),)


def integer_weight(model, base):
    name = first_weight(base)
    array = numpy_helper.to_array(initializer(model, name))
    replace_initializer(
        model, name, numpy_helper.from_array(np.round(array).astype(np.int64), name)
    )
    return OnnxImportError, (first_node(base), name)


def string_weight(model, base):
    name = first_weight(base)
    shape = numpy_helper.to_array(initializer(model, name)).shape
    tensor = helper.make_tensor(name, TensorProto.STRING, shape, [b"w"] * int(np.prod(shape)))
    replace_initializer(model, name, tensor)
    return OnnxImportError, (first_node(base), name)


def nan_weight(model, base):
    set_weight(model, first_weight(base), 2, np.nan)
    return InvalidNetworkError, (first_node(base),)


def inf_bias(model, base):
    set_weight(model, first_bias(base), 0, np.inf)
    return InvalidNetworkError, ((first_node(base) if base == "written" else "add0"),)


def negative_inf_constant(model, base):
    if base == "written":
        set_weight(model, "nnrelax/layer2/weight", 1, -np.inf)
        return InvalidNetworkError, ("layer2_gemm",)
    node = next(n for n in model.graph.node if n.name == "const_scale")
    node.attribute[0].t.CopyFrom(
        numpy_helper.from_array(np.array([2.0, -np.inf, 1.5, 1.0], np.float32), "scale")
    )
    return InvalidNetworkError, ("mul0",)


def overflowing_weights(model, base):
    """Finite float64 weights whose interval bounds overflow to infinity in the second layer."""
    if base != "written":
        return None
    for name in ("nnrelax/layer0/weight", "nnrelax/layer1/weight"):
        array = numpy_helper.to_array(initializer(model, name)) * 1e200
        replace_initializer(model, name, numpy_helper.from_array(array, name))
    del model.metadata_props[:]  # bounds stored for the old weights are refused anyway
    return InvalidNetworkError, ("layer 1",)


def cycle(model, base):
    """The first node reads the graph output, which the last node computes from it."""
    node = model.graph.node[0]
    node.input[0] = model.graph.output[0].name
    return OnnxImportError, ()


def two_node_cycle(model, base):
    a, b = model.graph.node[0], model.graph.node[1]
    a.input[0] = b.output[0]
    return OnnxImportError, ()


def no_graph_output(model, base):
    del model.graph.output[:]
    return UnsupportedOperationError, ("0 outputs",)


def output_names_nothing(model, base):
    model.graph.output[0].name = "nowhere"
    return OnnxImportError, ("nowhere",)


def unknown_op(model, base):
    node = model.graph.node[0]
    node.op_type = "FrobnicateMatrix"
    return OnnxImportError, ("FrobnicateMatrix",)


def custom_domain_op(model, base):
    node = model.graph.node[0]
    node.domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    return UnsupportedOperationError, (node.name, "com.example")


def dangling_input(model, base):
    node = model.graph.node[1]
    node.input[0] = "never_computed"
    return OnnxImportError, ("never_computed",)


def unused_extra_graph_input(model, base):
    model.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [None, 3]))
    return UnsupportedOperationError, ("extra",)


def non_utf8_metadata(model, base):
    # protobuf keeps the bytes of a malformed string; json.loads then gets bytes
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = "nnrelax.input_bounds", "MARKERVALUE"
    model.ParseFromString(model.SerializeToString().replace(b"MARKERVALUE", b"MARKER\xff\xfeLUE"))
    return OnnxImportError, ("nnrelax.input_bounds",)


def non_utf8_op_type(model, base):
    node = next(n for n in model.graph.node if n.op_type == "Relu")
    node.op_type = "RELUMARKER"
    model.ParseFromString(
        model.SerializeToString().replace(b"RELUMARKER", b"Re\xfflu\xfe\xfe\xfe\xfe\xfe")
    )
    return OnnxImportError, ("UTF-8",)


def stored_bounds(model) -> dict:
    return json.loads(next(p.value for p in model.metadata_props if p.key == "nnrelax.bounds"))


def set_stored_bounds(model, data: dict) -> None:
    next(p for p in model.metadata_props if p.key == "nnrelax.bounds").value = json.dumps(data)


def metadata_bounds_wrong_shape(model, base):
    if base != "written":
        return None
    data = stored_bounds(model)
    data["upper"][1] = data["upper"][1][:-1]
    set_stored_bounds(model, data)
    return OnnxImportError, ("nnrelax.bounds",)


def metadata_bounds_nan(model, base):
    if base != "written":
        return None
    data = stored_bounds(model)
    data["lower"][0][1] = float("nan")
    set_stored_bounds(model, data)
    return OnnxImportError, ("nnrelax.bounds",)


def metadata_bounds_inverted(model, base):
    if base != "written":
        return None
    data = stored_bounds(model)
    data["lower"][1], data["upper"][1] = data["upper"][1], data["lower"][1]
    set_stored_bounds(model, data)
    return OnnxImportError, ("nnrelax.bounds",)


def metadata_input_box_nan(model, base):
    entry = model.metadata_props.add()
    entry.key = "nnrelax.input_bounds"
    entry.value = json.dumps({"lower": [0.0, float("nan"), 0.0], "upper": [1.0, 1.0, 1.0]})
    if base == "written":  # keep one entry per key
        model.metadata_props.remove(
            next(p for p in model.metadata_props if p.key == "nnrelax.input_bounds")
        )
    return NNRelaxError, ("nnrelax.input_bounds",)


MUTATIONS = [
    drop_initializer,
    transposed_weight,
    flattened_weight,
    extra_dim_bias,
    dims_disagree_with_data,
    unknown_data_type,
    integer_weight,
    string_weight,
    nan_weight,
    inf_bias,
    negative_inf_constant,
    overflowing_weights,
    cycle,
    two_node_cycle,
    no_graph_output,
    output_names_nothing,
    unknown_op,
    custom_domain_op,
    dangling_input,
    unused_extra_graph_input,
    non_utf8_metadata,
    non_utf8_op_type,
    metadata_bounds_wrong_shape,
    metadata_bounds_nan,
    metadata_bounds_inverted,
    metadata_input_box_nan,
]

#: Mutations that leave a readable network which NNBlock must refuse: stored per-layer bounds
#: (only the block reads them) and weights whose bounds overflow.
BLOCK_ONLY = {
    metadata_bounds_wrong_shape,
    metadata_bounds_nan,
    metadata_bounds_inverted,
    overflowing_weights,
}


APPLICABLE = [(b, m) for b in BASES for m in MUTATIONS if m(BASES[b](), b) is not None]
"""The (base network, mutation) pairs where the mutation applies (a mutation of stored
bounds needs a network that stores them)."""


@pytest.mark.parametrize(
    ("base", "mutation"), APPLICABLE, ids=[f"{b}-{m.__name__}" for b, m in APPLICABLE]
)
def test_a_structured_mutation_gives_a_package_error_naming_what_is_wrong(tmp_path, base, mutation):
    model = BASES[base]()
    error, names = mutation(model, base)
    path = tmp_path / f"{base}_{mutation.__name__}.onnx"
    path.write_bytes(model.SerializeToString())

    if mutation in BLOCK_ONLY:  # the network reads; only the block refuses it
        read_onnx(path)
        file_named = mutation is not overflowing_weights  # an error of the weights, not the file
        assert_package_error(path, "NNBlock", error, names, file_named)
        return
    for reader in READERS:
        assert_package_error(path, reader, error, names)


@pytest.mark.parametrize("base", list(BASES))
def test_empty_and_truncated_files_give_onnx_import_errors(tmp_path, base):
    data = BASES[base]().SerializeToString()
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    for reader in READERS:
        assert_package_error(empty, reader, OnnxImportError, ("empty",))
    for cut in range(1, len(data), max(1, len(data) // 40)):
        path = tmp_path / f"cut{cut}.onnx"
        path.write_bytes(data[:cut])
        assert_package_error(path, "read_onnx", OnnxImportError, ())


# ---------------------------------------------------------------------- random byte mutations
@pytest.mark.slow
@pytest.mark.parametrize("base, seed", [("written", 1), ("hand_built", 2)])
def test_random_byte_mutations_never_raise_raw_exceptions_or_hang(tmp_path, base, seed):
    path = tmp_path / f"{base}.onnx"
    onnx.save(BASES[base](), path)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    timeout = 60 + 0.5 * FUZZ_CASES
    try:
        run = subprocess.run(
            [sys.executable, str(WORKER), str(path), str(tmp_path), str(seed), str(FUZZ_CASES)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        lines = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        starts = [json.loads(line) for line in lines.splitlines() if '"start"' in line]
        last = starts[-1] if starts else None
        pytest.fail(f"the fuzz worker hung after {timeout:.0f} s; last case started: {last}")
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    results = [r for r in records if "outcome" in r]
    assert len(results) == FUZZ_CASES
    raw = [r for r in results if r["outcome"] == "raw"]
    assert not raw, "raw exceptions:\n" + "\n".join(
        f"case {r['case']} ({r['mutation']}, {r['reader']}): {r['type']}: {r['message']}\n"
        f"{r['traceback']}"
        for r in raw
    )
    unnamed = [r for r in results if r["outcome"] == "package" and r["file"] not in r["message"]]
    assert not unnamed, f"errors that do not name the file: {unnamed}"
    # the mutations must reach the readers' own checks, not only the protobuf parser
    assert sum(r["outcome"] == "package" for r in results) > FUZZ_CASES // 2
