"""scikit-learn scalers -> the affine parameters the runtime applies with numpy.

Every supported scaler is `z = x * scale + offset` per column, so the appliance needs two
vectors instead of scikit-learn. The inverse is written the way scikit-learn computes
`inverse_transform` where that is already a multiply-add, keeping the export exact.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.errors import BuildExtraMissing, FeatureNamesError, ScalerError, SourceMissing
from edge import fdrest

SUPPORTED = ("StandardScaler", "MinMaxScaler", "RobustScaler", "MaxAbsScaler")
# Also accepted: a Pipeline of these (composed into one affine) and FunctionTransformer() without
# functions (the identity); see to_affine.
COMPOSITE = ("Pipeline of them", "FunctionTransformer() (identity)")
IDENTITY = "identity"


@dataclass(frozen=True)
class Affine:
    """Forward `z = x * scale + offset`; inverse `x = z * inv_scale + inv_offset`."""

    kind: str
    scale: np.ndarray
    offset: np.ndarray
    inv_scale: np.ndarray
    inv_offset: np.ndarray
    names: tuple[str, ...] | None

    @property
    def n(self) -> int:
        return int(self.scale.shape[0])

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x * self.scale + self.offset

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z * self.inv_scale + self.inv_offset


@dataclass(frozen=True)
class LoadedScaler:
    """A scaler as found on disk: the sklearn object (None = identity) and its affine form."""

    label: str
    estimator: Any
    affine: Affine
    notes: tuple[str, ...] = ()


def identity(n: int, names: tuple[str, ...] | None = None) -> Affine:
    one, zero = np.ones(n), np.zeros(n)
    return Affine(IDENTITY, one, zero, one.copy(), zero.copy(), names)


def _vector(estimator: Any, attr: str, n: int, default: float) -> np.ndarray:
    value = getattr(estimator, attr, None)
    if value is None:
        return np.full(n, default)
    return np.asarray(value, dtype=np.float64).reshape(-1)


def compose(first: Affine, then: Affine, kind: str, names: tuple[str, ...] | None) -> Affine:
    """`then` applied after `first`: still one multiply-add per column, and its inverse."""
    return Affine(
        kind,
        first.scale * then.scale, first.offset * then.scale + then.offset,
        then.inv_scale * first.inv_scale, then.inv_offset * first.inv_scale + first.inv_offset,
        names,
    )


def _names(estimator: Any) -> tuple[str, ...] | None:
    try:
        names = getattr(estimator, "feature_names_in_", None)
    except AttributeError:  # Pipeline's property raises when its first step has none
        names = None
    return tuple(str(v) for v in names) if names is not None else None


def _fitted_width(estimator: Any, role: str, kind: str) -> int:
    try:
        n = getattr(estimator, "n_features_in_", None)
    except AttributeError:  # Pipeline's property raises when unfitted
        n = None
    if not isinstance(n, (int, np.integer)):
        raise ScalerError(f"{role} holds an unfitted {kind}")
    return int(n)


def _pipeline(estimator: Any, role: str) -> Affine:
    """Each step's affine composed in order; 'passthrough' / None steps are skipped."""
    n = _fitted_width(estimator, role, "Pipeline")
    combined, kinds = identity(n), list[str]()
    for name, step in estimator.steps:
        if step is None or step == "passthrough":
            continue
        part = to_affine(step, role=f"{role}'s Pipeline step {name!r}")
        if part.n != combined.n:
            raise ScalerError(f"{role}'s Pipeline step {name!r} has {part.n} columns, the step before {combined.n}")
        combined, kinds = compose(combined, part, "", None), [*kinds, part.kind]
    kind = f"Pipeline({', '.join(kinds)})" if kinds else IDENTITY
    return Affine(kind, combined.scale, combined.offset, combined.inv_scale, combined.inv_offset, _names(estimator))


def _function_transformer(estimator: Any, role: str) -> Affine:
    functions = {"func": estimator.func, "inverse_func": estimator.inverse_func}
    given = {k: getattr(f, "__name__", repr(f)) for k, f in functions.items() if f is not None}
    if given:
        shown = ", ".join(f"{k}={v}" for k, v in given.items())
        raise ScalerError(f"{role} holds a FunctionTransformer({shown}), which is not an affine scaler: "
                          "only FunctionTransformer() without functions (the identity) is supported")
    n = _fitted_width(estimator, role, "FunctionTransformer")
    return identity(n, _names(estimator))


def to_affine(estimator: Any, *, role: str) -> Affine:
    """The affine form of a fitted supported scaler; `role` names it in error messages."""
    kind = type(estimator).__name__
    module = type(estimator).__module__
    if kind == "Pipeline" and module.startswith("sklearn."):
        return _pipeline(estimator, role)
    if kind == "FunctionTransformer" and module.startswith("sklearn."):
        return _function_transformer(estimator, role)
    if kind not in SUPPORTED or not module.startswith("sklearn."):
        raise ScalerError(
            f"{role} holds a {kind}, which is not an affine scaler; "
            f"supported: {', '.join(SUPPORTED)}, a {' or '.join(COMPOSITE)} (or none)"
        )
    n = _fitted_width(estimator, role, kind)
    if kind == "StandardScaler":
        centre = _vector(estimator, "mean_", n, 0.0) if estimator.with_mean else np.zeros(n)
        spread = _vector(estimator, "scale_", n, 1.0) if estimator.with_std else np.ones(n)
        scale, offset, inv_scale, inv_offset = 1.0 / spread, -centre / spread, spread, centre
    elif kind == "RobustScaler":
        centre = _vector(estimator, "center_", n, 0.0) if estimator.with_centering else np.zeros(n)
        spread = _vector(estimator, "scale_", n, 1.0) if estimator.with_scaling else np.ones(n)
        scale, offset, inv_scale, inv_offset = 1.0 / spread, -centre / spread, spread, centre
    elif kind == "MaxAbsScaler":
        spread = _vector(estimator, "scale_", n, 1.0)
        scale, offset, inv_scale, inv_offset = 1.0 / spread, np.zeros(n), spread, np.zeros(n)
    else:  # MinMaxScaler: transform is X * scale_ + min_, inverse is (X - min_) / scale_
        if getattr(estimator, "clip", False) and role.startswith("feature"):
            raise ScalerError(f"{role} is a MinMaxScaler with clip=True, which is not affine")
        scale, offset = _vector(estimator, "scale_", n, 1.0), _vector(estimator, "min_", n, 0.0)
        inv_scale, inv_offset = 1.0 / scale, -offset / scale
    params = (scale, offset, inv_scale, inv_offset)
    if any(p.shape != (n,) or not np.isfinite(p).all() for p in params) or not scale.all():
        raise ScalerError(f"{role}: the {kind}'s parameters are not {n} finite, non-zero numbers")
    return Affine(kind, *params, _names(estimator))


def _version_note(label: str, warning: warnings.WarningMessage) -> str:
    message = warning.message
    original = getattr(message, "original_sklearn_version", None)
    current = getattr(message, "current_sklearn_version", None)
    if original and current:
        return f"{label}: pickled with scikit-learn {original}, loaded with {current}"
    return f"{label}: {str(message).splitlines()[0][:200]}"


def load(path: Path | None, *, label: str) -> LoadedScaler | None:
    """Unpickle a scaler; None means identity. Version-skew warnings become notes.

    Unpickling runs code from the file: only convert scalers you trust (FD-REST's format
    leaves no alternative).
    """
    if path is None:
        return None
    if not path.is_file():
        raise SourceMissing(f"{label} not found: {path}")
    try:
        import joblib
        from sklearn.exceptions import InconsistentVersionWarning
    except ImportError as exc:
        raise BuildExtraMissing(exc.name or "scikit-learn") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator = joblib.load(path)
        except Exception as exc:  # a corrupt pickle can raise almost anything
            detail = (str(exc).splitlines() or [""])[0][:200]
            raise ScalerError(f"{label} {path} cannot be read ({type(exc).__name__}: {detail})") from None
    notes = tuple(
        _version_note(label, w) for w in caught if issubclass(w.category, InconsistentVersionWarning)
    )
    notes = tuple(dict.fromkeys(notes))
    return LoadedScaler(label, estimator, to_affine(estimator, role=label), notes)


def feature_order(affine: Affine, *, label: str) -> tuple[str, ...]:
    """The model's input order: the scaler's feature_names_in_, checked against FD-REST's names."""
    names = affine.names
    if affine.kind == IDENTITY and names is None:
        return fdrest.FEATURES
    if names is None:
        raise FeatureNamesError(
            f"{label} has no feature_names_in_, so the model's input order is unknown; "
            f"fit it on named columns or set feature_names_in_ to FD-REST's 35 names in model order"
        )
    expected = set(fdrest.FEATURES)
    missing = [n for n in fdrest.FEATURES if n not in names]
    unknown = [n for n in names if n not in expected]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if missing or unknown or duplicated:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unknown:
            parts.append(f"unknown {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        if duplicated:
            parts.append(f"duplicated {duplicated[:5]}")
        raise FeatureNamesError(f"{label}'s feature names are not FD-REST's: {'; '.join(parts)}")
    return names
