"""Inference backends behind one protocol (base.Backend); each imports its library lazily."""

from __future__ import annotations

from edgefusion.backends.base import Backend, BackendError
from edgefusion.bundle import Bundle

BACKENDS = ("onnxruntime",)


def make_backend(name: str, bundle: Bundle, precision: str = "fp32", **options) -> Backend:
    if name == "onnxruntime":
        from edgefusion.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle, precision, **options)
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "BackendError", "make_backend"]
