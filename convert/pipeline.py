"""One conversion: check sources, export, verify, then publish the outputs together.

Outputs are built and verified in a scratch directory next to the destination and moved
in only after parity passes, manifest last: a failed build leaves the previous model
serving, and a reader never pairs a new model.onnx with an old scalers.npz.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from convert import (
    catalogue,
    custom_objects,
    keras_model,
    manifest,
    onnx_export,
    parity,
    readings,
    scalers,
    training_stats,
)
from convert.errors import DimensionMismatch, ExportError, ParityError, SampleError, SourceMissing
from edge import fdrest


@dataclass(frozen=True)
class Job:
    sources: manifest.Sources
    out_dir: Path
    name: str
    opset: int = 17
    tolerance: float = 1e-4
    sample: Path | None = None
    reference: Path | None = None
    optimize: str = "auto"
    samples: int = 1024
    seed: int = 0


def tool_versions() -> dict[str, str]:
    import keras
    import onnx
    import sklearn
    import tensorflow
    import tf2onnx

    from edge.scoring.model import ort as onnxruntime

    return {
        "tensorflow": tensorflow.__version__, "keras": keras.__version__, "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
        "scikit-learn": sklearn.__version__, "numpy": np.__version__,
    }


def _check_dimensions(model_path: Path, n_in: int, n_out: int,
                      feature: scalers.Affine, target: scalers.Affine) -> None:
    if feature.n != n_in:
        raise DimensionMismatch(f"the feature scaler has {feature.n} features, "
                                f"the model {model_path.name} expects {n_in}")
    if target.n != n_out:
        raise DimensionMismatch(f"the target scaler has {target.n} outputs, "
                                f"the model {model_path.name} produces {n_out}")
    if n_out != len(fdrest.FAULTS):
        raise DimensionMismatch(f"the model produces {n_out} outputs; "
                                f"FD-REST's catalogue has {len(fdrest.FAULTS)} faults")
    if n_in != len(fdrest.FEATURES):
        raise DimensionMismatch(f"the model expects {n_in} features; FD-REST readings have {len(fdrest.FEATURES)}")


def _parity_readings(job: Job, features: tuple[str, ...], feature: scalers.Affine) -> tuple[readings.Readings, str]:
    if job.reference is not None:
        data = readings.read_csv(job.reference, features)
        if data.faults is None:
            raise SampleError(f"{job.reference} has no fault0..fault7 columns to compare with")
        return data, "reference"
    if job.sample is not None:
        return readings.read_csv(job.sample, features), "sample-data"
    return readings.from_statistics(feature, job.samples, job.seed), "scaler-statistics"


def run(job: Job, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Convert, verify and publish; returns the manifest written."""
    src = job.sources
    keras_model.kind(src.keras)  # exists, and is a format Keras reads
    for label, path in (("feature scaler", src.feature_scaler), ("target scaler", src.target_scaler),
                        ("catalogue", src.catalogue), ("--custom-objects file", src.custom_objects)):
        if path is not None and not path.is_file():
            raise SourceMissing(f"{label} not found: {path}")
    hashes = manifest.source_hashes(src)  # of the bytes about to be read, not of a later rewrite
    entries = catalogue.load(src.catalogue)
    feature_src = scalers.load(src.feature_scaler, label="feature scaler")
    target_src = scalers.load(src.target_scaler, label="target scaler")
    notes = [note for s in (feature_src, target_src) if s is not None for note in s.notes]

    objects = custom_objects.load(src.custom_objects) if src.custom_objects else None
    loaded = keras_model.load_source(src.keras, objects)
    model = loaded.model
    notes += loaded.notes
    for note in notes:
        log(f"note: {note}")
    n_in, n_out = keras_model.io_sizes(model, src.keras, feature_src.affine.n if feature_src else len(fdrest.FEATURES))
    feature = feature_src.affine if feature_src else scalers.identity(n_in)
    target = target_src.affine if target_src else scalers.identity(n_out)
    _check_dimensions(src.keras, n_in, n_out, feature, target)
    features = scalers.feature_order(feature, label="feature scaler")
    data, source = _parity_readings(job, features, feature)

    job.out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=job.out_dir, prefix=".convert-"))
    try:
        onnx_path, scalers_path = scratch / manifest.ONNX, scratch / manifest.SCALERS
        metadata = {"name": job.name, "features": json.dumps(features), "faults": json.dumps(fdrest.FAULTS)}
        for note in onnx_export.export(model, n_in, job.opset, onnx_path, metadata):
            log(f"note: {note}")
            notes.append(note)
        np.savez(scalers_path, x_scale=feature.scale, x_offset=feature.offset,
                 y_scale=target.inv_scale, y_offset=target.inv_offset)
        probe = feature.forward(data.x).astype(np.float32)
        optimisation = onnx_export.optimise(onnx_path, scratch / "optimised.onnx", probe, job.tolerance, job.optimize)
        if onnx_export.metadata_features(onnx_path) != list(features):
            raise ExportError("the ONNX file's feature metadata does not match the scaler's order")
        try:
            figures = parity.check(model, feature_src, target_src, data.x, onnx_path, scalers_path,
                                   tolerance=job.tolerance, source=source,
                                   expected=data.faults if source == "reference" else None)
        except ParityError as exc:
            if not loaded.float16:
                raise
            raise ParityError(f"{exc}; the model computes in 16-bit floats (about 3 significant digits), which "
                              "alone can exceed the tolerance: re-save it with a float32 policy or raise --tolerance "
                              "(e.g. --tolerance 1e-2)") from None
        onnx_hash = manifest.sha256(onnx_path)
        stats = training_stats.choose(src.keras.parent, hashes.get("dnn_model.keras"), job.sample, feature, features,
                                      job.seed)
        document = {
            "format": manifest.FORMAT,
            "name": job.name, "version": onnx_hash[:12], "onnx_sha256": onnx_hash,
            "onnx": manifest.ONNX, "scalers": manifest.SCALERS,
            "input_name": onnx_export.INPUT_NAME, "output_name": onnx_export.OUTPUT_NAME, "opset": job.opset,
            "features": list(features), "faults": list(fdrest.FAULTS),
            "catalogue": [dict(entry) for entry in entries],
            "scalers_kind": {"features": feature.kind, "targets": target.kind},
            "sources": hashes,
            "tools": tool_versions(),
            "parity": figures,
            "graph_optimization": optimisation.as_dict(),
            "notes": notes,
            "training_stats": stats,
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for path in (onnx_path, scalers_path):
            path.replace(job.out_dir / path.name)
        manifest.write_json_atomic(job.out_dir / manifest.MANIFEST, document)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return document
