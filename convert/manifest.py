"""manifest.json: what the runtime reads, and what `--if-stale` compares against.

Standard library only: `fdedge convert --if-stale` must answer "up to date" on a
runtime-only install, where tensorflow, scikit-learn and even numpy may be absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 1
MANIFEST = "manifest.json"
ONNX = "model.onnx"
SCALERS = "scalers.npz"
# Keys under "sources": FD-REST's file names, whatever the files are called on disk.
SOURCE_KEYS = ("dnn_model.keras", "feature_scaler.pkl", "target_scaler.pkl")
# Optional inputs that change the outputs too, hashed under these keys (null when not given).
EXTRA_KEYS = ("catalogue.json", "custom_objects.py")


@dataclass(frozen=True)
class Sources:
    """Where the sources are; a scaler of None means identity, a catalogue of None FD-REST's."""

    keras: Path
    feature_scaler: Path | None
    target_scaler: Path | None
    catalogue: Path | None = None
    custom_objects: Path | None = None

    def items(self) -> list[tuple[str, Path | None]]:
        paths = (self.keras, self.feature_scaler, self.target_scaler, self.catalogue, self.custom_objects)
        return list(zip(SOURCE_KEYS + EXTRA_KEYS, paths, strict=True))


def sha256(path: Path) -> str:
    """Of a file's bytes; of a directory (a SavedModel) its files' relative names and bytes, in order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def source_hashes(sources: Sources) -> dict[str, str | None]:
    return {key: (sha256(path) if path is not None and path.exists() else None) for key, path in sources.items()}


def read(out_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def staleness(out_dir: Path, sources: Sources, opset: int) -> str | None:
    """Why the outputs must be rebuilt, or None when they are current.

    Current means: a manifest of this format, built at this opset from sources with the
    same sha256, whose ONNX file and scalers still exist and the ONNX file is the one hashed.
    A directory holding only converted files (sources not shipped) is current as it is.
    """
    manifest = read(out_dir)
    if manifest is None:
        return f"no readable {MANIFEST}"
    if manifest.get("format") != FORMAT:
        return f"manifest format {manifest.get('format')!r} is not {FORMAT}"
    if manifest.get("opset") != opset:
        return f"opset {manifest.get('opset')} was used, {opset} requested"
    recorded = manifest.get("sources") or {}
    given = [path for key, path in sources.items() if path is not None and key in SOURCE_KEYS]
    present = [path for path in given if path.exists()]
    if present and len(present) < len(given):  # a partial set is a mistake, not a deployment
        return f"source {next(p for p in given if not p.exists())} is missing"
    if present:  # no sources at all: a runtime-only copy of the converted files, nothing to rebuild from
        changed = [key for key, digest in source_hashes(sources).items() if recorded.get(key) != digest]
        if changed:
            return "changed: " + ", ".join(changed)
    onnx_path = out_dir / str(manifest.get("onnx", ONNX))
    scalers_path = out_dir / str(manifest.get("scalers", SCALERS))
    for path in (onnx_path, scalers_path):
        if not path.is_file():
            return f"{path.name} is missing"
    if manifest.get("onnx_sha256") and sha256(onnx_path) != manifest["onnx_sha256"]:
        return f"{onnx_path.name} does not match the manifest"
    return None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Readers (the runtime, --if-stale) never see a half-written manifest."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
