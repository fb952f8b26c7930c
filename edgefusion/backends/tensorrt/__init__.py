"""The TensorRT backend: engines built on the device from the bundle's ONNX graphs, run on one
CUDA stream. ``TensorRTBackend`` is loaded on first use, so importing this package (for its
options, say) loads neither TensorRT nor CUDA."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgefusion.backends.tensorrt.runner import TensorRTBackend


def __getattr__(name: str):
    if name == "TensorRTBackend":
        from edgefusion.backends.tensorrt.runner import TensorRTBackend

        return TensorRTBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TensorRTBackend"]
