"""The CUDA adapter the TensorRT backend runs on, chosen by ``[tensorrt] cuda``.

Each library is imported only here, when asked for: ``import edgefusion.backends`` never loads
CUDA, and a machine without the library or without a driver gets one line saying which.
"""

from __future__ import annotations

import importlib

from edgefusion.backends.base import BackendError
from edgefusion.backends.tensorrt.cuda.api import Cuda, GpuInfo
from edgefusion.backends.tensorrt.options import CUDA_ADAPTERS

_INSTALL = {
    "cuda-python": "pip install cuda-bindings (12.x for JetPack 6's CUDA 12, 13.x for CUDA 13)",
    "pycuda": "pip install pycuda on the device, where it compiles against the CUDA toolkit",
}


def open_cuda(name: str) -> Cuda:
    """The adapter ``name`` (one of CUDA_ADAPTERS) on device 0, ready for allocations."""
    if name == "cuda-python":
        from edgefusion.backends.tensorrt.cuda.cuda_python import CudaPython

        return CudaPython(_import(name, "cuda.bindings.runtime"))
    if name == "pycuda":
        from edgefusion.backends.tensorrt.cuda.pycuda import PyCuda

        return PyCuda(_import(name, "pycuda.driver"))
    raise BackendError(f"unknown CUDA adapter {name!r}; choose one of {', '.join(CUDA_ADAPTERS)}")


def _import(name: str, module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise BackendError(f"{name} is not installed here ({err}): {_INSTALL[name]}") from err
    except ImportError as err:  # pycuda.driver links libcuda.so itself: no driver, no import
        raise BackendError(f"no CUDA driver or GPU here ({err})") from err


__all__ = ["Cuda", "GpuInfo", "open_cuda"]
