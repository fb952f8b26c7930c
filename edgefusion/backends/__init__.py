"""Inference backends behind one protocol (base.Backend); each imports its library lazily.

``open_backend`` (fallback.py) is what a run uses: the configured backend, or the best one that
runs here, activated. ``make_backend`` builds one backend, inactive, for a caller that wants
exactly that one.
"""

from __future__ import annotations

from edgefusion.backends.base import Backend, BackendError, first_line
from edgefusion.bundle import Bundle

BACKENDS = ("onnxruntime", "tensorrt")


def not_installed(err: ImportError) -> BackendError:
    """The TensorRT backend's code, or what it imports, is not here: a fact about this machine
    (a workstation, a venv that cannot see JetPack's packages), not a bug to show as a traceback."""
    return BackendError(f"TensorRT is not installed here ({first_line(err)})")


def make_backend(name: str, bundle: Bundle, precision: str = "fp32", threads: int = 1, tensorrt=None) -> Backend:
    """One backend, not yet active. ``threads``: ONNX Runtime's intra-op threads; ``tensorrt``:
    the ``[tensorrt]`` section (TensorRTOptions; None for its defaults)."""
    if name == "onnxruntime":
        from edgefusion.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle, precision, threads=threads)
    if name == "tensorrt":
        from edgefusion.backends.tensorrt import TensorRTBackend  # imports neither TensorRT nor CUDA

        return TensorRTBackend(bundle, precision, tensorrt)
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


# Below make_backend: fallback.py's default factory is make_backend itself.
from edgefusion.backends.fallback import open_backend  # noqa: E402

__all__ = ["BACKENDS", "Backend", "BackendError", "make_backend", "open_backend"]
