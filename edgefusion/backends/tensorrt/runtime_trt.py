"""The one place TensorRT is imported, and the version facts the build and the cache read from it.

TensorRT is never imported at module level anywhere (``import edgefusion.backends`` must work on
a machine without it); it is looked up through ``importlib`` so that a test's fake in
``sys.modules["tensorrt"]`` is the module found.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgefusion.backends.base import BackendError, first_line


def import_tensorrt() -> Any:
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as err:  # also a python3-libnvinfer whose libnvinfer.so is missing
        raise _not_installed(first_line(err)) from None
    if not hasattr(trt, "__version__"):  # tensorrt-stubs alone: its .pyi folder imports as an empty namespace package
        raise _not_installed(f"{next(iter(getattr(trt, '__path__', [])), 'tensorrt')} holds type stubs only")
    return trt


def _not_installed(why: str) -> BackendError:
    return BackendError(
        f"TensorRT is not installed here ({why}): on a Jetson it comes with JetPack (python3-libnvinfer) "
        "and the venv must see the system's site-packages (systemd/install.sh makes it so); "
        "elsewhere use the onnxruntime backend"
    )


def trt_version(trt: Any) -> str:
    return str(trt.__version__)


def trt_major(trt: Any) -> int:
    return int(trt_version(trt).split(".")[0])


def strongly_typed_flag(trt: Any) -> int | None:
    """The network creation flag bits of a strongly typed network, or None where TensorRT has none
    (8.6): there the precision of a Q/DQ or fp16 graph comes from builder flags instead."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)  # TensorRT 8.6: absent
    return None if flag is None else 1 << int(flag)
