"""FD-Edge build step: Keras + scikit-learn artifacts -> ONNX + numpy scaler parameters."""
