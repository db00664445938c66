"""The model store: converted models kept under DATA_DIR/models/<version>/, one of them active.

A version is the content hash of the model's files, so adding the same model twice is one
version. Which version is active (and the previous one, for rollback) lives in `state.json`,
replaced atomically (written aside, fsynced, renamed): a kill at any moment leaves the old
record or the new one, never none or both. A running appliance polls that file and swaps the
model in between two writer groups (`watch`), so the CLI works the same on a stopped or a
running appliance.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ModelRejected, StartupError
from edge.scoring import model as model_module
from edge.scoring.model import Model

log = logging.getLogger("fdedge.models")

# The files a converted model consists of; the first three are required and make up its version.
HASHED = ("manifest.json", "model.onnx", "scalers.npz")
OPTIONAL = ("MODEL_CARD.md", "training.json")
MAX_ARCHIVE_BYTES = 256 * 1024 * 1024  # unpacked size bound of an uploaded archive
STATE = "state.json"
REPLAY_TOLERANCE = 1e-4  # of the output range, when the manifest's parity names none
# What a load failure was, from model.load's message (it names the file and the check): the reason
# an HTTP client gets beside the message.
_REASONS = (("features must", "features"), ("faults must", "faults"), ("sha256 differs", "hash_mismatch"),
            ("missing or corrupt", "bad_file"), ("not found", "missing_file"), ("manifest", "manifest"))


def content_version(directory: Path) -> str:
    """The first 16 hex digits of sha256 over the required files' names and bytes."""
    digest = hashlib.sha256()
    for name in HASHED:
        path = directory / name
        if not path.is_file():
            raise ModelRejected(f"model file {name} is missing from {directory}", reason="missing_file", file=name)
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _reason(message: str) -> str:
    return next((reason for key, reason in _REASONS if key in message), "invalid_model")


def check(directory: Path, threads: int = 1) -> Model:
    """Load the model as the appliance would (manifest, features, hashes, a test inference), then
    re-run the manifest's parity samples through that runtime path (`replay`)."""
    try:
        model = model_module.load(directory, threads=threads)
    except StartupError as exc:
        raise ModelRejected(str(exc), reason=_reason(str(exc))) from None
    replay(model)
    return model


def replay(model: Model) -> dict[str, Any]:
    """The manifest's `parity.replay` readings (x in the model's input order, y the build step's
    faults) scored on this device and compared with y, within the parity tolerance of the output
    range: a model that computes something else here than where it was converted is refused.
    A manifest without samples (converted before they were kept) is checked by loading only."""
    parity = model.manifest.get("parity")
    if not isinstance(parity, dict) or parity.get("replay") is None:
        return {"samples": 0}
    samples = parity["replay"]
    try:
        x_model = np.asarray(samples["x"], dtype=np.float64)
        expected = np.asarray(samples["y"], dtype=np.float64)
        tolerance = float(parity.get("tolerance", REPLAY_TOLERANCE))
        if x_model.ndim != 2 or x_model.shape[1] != 35 or expected.shape != (len(x_model), 8) or not len(x_model):
            raise ValueError(f"x must be (n, 35) and y (n, 8), got {x_model.shape} and {expected.shape}")
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelRejected(f"manifest parity.replay is malformed: {exc}", reason="parity") from None
    x = np.empty_like(x_model)
    x[:, model.order] = x_model  # predict takes FD-REST's order
    diff = np.abs(model.predict(x) - expected)
    spread = float(np.ptp(expected)) or max(float(np.abs(expected).max()), 1.0)
    worst = float(diff.max()) if np.isfinite(diff).all() else float("inf")
    if worst > tolerance * spread:
        row, col = np.unravel_index(int(np.argmax(np.nan_to_num(diff, nan=np.inf))), diff.shape)
        raise ModelRejected(
            f"parity check failed on this device: the model differs from its manifest's samples by {worst:.3g} "
            f"(more than {tolerance:g} of the output range {spread:.3g}; worst: {model.faults[col]}, sample {row})",
            reason="parity", max_abs_error=worst if np.isfinite(worst) else None)
    return {"samples": int(len(x)), "max_abs_error": worst, "tolerance": tolerance}


def unpack(archive: Path, into: Path) -> Path:
    """A tar.gz of a converted model directory, unpacked under `into`; returns the model's directory.

    Only regular files and directories inside the archive's own tree are taken (tarfile's "data"
    filter, and no links or devices at all), and the unpacked size is bounded."""
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members = tar.getmembers()
            total = 0
            for member in members:
                if not (member.isfile() or member.isdir()):
                    raise ModelRejected(f"archive member {member.name!r} is not a regular file or directory",
                                        reason="not_regular_file", member=member.name[:200])
                if member.name.startswith("/") or ".." in Path(member.name).parts:
                    raise ModelRejected(f"archive member {member.name!r} escapes the archive's directory",
                                        reason="escapes", member=member.name[:200])
                total += member.size
                if total > MAX_ARCHIVE_BYTES:
                    raise ModelRejected(f"archive unpacks to more than {MAX_ARCHIVE_BYTES} bytes",
                                        reason="too_large")
            tar.extractall(into, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ModelRejected(f"{archive.name} is not a readable tar.gz archive: {exc}", reason="not_archive") from None
    candidates = [p.parent for p in into.rglob("manifest.json")]
    if len(candidates) != 1:
        raise ModelRejected(f"archive must hold one model directory with manifest.json, found {len(candidates)}",
                            reason="missing_file", file="manifest.json")
    return candidates[0]


def write_atomically(path: Path, data: bytes) -> None:
    """Written aside, fsynced, renamed over `path`, and the directory fsynced: old or new, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        data_dir = root.parent  # created private (0700) as the database's would be: models are the plant's too
        if not data_dir.exists():
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                data_dir.mkdir(mode=0o700)
        root.mkdir(mode=0o700, exist_ok=True)

    # -- the record -------------------------------------------------------------------------------

    def state(self) -> dict[str, str | None]:
        try:
            data = json.loads((self.root / STATE).read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            raise StartupError(f"model store record {self.root / STATE} is unreadable: {exc}") from None
        return {key: data.get(key) for key in ("active", "previous", "shadow")}

    def _record(self, **changes: str | None) -> None:
        state = {**self.state(), **changes, "changed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_atomically(self.root / STATE, json.dumps(state, indent=1).encode())

    def state_stamp(self) -> int:
        """Changes whenever the record is replaced (a rename gives the file a new inode)."""
        try:
            st = (self.root / STATE).stat()
        except FileNotFoundError:
            return 0
        return st.st_ino ^ st.st_mtime_ns

    # -- the versions -----------------------------------------------------------------------------

    def path(self, version: str) -> Path:
        if not version or not all(c in "0123456789abcdef" for c in version):
            raise ModelRejected(f"{version!r} is not a model version (hex digits)", reason="unknown_version")
        directory = self.root / version
        if not (directory / "manifest.json").is_file():
            raise ModelRejected(f"no model version {version} in the store", reason="unknown_version")
        return directory

    def versions(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and (p / "manifest.json").is_file())

    def describe(self, version: str) -> dict[str, Any]:
        manifest = json.loads((self.path(version) / "manifest.json").read_text())
        state = self.state()
        training = manifest.get("training")
        return {
            "version": version,
            "name": manifest.get("name", "model"),
            "created": manifest.get("created"),
            "parity": manifest.get("parity"),
            "training": training if isinstance(training, dict) else None,
            "active": state["active"] == version,
            "previous": state["previous"] == version,
            "shadow": state["shadow"] == version,
        }

    def manifest_version(self, version: str) -> str | None:
        """The `version` its manifest gives a stored model (what the uplink's messages name), or None."""
        try:
            value = json.loads((self.path(version) / "manifest.json").read_text()).get("version")
        except (ModelRejected, OSError, ValueError):
            return None
        return value if isinstance(value, str) else None

    def list(self) -> list[dict[str, Any]]:
        return [self.describe(v) for v in self.versions()]

    def add(self, source: Path) -> str:
        """Check and keep a model directory or tar.gz; returns its version. Nothing is kept unless it loads."""
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".incoming-") as tmp:
            staging = Path(tmp)
            directory = unpack(source, staging / "unpacked") if source.is_file() else source
            if not directory.is_dir():
                raise ModelRejected(f"{source} is neither a model directory nor a tar.gz archive")
            try:
                version = content_version(directory)
                if (self.root / version / "manifest.json").is_file():
                    return version
                check(directory)
            except ModelRejected as exc:
                if directory == source:
                    raise
                # an archive's files by their names in it, not by the staging directory
                message = exc.message.replace(f"{directory}{os.sep}", "").replace(str(directory), "the archive")
                raise ModelRejected(message, **exc.details) from None
            kept = staging / "kept"
            kept.mkdir()
            for name in HASHED + OPTIONAL:
                if (directory / name).is_file():
                    shutil.copyfile(directory / name, kept / name)
            if content_version(kept) != version:
                raise ModelRejected(f"{source} changed while it was being added")
            for name in HASHED:
                with open(kept / name, "rb") as f:
                    os.fsync(f.fileno())
            os.replace(kept, self.root / version)
        return version

    def activate(self, version: str, threads: int = 1) -> Model:
        """Check the version loads and replays its parity samples, then record it active (the old
        one becomes previous)."""
        model = check(self.path(version), threads)
        state = self.state()
        if state["active"] != version:
            self._record(active=version, previous=state["active"],
                         shadow=None if state["shadow"] == version else state["shadow"])  # promoted
        return model

    def shadow(self, version: str, threads: int = 1) -> Model:
        """Check the version as an activation does, then record it as the shadow (issue 18 item 4):
        it scores beside the active model without answering any request."""
        directory = self.path(version)
        if self.state()["active"] == version:
            raise ModelRejected(f"model {version} is active; shadow another version", reason="active")
        model = check(directory, threads)
        if self.state()["shadow"] != version:
            self._record(shadow=version)
        return model

    def shadow_off(self) -> str | None:
        """No shadow any more; returns the one there was. Its rows stay (retention removes them)."""
        was = self.state()["shadow"]
        if was is not None:
            self._record(shadow=None)
        return was

    def rollback(self) -> str:
        return self.rollback_model()[0]

    def rollback_model(self, threads: int = 1) -> tuple[str, Model]:
        """The previous version, checked, made active again (the active one becomes previous)."""
        state = self.state()
        previous = state["previous"]
        if not previous or not (self.root / previous).is_dir():
            raise ModelRejected("no previous model to roll back to", reason="no_previous")
        model = check(self.path(previous), threads)
        self._record(active=previous, previous=state["active"],
                     shadow=None if state["shadow"] == previous else state["shadow"])
        return previous, model

    def remove(self, version: str) -> None:
        directory = self.path(version)
        state = self.state()
        if state["active"] == version:
            raise ModelRejected(f"model {version} is active; activate another one first", reason="active")
        self._record(previous=None if state["previous"] == version else state["previous"],
                     shadow=None if state["shadow"] == version else state["shadow"])
        trash = self.root / f".removed-{version}"
        os.replace(directory, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def active_dir(self) -> Path:
        active = self.state()["active"]
        if not active:
            raise StartupError(f"model store {self.root} has no active model")
        return self.path(active)

    def prepare(self, model_dir: Path, bundled: Path) -> Path:
        """At start: `--model-dir` is added and activated, unless it is the bundled default and the
        store already has an active model (one chosen with `fdedge model activate`)."""
        state = self.state()
        if model_dir.resolve() == bundled.resolve() and state["active"] and (self.root / state["active"]).is_dir():
            return self.root / state["active"]
        try:
            version = self.add(model_dir)
        except ModelRejected as exc:
            raise StartupError(exc.message) from None
        if state["active"] != version:
            self._record(active=version, previous=state["active"])
        return self.root / version


async def watch(store: ModelStore, scoring: Callable[[], str], swap: Callable[[Model, str], Awaitable[None]],
                interval: float = 1.0, threads: int = 1) -> None:
    """Poll the store's record; a new active version is loaded and checked off the event loop,
    then handed to `swap` (which switches it in between two writer groups). A model that fails
    its check is logged and left out; the one scoring now keeps scoring. `scoring` names the
    version scoring now (an HTTP activation swaps it in itself)."""
    stamp = store.state_stamp()
    while True:
        await asyncio.sleep(interval)
        now = store.state_stamp()
        if now == stamp:
            continue
        stamp = now
        try:
            active = store.state()["active"]
            if not active or active == scoring():
                continue
            model = await asyncio.to_thread(check, store.path(active), threads)
        except (ModelRejected, StartupError) as exc:
            log.error("model store: active model not switched in: %s", exc)
            continue
        if active == scoring():
            continue
        await swap(model, active)
        log.warning("model %s (%s) is now scoring", active, model.name)
