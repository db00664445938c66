"""FD-Edge build step: Keras + scikit-learn artifacts -> ONNX + numpy scaler parameters."""

import edge  # noqa: F401  (sets ORT_DISABLE_TELEMETRY before onnxruntime is imported)
