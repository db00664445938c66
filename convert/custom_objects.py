"""`--custom-objects FILE.py`: the user's own activations, layers and models, for Keras to load.

This RUNS the file's code, which is why it is an explicit flag and never a default: Keras
can only rebuild a custom function or class from its name if the Python object exists.
Everything public the file defines (functions and classes) is offered under its own name;
a dict named CUSTOM_OBJECTS in the file adds or overrides names. Functions or classes the
file registers with `@keras.saving.register_keras_serializable` are found by Keras anyway.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from typing import Any

from convert.errors import CustomObjectsError, SourceMissing


def _where(exc: BaseException, path: Path) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f" at line {frames[-1].lineno}" if frames else ""


def load(path: Path) -> dict[str, Any]:
    """Import `path` as a module and return {name: function or class} for keras's custom_objects."""
    if not path.is_file():
        raise SourceMissing(f"--custom-objects file not found: {path}")
    from convert.keras_model import import_tensorflow

    import_tensorflow()  # the file will import keras: quietly, and with the TensorFlow backend
    path = path.resolve()
    name = "fdedge_custom_objects_" + hashlib.sha256(str(path).encode()).hexdigest()[:10]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CustomObjectsError(f"--custom-objects {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and keras's registry look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code can raise anything, SyntaxError included
        sys.modules.pop(name, None)
        detail = " ".join(str(exc).split())
        raise CustomObjectsError(f"--custom-objects {path} failed{_where(exc, path)} "
                                 f"({type(exc).__name__}: {detail})") from None
    objects = {key: value for key, value in vars(module).items()
               if not key.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value))
               and getattr(value, "__module__", None) == name}
    extra = getattr(module, "CUSTOM_OBJECTS", None)
    if extra is not None:
        if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
            raise CustomObjectsError(f"--custom-objects {path}: CUSTOM_OBJECTS must be a dict of names to objects")
        objects.update(extra)
    if not objects:
        raise CustomObjectsError(f"--custom-objects {path} defines no functions or classes")
    return objects
