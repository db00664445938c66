"""Keras -> ONNX through tf2onnx, plus onnxruntime's offline graph optimisation.

`tf2onnx.convert.from_keras` does not understand Keras 3 models, so the model is wrapped
in a `tf.function` with an explicit input signature and converted with `from_function`.
The graph gets stable names (input `features`, output `scaled_faults`, batch axis
`batch`) and carries the feature order in its metadata, so the file documents itself.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.errors import BuildExtraMissing, ExportError

INPUT_NAME = "features"
OUTPUT_NAME = "scaled_faults"
BATCH_AXIS = "batch"
# Only standard-domain operators count as portable: any onnxruntime build (x86-64,
# aarch64, old or new) and other ONNX runtimes can execute them.
PORTABLE_DOMAINS = {"", "ai.onnx"}
# An optimised file is kept only if it wins every one of PAIRS interleaved timing pairs and
# the median pair by KEEP_IF_FASTER_BY at batch 1. On a shared 2-core machine single pairs
# swing by +-25 % either way, so anything weaker would flip the artifact with the load.
KEEP_IF_FASTER_BY = 0.10
PAIRS = 8


class _Collect(logging.Handler):
    """Keeps tf2onnx's own error lines ("Unsupported ops: ...") for the one-line message."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(" ".join(record.getMessage().split()))


def one_line(exc: BaseException) -> str:
    """An exception as one line, whole: the useful sentence is often not the first."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _captured_constants(function: Any) -> dict[str, np.ndarray]:
    """Eager tensors the traced model captured, by the placeholder name tf2onnx gives its input."""
    concrete = function.get_concrete_function()
    out = {}
    for external, internal in zip(concrete.captured_inputs, concrete.graph.internal_captures, strict=False):
        if hasattr(external, "numpy") and getattr(external, "dtype", None) is not None \
                and external.dtype.name != "resource":
            out[internal.name] = external.numpy()
    return out


def export(model: Any, n_features: int, opset: int, path: Path, metadata: dict[str, str]) -> list[str]:
    """Write the model's raw (scaled) output graph to `path`; returns notes on what was repaired."""
    from convert import onnx_rewrite
    from convert.keras_model import import_tensorflow, layer_names, quiet_stderr

    tf, _ = import_tensorflow()
    try:
        import onnx
        import tf2onnx
    except ImportError as exc:
        raise BuildExtraMissing(exc.name or "tf2onnx") from None

    log = logging.getLogger("tf2onnx")
    log.setLevel(logging.ERROR)
    collect = _Collect()
    spec = (tf.TensorSpec((None, n_features), tf.float32, name=INPUT_NAME),)
    function = tf.function(lambda x: model(x, training=False), input_signature=spec)
    log.addHandler(collect)
    try:
        with quiet_stderr():  # grappler's C++ start-up lines, when TensorFlow came in noisy
            proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=opset)
    except Exception as exc:  # tf2onnx raises bare Exceptions/ValueErrors for unsupported opsets/ops
        said = f"; tf2onnx said: {' / '.join(collect.lines)}" if collect.lines else ""
        raise ExportError(f"tf2onnx could not convert the model at opset {opset} ({one_line(exc)}){said}") from None
    finally:
        log.removeHandler(collect)
    notes = []
    names = layer_names(model)
    folded = onnx_rewrite.fold_captured_constants(proto, _captured_constants(function))
    if folded:
        layers = sorted({onnx_rewrite.layer_of(name, names) or name for name in folded})
        notes.append(f"{len(folded)} constant(s) of layer(s) {', '.join(layers)} that tf2onnx made graph inputs "
                     "folded back into the graph")
    notes += onnx_rewrite.rewrite_unsupported(proto, opset, names, collect.lines)
    _tidy(proto)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx's ValidationError / InferenceError
        raise ExportError(f"the converted graph is not valid ONNX ({one_line(exc)})") from None
    onnx.save(proto, str(path))
    return notes


def _tidy(proto: Any) -> None:
    """Stable names: `scaled_faults` for tf2onnx's `Identity:0`, `batch` for its `unk__N` axes."""
    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if len(inputs) != 1 or len(proto.graph.output) != 1:
        raise ExportError(f"the converted graph has inputs {[i.name for i in inputs]} and "
                          f"{len(proto.graph.output)} output(s); expected one input ({INPUT_NAME}) and one output")
    (graph_input,), (graph_output,) = inputs, proto.graph.output
    old = graph_output.name
    for node in proto.graph.node:
        node.output[:] = [OUTPUT_NAME if name == old else name for name in node.output]
        node.input[:] = [OUTPUT_NAME if name == old else name for name in node.input]
    graph_output.name = OUTPUT_NAME
    for value in (graph_input, graph_output):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_AXIS
    # tf2onnx writes TensorFlow's per-process function counter here; without it the same
    # source converts to the same bytes, so `version` only changes when the model does.
    proto.graph.doc_string = "converted from Keras by fdedge convert (tf2onnx)"


def session(path: Path | bytes, level: str = "all", threads: int = 1) -> Any:
    """An onnxruntime session configured like the appliance's (edge/scoring/model.py)."""
    from edge.scoring.model import ort, session_options

    options = session_options(threads)
    options.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Optimisation:
    """What was tried and why the result was kept or not (recorded in manifest.json)."""

    level: str
    kept: bool
    reason: str
    plain_us_batch1: float | None = None
    optimised_us_batch1: float | None = None
    max_abs_difference: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _batch1_us(sess: Any, x: np.ndarray, calls: int = 1000) -> float:
    feed = {INPUT_NAME: x[:1]}
    for _ in range(100):
        sess.run(None, feed)
    start = time.perf_counter()
    for _ in range(calls):
        sess.run(None, feed)
    return (time.perf_counter() - start) / calls * 1e6


def optimise(plain: Path, target: Path, x: np.ndarray, tolerance: float, mode: str) -> Optimisation:
    """Try ORT_ENABLE_BASIC offline; replace `plain` by the result only if it earns its place.

    BASIC is the highest level whose output uses standard ONNX operators only (it folds
    MatMul+Add into Gemm, constants, identities); EXTENDED writes com.microsoft fused
    kernels tied to onnxruntime, and ALL may write hardware-specific layouts. The appliance
    applies the same rewrites itself at load time, so `auto` keeps the file only when it
    measurably beats the plain one under the appliance's own session options.
    """
    if mode == "none":
        return Optimisation("basic", False, "disabled (--optimize none)")
    import onnx

    from edge.scoring.model import ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(plain), sess_options=options, providers=["CPUExecutionProvider"])
        proto = onnx.load(str(target))
    except Exception as exc:
        return Optimisation("basic", False, f"onnxruntime could not write or reload it: {str(exc)[:120]}")
    domains = {node.domain for node in proto.graph.node}
    if not domains <= PORTABLE_DOMAINS:
        target.unlink(missing_ok=True)
        return Optimisation("basic", False, f"not portable: uses operator domains {sorted(domains - PORTABLE_DOMAINS)}")
    # onnxruntime declares every domain it knows; keep only the ones the graph uses.
    kept_imports = [o for o in proto.opset_import if o.domain in domains | {""}]
    del proto.opset_import[:]
    proto.opset_import.extend(kept_imports)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(target))

    plain_sess, opt_sess = session(plain), session(target)
    a = plain_sess.run(None, {INPUT_NAME: x})[0].astype(np.float64)
    b = opt_sess.run(None, {INPUT_NAME: x})[0].astype(np.float64)
    difference = float(np.max(np.abs(a - b)))
    spread = float(np.ptp(a)) or 1.0
    pairs = [(_batch1_us(plain_sess, x), _batch1_us(opt_sess, x)) for _ in range(PAIRS)]  # interleaved
    plain_us, opt_us = statistics.median(p for p, _ in pairs), statistics.median(o for _, o in pairs)
    ratios = [o / p for p, o in pairs]
    faster = max(ratios) < 1.0 and statistics.median(ratios) <= 1 - KEEP_IF_FASTER_BY
    figures = dict(plain_us_batch1=plain_us, optimised_us_batch1=opt_us, max_abs_difference=difference)
    if difference / spread > tolerance:
        target.unlink(missing_ok=True)
        return Optimisation("basic", False, "disagrees with the plain graph", **figures)
    if mode == "basic" or faster:
        target.replace(plain)
        why = "forced (--optimize basic)" if mode == "basic" else f"faster at batch 1 in all {PAIRS} timing pairs"
        return Optimisation("basic", True, why, **figures)
    target.unlink(missing_ok=True)
    return Optimisation(
        "basic", False,
        f"not consistently {KEEP_IF_FASTER_BY:.0%} faster at batch 1 over {PAIRS} interleaved timing pairs; "
        "the runtime applies the same rewrites when it loads the plain file",
        **figures,
    )


def metadata_features(path: Path) -> list[str] | None:
    """The feature order stored in the ONNX file's metadata, for cross-checking the manifest."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    return json.loads(props["features"]) if "features" in props else None
