"""What the TensorRT backend needs of CUDA, as one small interface with two implementations:
cuda-python (``cuda-bindings``, the default: CUDA graphs, aarch64 wheels) and pycuda (no graphs).

Device and page-locked host memory are plain integer addresses (what TensorRT's
``set_tensor_address`` and the copies take); a stream is the adapter's own handle, and
``stream_handle`` gives the integer TensorRT's ``execute_async_v3`` takes. Every call's status is
checked: a failure is one ``BackendError`` line naming the call and the CUDA error.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GpuInfo:
    """The GPU a plan is built for: every field is part of the engine cache's key."""

    name: str
    compute_capability: tuple[int, int]
    sm_count: int
    total_memory: int  # bytes


class Cuda(ABC):
    """One device (0), its primary context, and the calls the backend makes."""

    name: str = "cuda"
    has_graphs: bool = False

    @abstractmethod
    def gpu(self) -> GpuInfo: ...

    # memory ------------------------------------------------------------------------------------
    @abstractmethod
    def host_alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A page-locked host array (freed by ``free_host``)."""

    @abstractmethod
    def free_host(self, array: np.ndarray) -> None: ...

    @abstractmethod
    def malloc(self, nbytes: int) -> int:
        """Device memory: its address."""

    @abstractmethod
    def free(self, ptr: int) -> None: ...

    # streams and copies --------------------------------------------------------------------------
    @abstractmethod
    def stream_create(self) -> Any: ...

    @abstractmethod
    def stream_destroy(self, stream: Any) -> None: ...

    @abstractmethod
    def stream_handle(self, stream: Any) -> int:
        """The integer handle TensorRT's ``execute_async_v3`` takes."""

    @abstractmethod
    def copy_htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        """All of page-locked ``src`` to device address ``dst``, enqueued on ``stream``."""

    @abstractmethod
    def copy_dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None: ...

    @abstractmethod
    def copy_htod(self, dst: int, src: np.ndarray) -> None:
        """Synchronous upload, for what is written once (the absent projections)."""

    @abstractmethod
    def synchronize(self, stream: Any) -> None: ...

    # CUDA graphs (has_graphs) -------------------------------------------------------------------
    def begin_capture(self, stream: Any) -> None:
        raise NotImplementedError(f"{self.name} has no CUDA graphs")

    def end_capture(self, stream: Any) -> Any:
        """The captured graph, instantiated: a handle for ``launch`` and ``destroy_graph``."""
        raise NotImplementedError(f"{self.name} has no CUDA graphs")

    def launch(self, graph: Any, stream: Any) -> None:
        raise NotImplementedError(f"{self.name} has no CUDA graphs")

    def destroy_graph(self, graph: Any) -> None:
        raise NotImplementedError(f"{self.name} has no CUDA graphs")

    @abstractmethod
    def close(self) -> None:
        """Release what the adapter holds itself (a pushed context; nothing the caller allocated)."""
