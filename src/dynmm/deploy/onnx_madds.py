"""Multiply-adds of an ONNX graph, counted as dynmm counts a torch model: matrix products, convolutions and LSTM
layers (cost.py's formula) only, no bias adds, activations or normalisation. So an exported branch's cost can be
checked against the MAdds dynmm measured on the torch module it came from."""

from __future__ import annotations

import math
from pathlib import Path

import onnx
from onnx import shape_inference


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    graph = model.graph
    shapes: dict[str, list[int]] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _node_madds(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    if node.op_type in ("MatMul", "Gemm"):
        left = shapes[node.input[0]]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        inner = left[-2] if attrs.get("transA") else left[-1]
        return math.prod(shapes[node.output[0]]) * inner
    if node.op_type == "LSTM":  # X (T, B, I), W (dirs, 4H, I), R (dirs, 4H, H): T·B·dirs·4H·(I + H), as cost.py
        x, w, r = shapes[node.input[0]], shapes[node.input[1]], shapes[node.input[2]]
        return x[0] * x[1] * w[0] * w[1] * (w[2] + r[2])
    if node.op_type == "Conv":
        weight, out = shapes[node.input[1]], shapes[node.output[0]]
        return math.prod(out) * math.prod(weight[1:])  # weight (out, in / groups, *kernel)
    return 0


def onnx_madds(path: str | Path) -> float:
    """MAdds of one forward of the graph at `path`, per row where the batch is dynamic (If subgraphs are not
    counted: count a branch from its own graph)."""
    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:  # one row: the batch becomes 1 and shapes re-derived
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_value = 1
    model.graph.ClearField("value_info")
    model = shape_inference.infer_shapes(model, data_prop=True)
    shapes = _shapes(model)
    total = 0
    for node in model.graph.node:
        try:
            total += _node_madds(node, shapes)
        except KeyError as err:
            raise ValueError(f"{path}: no static shape for {err} (node {node.name}, {node.op_type})") from err
    return float(total)
