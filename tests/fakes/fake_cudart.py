"""FAKE ``cuda.bindings.runtime`` for tests without a GPU: device memory is host memory.

Every function has the real module's name and binds its arguments to the real function's
signature first (``inspect.signature(real).bind``), so an adapter call that drifted from the real
API raises TypeError here as it would on a device. Results are tuples whose first item is the real
``cudaError_t`` member, as the real bindings return them.

What a GPU would do later happens later: work on a stream (copies, an engine's run through
``enqueue``) is queued and runs at ``cudaStreamSynchronize``, so a result read before it is stale;
a capture records the queued work into a graph, and a launch queues it again (with the addresses
recorded then, as a real graph's kernels keep theirs). ``log`` holds every call and every piece of
work run, as ``(op, stream, detail)``. Stricter than CUDA where that catches a bug: an async copy's
host side must be page-locked (``cudaHostAlloc``) and its device side inside one ``cudaMalloc``
block, an engine's tensors must lie inside device blocks, and allocation or synchronous calls
during a capture fail. ``fail_next = (name, cudaError_t member)`` makes the next call of ``name``
fail with that error. ``live()`` counts what is allocated; ``reset()`` forgets everything.
"""

from __future__ import annotations

import ctypes
import functools
import inspect
from collections import deque
from collections.abc import Callable
from types import SimpleNamespace

import cuda.bindings.runtime as _real
import numpy as np

cudaError_t = _real.cudaError_t
cudaMemcpyKind = _real.cudaMemcpyKind
cudaStreamCaptureMode = _real.cudaStreamCaptureMode
cudaStreamNonBlocking = _real.cudaStreamNonBlocking
cudaHostAllocDefault = _real.cudaHostAllocDefault
cudaStream_t = _real.cudaStream_t
cudaGraph_t = _real.cudaGraph_t
cudaGraphExec_t = _real.cudaGraphExec_t

OK = cudaError_t.cudaSuccess
ALIGN = 256  # cudaMalloc's alignment, which TensorRT relies on
LOG_LIMIT = 4096  # a bounded log (a test measuring allocations swaps in a deque(maxlen=0))

_PROPS = {
    "name": b"Fake GPU (tests/fakes/fake_cudart.py)\0\0",
    "major": 8,
    "minor": 7,
    "multiProcessorCount": 16,
    "totalGlobalMem": 8 << 30,
}
props = SimpleNamespace(**_PROPS)  # what cudaGetDeviceProperties answers: a test may change it
device_count = 1
fail_next: tuple[str, cudaError_t] | None = None
log: deque[tuple[str, int | None, object]] = deque(maxlen=LOG_LIMIT)

_device: dict[int, tuple[ctypes.Array, int]] = {}  # address -> (keeps the memory alive, size)
_host: dict[int, tuple[ctypes.Array, int]] = {}
_streams: dict[int, SimpleNamespace] = {}  # handle -> queue of work, capture (a list while capturing)
_graphs: dict[int, list] = {}
_execs: dict[int, list] = {}
_next_handle = [0x1000]


class IllegalAddress(Exception):
    """Work read or wrote memory outside every device block: the GPU's cudaErrorIllegalAddress."""


def reset() -> None:
    global fail_next, device_count
    fail_next, device_count = None, 1
    vars(props).update(_PROPS)
    for table in (_device, _host, _streams, _graphs, _execs):
        table.clear()
    log.clear()


def live() -> dict[str, int]:
    return {
        "device": len(_device),
        "host": len(_host),
        "streams": len(_streams),
        "graphs": len(_graphs),
        "graph_execs": len(_execs),
    }


def enqueue(stream_handle: int, fn: Callable[[], None], what: str) -> None:
    """For the fake execution context: ``fn`` runs when the stream gets there (``what`` is logged then)."""
    stream = _streams[int(stream_handle)]
    (stream.capture if stream.capture is not None else stream.queue).append((fn, what))


def array_at(address: int, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A numpy view of device memory at ``address``; IllegalAddress unless inside one device block."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if _block(_device, address, nbytes) is None:
        raise IllegalAddress(f"{nbytes} bytes at {address:#x} are not device memory")
    return np.frombuffer((ctypes.c_byte * nbytes).from_address(address), dtype).reshape(shape)


def _block(table: dict, address: int, nbytes: int) -> int | None:
    for start, (_, size) in table.items():
        if start <= address and address + nbytes <= start + size:
            return start
    return None


def _new_handle() -> int:
    _next_handle[0] += 1
    return _next_handle[0]


def _capturing() -> bool:
    return any(s.capture is not None for s in _streams.values())


def _real_api(outputs: int = 0):
    """Bind to the real function's signature, log the call, and honour ``fail_next``; a failing
    call returns the error and ``outputs`` Nones, as the real bindings do."""

    def wrap(fn):
        signature = inspect.signature(getattr(_real, fn.__name__))

        @functools.wraps(fn)
        def call(*args, **kwargs):
            global fail_next
            bound = signature.bind(*args, **kwargs)
            stream = bound.arguments.get("stream")
            log.append((fn.__name__, None if stream is None else int(stream), None))
            if fail_next is not None and fail_next[0] == fn.__name__:
                err, fail_next = fail_next[1], None
                return (err, *([None] * outputs))
            return fn(*args, **kwargs)

        return call

    return wrap


def _alloc(table: dict, size: int) -> int:
    memory = ctypes.create_string_buffer(size + ALIGN)
    address = -(-ctypes.addressof(memory) // ALIGN) * ALIGN
    table[address] = (memory, size)
    return address


# -- device -----------------------------------------------------------------------------------------
@_real_api(1)
def cudaGetDeviceCount():
    return OK, device_count


@_real_api()
def cudaSetDevice(device):
    return (OK,) if 0 <= device < device_count else (cudaError_t.cudaErrorInvalidDevice,)


@_real_api(1)
def cudaGetDeviceProperties(device):
    return (OK, props) if 0 <= device < device_count else (cudaError_t.cudaErrorInvalidDevice, None)


@_real_api(1)
def cudaGetErrorName(error):
    return OK, cudaError_t(error).name.encode()


# -- memory -----------------------------------------------------------------------------------------
@_real_api(1)
def cudaHostAlloc(size, flags):
    return _allocate(_host, size)


@_real_api()
def cudaFreeHost(ptr):
    return _release(_host, ptr)


@_real_api(1)
def cudaMalloc(size):
    return _allocate(_device, size)


@_real_api()
def cudaFree(devPtr):
    return _release(_device, devPtr)


def _allocate(pool: dict, size) -> tuple:
    """A device refuses allocations while a stream captures (they cannot go into a graph)."""
    if _capturing():
        return cudaError_t.cudaErrorStreamCaptureUnsupported, None
    return OK, _alloc(pool, size)


def _release(pool: dict, ptr) -> tuple:
    if _capturing():
        return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
    return (OK,) if pool.pop(int(ptr), None) else (cudaError_t.cudaErrorInvalidValue,)


# -- streams and copies -------------------------------------------------------------------------------
@_real_api(1)
def cudaStreamCreateWithFlags(flags):
    handle = _new_handle()
    _streams[handle] = SimpleNamespace(queue=[], capture=None, flags=flags)
    return OK, cudaStream_t(handle)


@_real_api()
def cudaStreamDestroy(stream):
    found = _streams.get(int(stream))
    if found is None:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    if found.capture is not None:
        return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
    del _streams[int(stream)]
    return (OK,)


def _copy_sides(dst, src, count, kind, pinned: bool) -> tuple[int, int] | None:
    """(dst, src) as addresses if the copy's sides are what ``kind`` says, else None."""
    dst, src = int(dst), int(src)
    host_ok = (lambda a: _block(_host, a, count) is not None) if pinned else (lambda a: True)
    if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
        ok = _block(_device, dst, count) is not None and host_ok(src)
    elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
        ok = _block(_device, src, count) is not None and host_ok(dst)
    else:
        ok = False  # the adapter has no business with other kinds
    return (dst, src) if ok else None


@_real_api()
def cudaMemcpyAsync(dst, src, count, kind, stream):
    if int(stream) not in _streams:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    sides = _copy_sides(dst, src, count, kind, pinned=True)
    if sides is None:
        return (cudaError_t.cudaErrorInvalidValue,)
    d, s = sides
    what = f"htod {s:#x}" if kind == cudaMemcpyKind.cudaMemcpyHostToDevice else f"dtoh {d:#x}"
    enqueue(int(stream), functools.partial(ctypes.memmove, d, s, count), what)
    return (OK,)


@_real_api()
def cudaMemcpy(dst, src, count, kind):
    if _capturing():
        return (cudaError_t.cudaErrorStreamCaptureImplicit,)
    sides = _copy_sides(dst, src, count, kind, pinned=False)
    if sides is None:
        return (cudaError_t.cudaErrorInvalidValue,)
    ctypes.memmove(sides[0], sides[1], count)
    return (OK,)


@_real_api()
def cudaStreamSynchronize(stream):
    found = _streams.get(int(stream))
    if found is None:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    if found.capture is not None:
        return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
    try:
        for fn, what in found.queue:
            log.append(("run", int(stream), what))
            fn()
    except IllegalAddress:
        return (cudaError_t.cudaErrorIllegalAddress,)
    finally:
        found.queue.clear()  # in place: a new list per tick would look like growth to tracemalloc
    return (OK,)


# -- graphs -----------------------------------------------------------------------------------------
@_real_api()
def cudaStreamBeginCapture(stream, mode):
    found = _streams.get(int(stream))
    if found is None:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    if found.capture is not None or not isinstance(mode, cudaStreamCaptureMode):
        return (cudaError_t.cudaErrorIllegalState,)
    found.capture = []
    return (OK,)


@_real_api(1)
def cudaStreamEndCapture(stream):
    found = _streams.get(int(stream))
    if found is None or found.capture is None:
        return cudaError_t.cudaErrorIllegalState, None
    handle = _new_handle()
    _graphs[handle], found.capture = found.capture, None
    return OK, cudaGraph_t(handle)


@_real_api(1)
def cudaGraphInstantiate(graph, flags):
    if int(graph) not in _graphs:
        return cudaError_t.cudaErrorInvalidValue, None
    handle = _new_handle()
    _execs[handle] = list(_graphs[int(graph)])
    return OK, cudaGraphExec_t(handle)


@_real_api()
def cudaGraphLaunch(graphExec, stream):
    if int(graphExec) not in _execs or int(stream) not in _streams:
        return (cudaError_t.cudaErrorInvalidResourceHandle,)
    for fn, what in _execs[int(graphExec)]:
        enqueue(int(stream), fn, what)
    return (OK,)


@_real_api()
def cudaGraphExecDestroy(graphExec):
    return (OK,) if _execs.pop(int(graphExec), None) is not None else (cudaError_t.cudaErrorInvalidValue,)


@_real_api()
def cudaGraphDestroy(graph):
    return (OK,) if _graphs.pop(int(graph), None) is not None else (cudaError_t.cudaErrorInvalidValue,)
