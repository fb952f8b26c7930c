"""``Cuda`` over pycuda (``pycuda.driver``), for a device where pycuda is what is installed.

pycuda has no CUDA graph API, so the backend enqueues every tick's work itself with it. It
shares the device's primary context with TensorRT (``retain_primary_context``), which TensorRT's
runtime uses: a context of its own would make every engine's memory foreign to the copies.
pycuda raises ``pycuda.driver.Error`` subclasses; each becomes one ``BackendError`` line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np

from edgefusion.backends.base import BackendError, first_line
from edgefusion.backends.tensorrt.cuda.api import Cuda, GpuInfo


class PyCuda(Cuda):
    name = "pycuda"
    has_graphs = False

    def __init__(self, driver: Any):
        """``driver``: the ``pycuda.driver`` module."""
        self._drv = driver
        try:
            driver.init()
            device = driver.Device(0)
        except driver.Error as err:
            raise BackendError(f"no CUDA driver or GPU here ({first_line(err)})") from err
        self._device = device
        self._context = self._call("retain_primary_context", device.retain_primary_context)
        self._call("push the primary context", self._context.push)
        self._device_memory: dict[int, Any] = {}  # address -> DeviceAllocation (freed when dropped)

    def _call(self, what: str, fn: Callable, *args) -> Any:
        try:
            return fn(*args)
        except self._drv.Error as err:
            raise BackendError(f"CUDA {what} failed: {first_line(err)}") from err

    def gpu(self) -> GpuInfo:
        attribute = self._drv.device_attribute.MULTIPROCESSOR_COUNT
        return GpuInfo(
            self._call("Device.name", self._device.name),
            tuple(self._call("Device.compute_capability", self._device.compute_capability)),
            self._call("Device.get_attribute", self._device.get_attribute, attribute),
            self._call("Device.total_memory", self._device.total_memory),
        )

    # memory ------------------------------------------------------------------------------------
    def host_alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self._call("pagelocked_empty", self._drv.pagelocked_empty, shape, dtype)

    def free_host(self, array: np.ndarray) -> None:
        self._call("HostAllocation.free", cast(Any, array.base).free)

    def malloc(self, nbytes: int) -> int:
        allocation = self._call("mem_alloc", self._drv.mem_alloc, nbytes)
        self._device_memory[int(allocation)] = allocation
        return int(allocation)

    def free(self, ptr: int) -> None:
        self._call("DeviceAllocation.free", self._device_memory.pop(ptr).free)

    # streams and copies --------------------------------------------------------------------------
    def stream_create(self) -> Any:
        return self._call("Stream", self._drv.Stream)

    def stream_destroy(self, stream: Any) -> None:
        """pycuda destroys a stream when its object goes: synchronize so none of its work is left."""
        self.synchronize(stream)

    def stream_handle(self, stream: Any) -> int:
        return stream.handle

    def copy_htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self._call("memcpy_htod_async", self._drv.memcpy_htod_async, dst, src, stream)

    def copy_dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        self._call("memcpy_dtoh_async", self._drv.memcpy_dtoh_async, dst, src, stream)

    def copy_htod(self, dst: int, src: np.ndarray) -> None:
        self._call("memcpy_htod", self._drv.memcpy_htod, dst, np.ascontiguousarray(src))

    def synchronize(self, stream: Any) -> None:
        self._call("Stream.synchronize", stream.synchronize)

    def close(self) -> None:
        """Pop the primary context this adapter pushed and release its hold on it."""
        self._call("Context.pop", self._context.pop)
        self._call("Context.detach", self._context.detach)
