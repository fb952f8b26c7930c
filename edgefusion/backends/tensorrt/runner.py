"""TensorRT backend: one engine per modality encoder and one for the head, on one CUDA stream.

Everything a tick touches is allocated and bound at activation: page-locked host inputs the loop
writes into, a device input and projection per modality, each modality's absent projection
uploaded to the device once, and one device block holding logits and probabilities (copied out
in one copy). The head's input for a modality points either at that modality's projection or at
its absent projection: absence changes an address, never copies data. A tick enqueues the copies
in for the encoders that run, those encoders, the head and the copy out, then ``wait`` is the one
synchronize; with CUDA graphs, that enqueue is captured once per (encoders, present) and replayed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from edgefusion import log
from edgefusion.backends.base import Backend, BackendError
from edgefusion.backends.tensorrt.cuda import open_cuda
from edgefusion.backends.tensorrt.engines import load_engines
from edgefusion.backends.tensorrt.graphs import TickGraphs
from edgefusion.backends.tensorrt.options import TensorRTOptions
from edgefusion.backends.tensorrt.runtime_trt import import_tensorrt
from edgefusion.bundle import Bundle

if TYPE_CHECKING:  # TensorRT's typed API (tensorrt-stubs) for the checker; never imported at run time
    import tensorrt

HEAD = "head"
_ALIGN = 256  # TensorRT wants every tensor address 256-byte aligned (cudaMalloc's own alignment)
_FLOAT = np.dtype(np.float32)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, bundle: Bundle, precision: str = "fp32", options: TensorRTOptions | None = None):
        super().__init__(bundle, precision)
        self.options = options or TensorRTOptions()
        self.facts: dict[str, Any] = {}  # for STATUS, doctor and the summary: what runs, and how
        self._release: list[Callable[[], None]] = []  # undoes activation, in reverse order
        self._graphs: TickGraphs | None = None
        self._contexts: dict[str, tensorrt.IExecutionContext] = {}  # per graph role (each modality, "head")

    # -- activation ------------------------------------------------------------------------------
    def _activate_impl(self) -> None:
        trt = import_tensorrt()
        try:
            self._set_up(trt)
        except BaseException:
            self._release_all()
            raise

    def _set_up(self, trt: ModuleType) -> None:
        cuda = self._cuda = open_cuda(self.options.cuda)
        self._release.append(cuda.close)
        gpu = cuda.gpu()
        loaded = load_engines(trt, self.bundle, self.precision, self.options, gpu, build=self.options.build_at_start)
        self._loaded = loaded  # the runtime and engines live as long as their contexts
        self._release.append(partial(setattr, self, "_loaded", None))
        self._stream = cuda.stream_create()
        self._release.append(partial(cuda.stream_destroy, self._stream))
        self._handle = cuda.stream_handle(self._stream)

        self._host_in = {m: self._host_array(self._input_shape(m)) for m in self.names}
        self._dev_in = {m: self._device(self._host_in[m].nbytes) for m in self.names}
        proj_bytes = {m: int(np.prod(self._projection_shape(m))) * _FLOAT.itemsize for m in self.names}
        self._dev_proj = [self._device(proj_bytes[m]) for m in self.names]
        self._dev_absent = [self._device(proj_bytes[m]) for m in self.names]
        for m, ptr in zip(self.names, self._dev_absent):
            cuda.copy_htod(ptr, np.ascontiguousarray(self._absent[m][None], _FLOAT))
        n = self.n_classes
        probs_at = -(-n * _FLOAT.itemsize // _ALIGN) * _ALIGN  # bytes from logits to probs
        self._dev_out = self._device(probs_at + n * _FLOAT.itemsize)
        self._host_out = self._host_array((probs_at // _FLOAT.itemsize + n,))
        first = probs_at // _FLOAT.itemsize
        self._outputs = (self._host_out[:n], self._host_out[first : first + n])  # views made once

        self._contexts = {}
        self._release.append(self._drop_contexts)  # before the engines go, even if one fails here
        for m in self.names:
            self._contexts[m] = self._encoder_context(m)
        self._contexts[HEAD] = self._head_context(probs_at)

        graphs_off = self._graphs_off(cuda)
        if graphs_off is None:
            self._graphs = TickGraphs(cuda, self._stream)
            self._release.append(self._close_graphs)
        self._warmed = False  # the first enqueue (the warm tick) runs uncaptured
        self._release.append(partial(cuda.synchronize, self._stream))  # first: no work left in flight
        self.facts = {
            "tensorrt": str(getattr(trt, "__version__", "unknown")),
            "gpu": gpu.name,
            "cuda": cuda.name,
            "cuda_graphs": graphs_off or "on",
            "engines_built": list(loaded.built),
            "engines_cached": list(loaded.cached),
        }

    def _graphs_off(self, cuda) -> str | None:
        """Why the ticks are not replayed as CUDA graphs, or None when they are."""
        if not self.options.cuda_graphs:
            return "off ([tensorrt] cuda_graphs = false)"
        if not cuda.has_graphs:
            return f"off ({cuda.name} has no CUDA graphs)"
        return None

    def _host_array(self, shape: tuple[int, ...]) -> np.ndarray:
        array = self._cuda.host_alloc(shape, _FLOAT)
        self._release.append(partial(self._cuda.free_host, array))
        array.fill(0.0)
        return array

    def _device(self, nbytes: int) -> int:
        ptr = self._cuda.malloc(nbytes)
        self._release.append(partial(self._cuda.free, ptr))
        return ptr

    def _new_context(self, role: str) -> tensorrt.IExecutionContext:
        engine: tensorrt.ICudaEngine = self._loaded.engines[role]
        context = engine.create_execution_context()
        if context is None:  # TensorRT returns None (and logs why) rather than raising
            raise BackendError(f"{self._where(role)}: TensorRT could not create an execution context (GPU memory?)")
        return context

    def _encoder_context(self, m: str) -> tensorrt.IExecutionContext:
        spec = self.bundle.modality(m)
        context = self._new_context(m)
        self._bind(context, m, spec.input_name, self._dev_in[m], self._input_shape(m))
        self._bind(context, m, spec.output_name, self._dev_proj[self.names.index(m)])
        self._check_shape(context, m, spec.output_name, self._projection_shape(m))
        return context

    def _head_context(self, probs_at: int) -> tensorrt.IExecutionContext:
        head = self.bundle.manifest[HEAD]
        context = self._new_context(HEAD)
        self._head_inputs = list(head["inputs"])  # in the order of self.names
        self._head_addrs = list(self._dev_proj)  # what each head input points at now
        for m, name, ptr in zip(self.names, self._head_inputs, self._head_addrs):
            self._bind(context, HEAD, name, ptr, self._projection_shape(m))
        logits, probs = head["outputs"]
        self._bind(context, HEAD, logits, self._dev_out)
        self._bind(context, HEAD, probs, self._dev_out + probs_at)
        for name in (logits, probs):
            self._check_shape(context, HEAD, name, (1, self.n_classes))
        return context

    def _bind(
        self, context: tensorrt.IExecutionContext, role: str, name: str, ptr: int, shape: tuple[int, ...] | None = None
    ) -> None:
        """Set tensor ``name``'s address (and an input's shape, once: batch 1). TensorRT answers
        False, not an exception, for a name the engine does not have."""
        if shape is not None and not context.set_input_shape(name, shape):
            raise BackendError(f"{self._where(role)}: the engine refused input {name!r} of shape {shape}")
        if not context.set_tensor_address(name, ptr):
            raise BackendError(f"{self._where(role)}: the engine has no tensor {name!r}: build the engines again")

    def _check_shape(self, context: tensorrt.IExecutionContext, role: str, name: str, shape: tuple[int, ...]) -> None:
        dims = context.get_tensor_shape(name)
        got = tuple(dims[i] for i in range(len(dims)))  # TensorRT's Dims: indexable, not typed iterable
        if got != shape:
            raise BackendError(
                f"{self._where(role)}: the engine's {name} has shape {got}, the bundle says {shape}: "
                "build the engines again (edgefusion engines build)"
            )

    def _where(self, role: str) -> str:
        return f"bundle {self.bundle.root} ({self.precision} {role}) on TensorRT"

    # -- deactivation ----------------------------------------------------------------------------
    def _deactivate_impl(self) -> None:
        self._release_all()

    def _release_all(self) -> None:
        """Undo every step of activation that was done, last first. A CUDA error on the way is
        said and the rest still freed: raising here would hide the error that made a failed
        activation undo itself, and leave a deactivated backend half freed."""
        steps, self._release = self._release[::-1], []
        for step in steps:
            try:
                step()
            except BackendError as err:
                log.warning(f"tensorrt: while releasing the backend: {err}")
        nothing = np.zeros(0, _FLOAT)  # no view of freed page-locked memory is kept
        self._host_in, self._host_out, self._outputs = {}, nothing, (nothing, nothing)

    def _drop_contexts(self) -> None:
        """Before the engines: a context must not outlive its engine."""
        self._contexts = {}

    def _close_graphs(self) -> None:
        graphs, self._graphs = self._graphs, None
        if graphs is not None:
            graphs.close()

    # -- per tick --------------------------------------------------------------------------------
    def _bind_absent(self, modality: str) -> None:
        i = self.names.index(modality)
        self._point_head(i, self._dev_absent[i])

    def _point_head(self, i: int, ptr: int) -> None:
        if self._head_addrs[i] != ptr:
            if not self._contexts[HEAD].set_tensor_address(self._head_inputs[i], ptr):
                raise BackendError(f"{self._where(HEAD)}: the engine has no tensor {self._head_inputs[i]!r}")
            self._head_addrs[i] = ptr

    def _enqueue_impl(self, encoders: list[str], present: tuple[bool, ...]) -> None:
        for i, is_present in enumerate(present):
            if is_present:
                self._point_head(i, self._dev_proj[i])
        if self._graphs is None or not self._warmed:
            self._enqueue_tick(encoders)
            self._warmed = True
        else:
            self._graphs.run((tuple(encoders), present), tuple(self._head_addrs), self._enqueue_tick, encoders)

    def _enqueue_tick(self, encoders: list[str]) -> None:
        cuda, stream = self._cuda, self._stream
        for m in encoders:
            cuda.copy_htod_async(self._dev_in[m], self._host_in[m], stream)
        for m in encoders:
            self._execute(m)
        self._execute(HEAD)
        cuda.copy_dtoh_async(self._host_out, self._dev_out, stream)

    def _execute(self, role: str) -> None:
        if not self._contexts[role].execute_async_v3(self._handle):
            raise BackendError(f"{self._where(role)}: TensorRT could not enqueue the engine (execute_async_v3 False)")

    def wait(self) -> tuple[np.ndarray, np.ndarray]:
        self._cuda.synchronize(self._stream)
        return self._outputs

    def input_buffer(self, modality: str) -> np.ndarray:
        return self._host_in[modality]
