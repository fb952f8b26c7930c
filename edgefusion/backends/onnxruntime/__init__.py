"""ONNX Runtime backend: the embedded default and the fallback on every machine."""

from edgefusion.backends.onnxruntime.runner import OnnxRuntimeBackend

__all__ = ["OnnxRuntimeBackend"]
