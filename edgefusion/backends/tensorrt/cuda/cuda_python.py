"""``Cuda`` over cuda-python's runtime bindings (``cuda.bindings.runtime``): the default adapter,
and the one with CUDA graphs.

Every binding returns a tuple whose first item is a ``cudaError_t`` instead of raising, so a
status left unread is an error that goes unseen until a later call fails for no visible reason:
every call goes through ``_call``, which turns a failure into one ``BackendError`` line naming the
call and the error. Page-locked memory is handed out as a numpy array over the pointer
``cudaHostAlloc`` returns, so the loop writes sensor data straight into what the copies read.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from edgefusion.backends.base import BackendError, first_line
from edgefusion.backends.tensorrt.cuda.api import Cuda, GpuInfo


class CudaPython(Cuda):
    name = "cuda-python"
    has_graphs = True

    def __init__(self, runtime: Any):
        """``runtime``: the ``cuda.bindings.runtime`` module. Fails (one line) where there is no
        driver or GPU, so the backend says so at activation rather than at its first copy."""
        self._rt = runtime
        self._ok = runtime.cudaError_t.cudaSuccess
        self._htod = runtime.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._dtoh = runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._pinned: dict[int, int] = {}  # id of each host_alloc array -> its page-locked address
        self._probe()
        self._call("cudaSetDevice", 0)

    def _probe(self) -> None:
        try:
            err, count = self._rt.cudaGetDeviceCount()
        except Exception as exc:  # cuda.pathfinder's DynamicLibNotFoundError where libcuda.so is missing
            raise BackendError(f"no CUDA driver or GPU here ({first_line(exc)})") from exc
        errors = self._rt.cudaError_t
        if err == errors.cudaErrorInsufficientDriver:
            raise BackendError(
                "no CUDA driver or GPU here (cudaGetDeviceCount: cudaErrorInsufficientDriver: no driver, "
                "or one older than this cuda-bindings needs; on JetPack 6 use cuda-bindings 12.x)"
            )
        if err == errors.cudaErrorNoDevice or (err == self._ok and count == 0):
            raise BackendError("no CUDA driver or GPU here (cudaGetDeviceCount: no CUDA device)")
        self._check("cudaGetDeviceCount", err)

    def _call(self, call: str, *args) -> Any:
        """The binding's result after its status: None, one value, or a tuple of them."""
        result = getattr(self._rt, call)(*args)
        self._check(call, result[0])
        if len(result) == 1:
            return None
        return result[1] if len(result) == 2 else result[1:]

    def _check(self, call: str, err: Any) -> None:
        if err != self._ok:
            raise BackendError(f"CUDA {call} failed: {self._error_name(err)}")

    def _error_name(self, err: Any) -> str:
        status, name = self._rt.cudaGetErrorName(err)
        return name.decode() if status == self._ok else getattr(err, "name", str(err))

    def gpu(self) -> GpuInfo:
        props = self._call("cudaGetDeviceProperties", 0)
        name = props.name.split(b"\0", 1)[0].decode(errors="replace")
        return GpuInfo(name, (props.major, props.minor), props.multiProcessorCount, props.totalGlobalMem)

    # memory ------------------------------------------------------------------------------------
    def host_alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        ptr = int(self._call("cudaHostAlloc", nbytes, self._rt.cudaHostAllocDefault))
        array = np.frombuffer(memoryview((ctypes.c_byte * nbytes).from_address(ptr)), dtype).reshape(shape)
        self._pinned[id(array)] = ptr
        return array

    def free_host(self, array: np.ndarray) -> None:
        self._call("cudaFreeHost", self._pinned.pop(id(array)))

    def _pinned_address(self, array: np.ndarray) -> int:
        """Where a ``host_alloc`` array lives, looked up rather than asked of numpy: a tick then
        makes no numpy object (``ndarray.ctypes`` and ``__array_interface__`` build one per access)."""
        ptr = self._pinned.get(id(array))
        if ptr is None:
            raise ValueError("an async copy needs an array from host_alloc (page-locked memory)")
        return ptr

    def malloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", nbytes))

    def free(self, ptr: int) -> None:
        self._call("cudaFree", ptr)

    # streams and copies --------------------------------------------------------------------------
    def stream_create(self) -> Any:
        return self._call("cudaStreamCreateWithFlags", self._rt.cudaStreamNonBlocking)

    def stream_destroy(self, stream: Any) -> None:
        self._call("cudaStreamDestroy", stream)

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def copy_htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self._call("cudaMemcpyAsync", dst, self._pinned_address(src), src.nbytes, self._htod, stream)

    def copy_dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        self._call("cudaMemcpyAsync", self._pinned_address(dst), src, dst.nbytes, self._dtoh, stream)

    def copy_htod(self, dst: int, src: np.ndarray) -> None:
        src = np.ascontiguousarray(src)
        self._call("cudaMemcpy", dst, src.ctypes.data, src.nbytes, self._htod)

    def synchronize(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", stream)

    # CUDA graphs ----------------------------------------------------------------------------------
    def begin_capture(self, stream: Any) -> None:
        """Thread-local mode: another thread's CUDA calls (a sensor's, a library's) neither join
        nor break this capture."""
        mode = self._rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._call("cudaStreamBeginCapture", stream, mode)

    def end_capture(self, stream: Any) -> Any:
        """The instantiated graph; the captured one is destroyed at once (the instance does not need it)."""
        graph = self._call("cudaStreamEndCapture", stream)
        try:
            return self._call("cudaGraphInstantiate", graph, 0)
        finally:
            self._call("cudaGraphDestroy", graph)

    def launch(self, graph: Any, stream: Any) -> None:
        self._call("cudaGraphLaunch", graph, stream)

    def destroy_graph(self, graph: Any) -> None:
        self._call("cudaGraphExecDestroy", graph)

    def close(self) -> None:
        """Nothing to release: the runtime API's primary context is the process's, shared with TensorRT."""
