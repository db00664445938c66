"""Loading TensorFlow/Keras quietly, and the Keras model with its shape checks.

TensorFlow is imported here and only here (and in train.py), so the rest of the build
step can report problems with scalers or CSVs before paying TensorFlow's start-up cost.
"""

from __future__ import annotations

import os
import re
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from convert.errors import BuildExtraMissing, DimensionMismatch, ModelLoadError, SourceMissing


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 while TensorFlow's shared libraries initialise.

    TensorFlow 2.21 logs oneDNN/absl banners from C++ at import time, and only honours
    TF_CPP_MIN_LOG_LEVEL when it was in the environment at process start, so setting it
    here is not enough. Python-level errors are exceptions, so nothing useful is lost.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow() -> tuple[ModuleType, ModuleType]:
    """(tensorflow, keras), without TensorFlow's start-up chatter."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        if "tensorflow" in sys.modules:
            import tensorflow as tf
        else:
            with quiet_stderr():
                import tensorflow as tf
        import keras
    except ImportError as exc:
        raise BuildExtraMissing(exc.name or "tensorflow") from None
    tf.get_logger().setLevel("ERROR")
    return tf, keras


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
CUSTOM_HINT = "pass --custom-objects FILE.py defining it (this runs FILE.py's code)"
LAMBDA_HINT = ("fdedge convert never runs a Lambda's stored bytecode: save the model with the function defined "
               "by name (def) instead of lambda and pass --custom-objects FILE.py defining it")


@dataclass(frozen=True)
class Source:
    """The model as it will be exported, and what was done to get it there."""

    model: Any
    notes: tuple[str, ...] = ()
    float16: bool = False  # the original computes in a 16-bit float policy


def _keras_message(exc: BaseException) -> str:
    """Keras's whole message on one line, its one actionable sentence first."""
    whole = " ".join(str(exc).split())
    innermost = whole.rsplit("Exception encountered: ", 1)[-1]
    if "safe_mode" in whole and "Lambda" in whole:
        return f"a Lambda layer holds a Python lambda; {LAMBDA_HINT}. Keras said: {type(exc).__name__}: {whole}"
    located = re.match(r"(Could not locate (?:function|class) '[^']+')", innermost)
    if located:
        return f"{located.group(1)}; {CUSTOM_HINT}. Keras said: {type(exc).__name__}: {whole}"
    return f"{type(exc).__name__}: {whole}"


def kind(path: Path) -> str:
    """'keras' (Keras 3 archive), 'h5' (legacy HDF5) or 'saved_model' (TensorFlow SavedModel directory)."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "saved_model"
        raise SourceMissing(f"{path} is a directory without saved_model.pb: not a TensorFlow SavedModel")
    if not path.is_file():
        raise SourceMissing(f"Keras model not found: {path}")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head == HDF5_SIGNATURE:
        return "h5"
    if zipfile.is_zipfile(path):
        return "keras"
    raise ModelLoadError(f"{path} is not a Keras 3 .keras archive, a legacy .h5 file or a SavedModel directory "
                         "(truncated or another format)")


def _from_saved_model(path: Path, tf: ModuleType, keras: ModuleType) -> Any:
    """A SavedModel's serving signature as a one-input, one-output Keras model (TFSMLayer)."""
    try:
        with quiet_stderr():  # TensorFlow's C++ loader logs (fingerprints, op registrations) before raising
            signature = tf.saved_model.load(str(path)).signatures.get("serving_default")
    except Exception as exc:  # TensorFlow raises many kinds for damaged protos
        raise ModelLoadError(f"{path} cannot be loaded as a SavedModel ({' '.join(str(exc).split())})") from None
    if signature is None:
        raise ModelLoadError(f"{path} has no serving_default signature; export it with model.export(path)")
    _, inputs = signature.structured_input_signature
    outputs = signature.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise DimensionMismatch(f"{path}: expected one input and one output in serving_default, "
                                f"got {sorted(inputs)} and {sorted(outputs)}")
    (spec,), (out_name,) = inputs.values(), outputs
    if spec.shape.rank != 2 or spec.shape[1] is None:
        raise DimensionMismatch(f"{path}: expected input (batch, n), got {tuple(spec.shape)}")
    with quiet_stderr():
        layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    x = keras.Input((int(spec.shape[1]),), name="features")
    return keras.Model(x, layer(x)[out_name], name=path.name)


def _float16_policies(model: Any) -> list[str]:
    policies = [getattr(layer, "dtype_policy", None) for layer in [model, *flat_layers(model)]]
    return sorted({str(getattr(p, "name", "")) for p in policies
                   if str(getattr(p, "compute_dtype", "")) in ("float16", "bfloat16")})


def _as_float32(config: Any) -> Any:
    if isinstance(config, dict):
        if config.get("class_name") in ("DTypePolicy", "Policy") and isinstance(config.get("config"), dict):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {k: _as_float32(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_as_float32(v) for v in config]
    return "float32" if config in ("mixed_float16", "mixed_bfloat16") else config


def _float32_clone(model: Any, keras: ModuleType, custom_objects: dict[str, Any] | None) -> Any | None:
    """The same weights with every layer computing in float32, or None if the model cannot be rebuilt."""
    try:
        config = _as_float32(keras.saving.serialize_keras_object(model))
        clone = keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)
        clone.set_weights(model.get_weights())
    except Exception:  # subclassed models without a full get_config cannot be rebuilt from it
        return None
    return clone if not _float16_policies(clone) else None


def load_source(path: Path, custom_objects: dict[str, Any] | None = None) -> Source:
    """The model, compile=False (inference only) and safe_mode on (no stored bytecode is run).

    Accepts a Keras 3 `.keras` archive, a legacy `.h5` file and a TensorFlow SavedModel
    directory. A mixed-precision model is rebuilt to compute in float32: ONNX then holds
    float32 kernels, as the runtime feeds them, and parity is judged at float32 precision.
    """
    source_kind = kind(path)
    tf, keras = import_tensorflow()
    notes: list[str] = []
    try:
        if source_kind == "saved_model":
            model = _from_saved_model(path, tf, keras)
        else:
            model = keras.models.load_model(path, custom_objects=custom_objects, compile=False, safe_mode=True)
    except (ModelLoadError, DimensionMismatch):
        raise
    except Exception as exc:  # keras raises ValueError, TypeError, OSError, KeyError, zip errors...
        raise ModelLoadError(f"{path} cannot be loaded by Keras: {_keras_message(exc)}") from None
    if source_kind != "keras":
        notes.append(f"model read from a {'legacy HDF5 file' if source_kind == 'h5' else 'TensorFlow SavedModel'}")
    policies = _float16_policies(model)
    if not policies:
        return Source(model, tuple(notes))
    clone = _float32_clone(model, keras, custom_objects)
    if clone is None:
        notes.append(f"model computes in {', '.join(policies)} and could not be rebuilt in float32; "
                     "parity is judged against its 16-bit output")
        return Source(model, tuple(notes), float16=True)
    notes.append(f"model computes in {', '.join(policies)}: converted and checked in float32 "
                 f"(16-bit Keras output differs by {_float16_gap(model, clone):.2g} of the output range)")
    return Source(clone, tuple(notes), float16=True)


def _float16_gap(model: Any, clone: Any) -> float:
    import numpy as np

    n = int(model.inputs[0].shape[-1]) if getattr(model, "inputs", None) else 35
    x = np.random.default_rng(0).standard_normal((256, n)).astype(np.float32)
    with quiet_stderr():  # oneDNN's one-off "DT_HALF only with AVX-512" line from C++
        a = np.asarray(model(x, training=False), dtype=np.float64)
    b = np.asarray(clone(x, training=False), dtype=np.float64)
    return float(np.max(np.abs(a - b)) / (np.ptp(b) or 1.0))


def load(path: Path, custom_objects: dict[str, Any] | None = None) -> Any:
    """The model as exported (see load_source)."""
    return load_source(path, custom_objects).model


def flat_layers(model: Any) -> list[Any]:
    """Every layer, nested models' layers included."""
    found = []
    for layer in getattr(model, "layers", None) or []:
        found.append(layer)
        found.extend(flat_layers(layer))
    return found


def layer_names(model: Any) -> list[str]:
    return [str(layer.name) for layer in flat_layers(model)]


def io_sizes(model: Any, path: Path, n_hint: int = 35) -> tuple[int, int]:
    """(number of input features, number of outputs) of a single-input, single-output model.

    A subclassed model has no symbolic inputs: it is called once on `n_hint` zeros (the
    feature scaler's width) and its output shape read.
    """
    try:
        inputs, outputs = list(model.inputs or []), list(model.outputs or [])
    except AttributeError:  # subclassed keras.Model: no functional graph
        return _probe(model, path, n_hint)
    if len(inputs) != 1 or len(outputs) != 1:
        raise DimensionMismatch(f"{path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
    in_shape, out_shape = tuple(inputs[0].shape), tuple(outputs[0].shape)
    if len(in_shape) != 2 or len(out_shape) != 2 or in_shape[1] is None or out_shape[1] is None:
        raise DimensionMismatch(f"{path}: expected input (batch, n) and output (batch, m), "
                                f"got {in_shape} -> {out_shape}")
    return int(in_shape[1]), int(out_shape[1])


def _probe(model: Any, path: Path, n: int) -> tuple[int, int]:
    import numpy as np

    try:
        out = model(np.zeros((1, n), dtype=np.float32), training=False)
    except Exception as exc:  # the user's call() may raise anything
        raise DimensionMismatch(f"{path}: the subclassed model cannot be called on (1, {n}) inputs "
                                f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    shape = tuple(getattr(out, "shape", ()))
    if len(shape) != 2 or shape[1] is None:
        raise DimensionMismatch(f"{path}: expected output (batch, m), got {shape} (one tensor, not a list or dict)")
    return n, int(shape[1])
