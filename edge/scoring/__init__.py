"""Scoring: the converted model (numpy scaling around one onnxruntime session)."""
