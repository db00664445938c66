"""Repairs to tf2onnx's output before it is checked: folded constants, rewritten ops, refusals.

tf2onnx 1.17 leaves TensorFlow ops it has no handler for in the graph under their TF name
(Keras's exact GELU emits `Erfc`, CELU emits `Expm1`), and turns eager tensors a Keras 3
layer captured at build time (`Normalization`'s mean and variance) into extra graph inputs.
Both are fixed here on the ONNX proto, after conversion and independently of tf2onnx's
internals; an op nothing covers is refused by name, with the layer it came from, before any
file is written. The parity check still judges the result.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from convert.errors import UnsupportedOp

# TF op -> (how it is rewritten, for the note; the function emitting the replacement nodes)
Emitter = Callable[[Any, Any, str, str, int], list[Any]]


def _constant_one(helper: Any, name: str, elem_type: int) -> Any:
    dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    return helper.make_node("Constant", [], [name], name=name,
                            value=helper.make_tensor(name + "_value", elem_type, [], [dtype.type(1)]))


def _erfc(helper: Any, node: Any, x: str, out: str, elem_type: int) -> list[Any]:
    base = node.name + "/fdedge"
    return [_constant_one(helper, base + "/one", elem_type),
            helper.make_node("Erf", [x], [base + "/erf"], name=base + "/Erf"),
            helper.make_node("Sub", [base + "/one", base + "/erf"], [out], name=base + "/Sub")]


def _expm1(helper: Any, node: Any, x: str, out: str, elem_type: int) -> list[Any]:
    base = node.name + "/fdedge"
    return [_constant_one(helper, base + "/one", elem_type),
            helper.make_node("Exp", [x], [base + "/exp"], name=base + "/Exp"),
            helper.make_node("Sub", [base + "/exp", base + "/one"], [out], name=base + "/Sub")]


def _log1p(helper: Any, node: Any, x: str, out: str, elem_type: int) -> list[Any]:
    base = node.name + "/fdedge"
    return [_constant_one(helper, base + "/one", elem_type),
            helper.make_node("Add", [x, base + "/one"], [base + "/sum"], name=base + "/Add"),
            helper.make_node("Log", [base + "/sum"], [out], name=base + "/Log")]


REWRITES: dict[str, tuple[str, Emitter]] = {
    "Erfc": ("1 - Erf(x)", _erfc),
    "Expm1": ("Exp(x) - 1", _expm1),
    "Log1p": ("Log(1 + x)", _log1p),
}


def fold_captured_constants(proto: Any, captured: dict[str, np.ndarray]) -> list[str]:
    """Graph inputs that are really constants a layer captured become initializers again.

    `captured` maps the placeholder's tensor name (as tf2onnx names the input) to its value,
    taken from the traced function's captures. Returns the names folded.
    """
    from onnx import numpy_helper

    folded = []
    for value in list(proto.graph.input):
        if value.name in captured:
            proto.graph.input.remove(value)
            proto.graph.initializer.append(numpy_helper.from_array(np.asarray(captured[value.name]), value.name))
            folded.append(value.name)
    return folded


def _elem_types(proto: Any) -> dict[str, int]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # an unknown op may stop inference; fall back to float32 below
        inferred = proto
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def _is_standard(op_type: str, domain: str, opset: int) -> bool:
    import onnx

    if domain not in ("", "ai.onnx"):
        return onnx.defs.has(op_type, domain)
    try:
        onnx.defs.get_schema(op_type, opset, "")
    except Exception:  # onnx raises SchemaError: no such op at this opset
        return False
    return True


def layer_of(node_name: str, layer_names: Iterable[str]) -> str | None:
    """The Keras layer a TF op path such as `sequential_1/dense_1/Gelu/Erfc` belongs to.

    Keras 3 enters each layer's name scope with a `_1` suffix when the model is traced
    (`dense` appears as `dense_1`, a layer named `dense_1` as `dense_1_1`), so one numeric
    suffix is dropped first; an exact match is the fallback.
    """
    names = set(layer_names)
    parts = node_name.split("/")[:-1]
    for part in reversed(parts):
        stripped = re.sub(r"_\d+$", "", part)
        if stripped != part and stripped in names:
            return stripped
    for part in reversed(parts):
        if part in names:
            return part
    return None


def rewrite_unsupported(proto: Any, opset: int, layer_names: Iterable[str], tf2onnx_log: list[str]) -> list[str]:
    """Replace the TF ops REWRITES covers by standard ONNX ops; refuse any other non-ONNX op.

    Returns one note per rewritten op type (recorded in the manifest).
    """
    from onnx import TensorProto, helper

    layer_names = list(layer_names)
    nodes = list(proto.graph.node)
    unknown = {i for i, n in enumerate(nodes) if not _is_standard(n.op_type, n.domain, opset)}
    refused = [nodes[i] for i in sorted(unknown)
               if nodes[i].op_type not in REWRITES or nodes[i].domain not in ("", "ai.onnx")]
    if refused:
        node = refused[0]
        layer = layer_of(node.name, layer_names)
        where = f"{node.name}, in Keras layer {layer!r}" if layer else node.name
        others = ", ".join(sorted({n.op_type for n in refused[1:]} - {node.op_type}))
        told = next((line for line in tf2onnx_log if "Unsupported ops" in line), None)
        raise UnsupportedOp(
            f"TensorFlow op {node.op_type} ({where}) has no ONNX equivalent at opset {opset}"
            + (f" (also: {others})" if others else "")
            + (f"; tf2onnx said: {told}" if told else "")
            + "; replace that layer or activation with one built from standard ops, or try another --opset"
        )
    if not unknown:
        return []
    types = _elem_types(proto)
    rebuilt: list[Any] = []
    counts: dict[tuple[str, str], list[str]] = {}
    for i, node in enumerate(nodes):
        if i not in unknown:
            kept = type(node)()
            kept.CopyFrom(node)  # detached: the repeated field is cleared below
            rebuilt.append(kept)
            continue
        how, emit = REWRITES[node.op_type]
        elem_type = types.get(node.input[0]) or TensorProto.FLOAT
        rebuilt.extend(emit(helper, node, node.input[0], node.output[0], elem_type))
        layer = layer_of(node.name, layer_names) or node.name
        counts.setdefault((node.op_type, how), []).append(layer)
    del proto.graph.node[:]
    proto.graph.node.extend(rebuilt)
    return [f"TensorFlow op {op} (not converted by tf2onnx) rewritten as {how} "
            f"in layer(s) {', '.join(sorted(set(layers)))}" for (op, how), layers in counts.items()]
