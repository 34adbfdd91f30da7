"""The one registry of ONNX ops: which handler reads each op on data-dependent tensors, why the
others have no exact MILP form, and the dispatch of a node (constant nodes are evaluated with
ONNX's reference implementation).

A handler takes the :class:`~.nodes.Node` (its inputs: constants as numpy arrays, data as
:class:`~.values.Affine` maps) and the :class:`~.nodes.ReadState`, and returns the node's
outputs.  Affine ops fold into the pending layer's map; piecewise linear ops close it
(:func:`~.closing.close_layer`).  ``docs/design.md`` lists the ops and how each is reduced.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx.reference import ReferenceEvaluator

from ..errors import InvalidNetworkError
from . import activations, arithmetic, convolution, maxima, shapes
from .memory import TooLargeError
from .nodes import Node, ReadState
from .values import Affine, Value

#: The data ops that have an exact form (named in the messages below).
_EXACT = "Relu, LeakyRelu, PRelu, Clip, HardSigmoid, Abs, Max, Min, MaxPool, ReduceMax, ReduceMin"


_CURVED = (
    "Sigmoid Tanh Softmax LogSoftmax Softplus Softsign Elu Selu Celu Gelu Mish HardSwish "
    "Exp Log Sqrt Erf Sin Cos Tan Pow Reciprocal"
).split()


_JUMPS = "ThresholdedRelu Sign Floor Ceil Round".split()


RANDOM_OPS = (
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
)


WHY_UNSUPPORTED = {
    **{
        op: "not piecewise linear, so it has no exact MILP formulation (only ReLU-like "
        f"piecewise-linear activations do: {_EXACT})"
        for op in _CURVED
    },
    **{
        op: "discontinuous, so it has no exact MILP formulation (only ReLU-like continuous "
        f"piecewise-linear activations do: {_EXACT})"
        for op in _JUMPS
    },
    **{
        op: "Lp pooling (a p-norm of each window) has no exact MILP formulation"
        for op in ("LpPool", "GlobalLpPool")
    },
    **{op: "control flow is not supported" for op in ("If", "Loop", "Scan")},
    **{op: "random operations have no fixed value" for op in RANDOM_OPS},
}


Handler = Callable[[Node, ReadState], list[Value]]
HANDLERS: dict[str, Handler] = {
    # affine maps (arithmetic)
    "Add": arithmetic.read_elementwise,
    "Sub": arithmetic.read_elementwise,
    "Mul": arithmetic.read_elementwise,
    "Div": arithmetic.read_elementwise,
    "Sum": arithmetic.read_sum,
    "Mean": arithmetic.read_sum,
    "Concat": arithmetic.read_concat,
    "Neg": arithmetic.read_neg,
    "Gemm": arithmetic.read_gemm,
    "MatMul": arithmetic.read_matmul,
    "BatchNormalization": arithmetic.read_batchnorm,
    "ReduceSum": arithmetic.read_reduce,
    "ReduceMean": arithmetic.read_reduce,
    "ReduceMax": arithmetic.read_reduce,
    "ReduceMin": arithmetic.read_reduce,
    # moving entries (shapes)
    "Identity": shapes.read_passthrough,
    "Dropout": shapes.read_passthrough,
    "Cast": shapes.read_cast,
    "Flatten": shapes.read_flatten,
    "Reshape": shapes.read_reshape,
    "Squeeze": shapes.read_squeeze,
    "Unsqueeze": shapes.read_unsqueeze,
    "Transpose": shapes.read_transpose,
    "Shape": shapes.read_shape,
    # convolutions and average pools (convolution)
    "Conv": convolution.read_conv,
    "ConvTranspose": convolution.read_conv_transpose,
    "AveragePool": convolution.read_average_pool,
    "GlobalAveragePool": convolution.read_average_pool,
    # piecewise linear activations (activations)
    "Relu": activations.read_relu,
    "LeakyRelu": activations.read_leaky_relu,
    "PRelu": activations.read_prelu,
    "Clip": activations.read_clip,
    "HardSigmoid": activations.read_hard_sigmoid,
    "Abs": activations.read_abs,
    # max trees (maxima)
    "MaxPool": maxima.read_max_pool,
    "GlobalMaxPool": maxima.read_max_pool,
    "Max": maxima.read_max_min,
    "Min": maxima.read_max_min,
}
"""Every op the reader handles on data-dependent tensors, and its handler: the one registry."""


#: Ops that read only the shape of a data tensor, so using it there is not a data path.
SHAPE_ONLY = frozenset({"Shape"})


# ---------------------------------------------------------------------- dispatch
def fold_constant(node: Node) -> list[Value]:
    """Evaluate a node whose inputs are all constant with ONNX's reference implementation."""
    op = node.proto.op_type
    if op in ("If", "Loop", "Scan") or op in RANDOM_OPS:
        raise node.unsupported(WHY_UNSUPPORTED[op])
    feeds = {name: value for name, value in zip(node.proto.input, node.inputs) if name}
    try:
        outputs = ReferenceEvaluator(node.proto, opsets={"": node.opset}).run(None, feeds)
    except Exception as exc:
        raise node.mismatch(f"could not evaluate constant node: {exc}") from exc
    return [np.asarray(v) for v in outputs]


def read_node(node: Node, state: ReadState) -> list[Value]:
    if node.proto.domain not in ("", "ai.onnx"):
        raise node.unsupported(
            f"operations of the custom domain '{node.proto.domain}' are not supported"
        )
    if not any(isinstance(v, Affine) for v in node.inputs):
        return fold_constant(node)
    handler = HANDLERS.get(node.proto.op_type)
    if handler is None:
        raise node.unsupported(
            WHY_UNSUPPORTED.get(
                node.proto.op_type, "this operation is not supported on data-dependent tensors"
            )
        )
    try:
        outputs = handler(node, state)
    except TooLargeError as exc:
        raise node.mismatch(str(exc)) from None
    for value in outputs:
        if isinstance(value, Affine) and not value.all_finite():
            raise InvalidNetworkError(
                f"node '{node.label}' ({node.proto.op_type}) produces NaN or infinite weights"
            )
    return outputs
