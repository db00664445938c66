"""The build step's failures, each one a sentence for the operator.

`cli.main` turns any ConvertError into one line on stderr and exit code 2, so a bad model
directory never shows a traceback; anything else escaping is a bug in this package.
"""

from __future__ import annotations

BUILD_EXTRA_HINT = "install the build extra: pip install -e '.[build]'"


class ConvertError(Exception):
    """Base class: the message is shown as is, prefixed by the command name."""

    exit_code = 2


class BuildExtraMissing(ConvertError):
    """tensorflow / tf2onnx / onnx / scikit-learn / joblib is not importable."""

    def __init__(self, module: str) -> None:
        super().__init__(f"{module} is not installed; {BUILD_EXTRA_HINT}")


class SourceMissing(ConvertError):
    """A source file (model or scaler) does not exist."""


class ModelLoadError(ConvertError):
    """The model file exists but Keras cannot read it (truncated, not a Keras archive...)."""


class CustomObjectsError(ConvertError):
    """The --custom-objects file cannot be imported or defines nothing usable."""


class CatalogueError(ConvertError):
    """The --catalogue file is unreadable or not a catalogue of FD-REST's eight faults."""


class ScalerError(ConvertError):
    """A scaler pickle is unreadable or not an affine scikit-learn scaler."""


class FeatureNamesError(ConvertError):
    """The feature scaler's feature_names_in_ is absent or not FD-REST's 35 names."""


class DimensionMismatch(ConvertError):
    """Scaler and model disagree on the number of features or outputs."""


class SampleError(ConvertError):
    """The --sample / --reference CSV is unreadable or lacks feature columns."""


class ExportError(ConvertError):
    """tf2onnx or onnxruntime could not produce a loadable ONNX file."""


class UnsupportedOp(ExportError):
    """The graph holds an operator ONNX has no equivalent for and no rewrite covers."""


class ParityError(ConvertError):
    """The converted pipeline does not reproduce the Keras pipeline within tolerance."""


class SimulatorMissing(ConvertError):
    """`fdedge train` needs simulator.dataset.generate(rows, seed)."""


class TrainingDataError(ConvertError):
    """`fdedge train --csv`: the labelled readings cannot be trained on."""
