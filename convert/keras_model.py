"""Loading TensorFlow/Keras quietly, and the Keras model with its shape checks.

TensorFlow is imported here and only here (and in train.py), so the rest of the build
step can report problems with scalers or CSVs before paying TensorFlow's start-up cost.
"""

from __future__ import annotations

import os
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
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


def load(path: Path) -> Any:
    """The Keras model, compile=False (inference only) and safe_mode on (no lambda code)."""
    if not path.is_file():
        raise SourceMissing(f"Keras model not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path} is not a Keras 3 .keras archive (truncated or another format)")
    _, keras = import_tensorflow()
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # keras raises ValueError, OSError, KeyError, zip errors...
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelLoadError(f"{path} cannot be loaded by Keras ({type(exc).__name__}: {detail})") from None
    return model


def io_sizes(model: Any, path: Path) -> tuple[int, int]:
    """(number of input features, number of outputs) of a single-input, single-output model."""
    inputs, outputs = list(model.inputs or []), list(model.outputs or [])
    if len(inputs) != 1 or len(outputs) != 1:
        raise DimensionMismatch(f"{path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
    in_shape, out_shape = tuple(inputs[0].shape), tuple(outputs[0].shape)
    if len(in_shape) != 2 or len(out_shape) != 2 or in_shape[1] is None or out_shape[1] is None:
        raise DimensionMismatch(f"{path}: expected input (batch, n) and output (batch, m), "
                                f"got {in_shape} -> {out_shape}")
    return int(in_shape[1]), int(out_shape[1])
