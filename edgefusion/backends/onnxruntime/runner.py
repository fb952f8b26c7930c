"""ONNX Runtime with IOBinding: every graph reads and writes the backend's own numpy buffers.

The encoders' outputs are bound to the very arrays the head's inputs are bound to, so a cached
projection is never copied, and a tick allocates nothing. ONNX Runtime's CPU provider runs
synchronously: ``submit`` does the work and ``wait`` only hands back the output buffers.
"""

from __future__ import annotations

import numpy as np

from edgefusion.backends.base import Backend, BackendError, first_line
from edgefusion.backends.onnxruntime.session import open_session, run_options
from edgefusion.bundle import Bundle


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, bundle: Bundle, precision: str = "fp32", threads: int = 1, providers: list[str] | None = None):
        super().__init__(bundle, precision)
        if threads < 0:
            raise BackendError(f"onnxruntime threads must be >= 0 (0 = library default), got {threads}")
        self.threads = threads
        self.providers = providers

    def _activate_impl(self) -> None:
        self._inputs = {m: np.zeros(self._input_shape(m), np.float32) for m in self.names}
        self._proj = {m: np.zeros(self._projection_shape(m), np.float32) for m in self.names}
        self._logits = np.zeros((1, self.n_classes), np.float32)
        self._probs = np.zeros((1, self.n_classes), np.float32)
        self._outputs = (self._logits[0], self._probs[0])  # views made once: wait() allocates nothing
        self._sessions = {g: self._open(g) for g in (*self.names, "head")}
        self._run_options = run_options()

        # The loader checked every name against the graphs; a refusal here is this build of onnxruntime's.
        try:
            self._bind_all()
        except Exception as err:
            raise BackendError(
                f"bundle {self.bundle.root} ({self.precision}): cannot bind the graphs: {first_line(err)}"
            ) from err

    def _open(self, graph: str):
        try:
            return open_session(self.bundle.graph_bytes(self.precision, graph), self.threads, self.providers)
        except BackendError as err:
            raise BackendError(f"bundle {self.bundle.root} ({self.precision} {graph}): {err}") from err

    def _bind_all(self) -> None:
        """Each graph's tensors bound by the manifest's names: an encoder's input and output, and
        the head's inputs (one per modality, in the manifest's order) to the encoders' outputs."""
        self._bindings = {}
        for spec in self.bundle.modalities:
            b = self._sessions[spec.name].io_binding()
            _bind(b.bind_input, spec.input_name, self._inputs[spec.name])
            _bind(b.bind_output, spec.output_name, self._proj[spec.name])
            self._bindings[spec.name] = b
        head_spec = self.bundle.manifest["head"]
        head = self._sessions["head"].io_binding()
        for name, m in zip(head_spec["inputs"], self.names):
            _bind(head.bind_input, name, self._proj[m])
        logits_name, probs_name = head_spec["outputs"]
        _bind(head.bind_output, logits_name, self._logits)
        _bind(head.bind_output, probs_name, self._probs)
        self._bindings["head"] = head

    def _deactivate_impl(self) -> None:
        self._bindings.clear()
        self._sessions.clear()

    def _enqueue_impl(self, encoders: list[str], present: tuple[bool, ...]) -> None:
        for m in encoders:
            self._sessions[m].run_with_iobinding(self._bindings[m], self._run_options)
        self._sessions["head"].run_with_iobinding(self._bindings["head"], self._run_options)

    def wait(self) -> tuple[np.ndarray, np.ndarray]:
        return self._outputs

    def input_buffer(self, modality: str) -> np.ndarray:
        return self._inputs[modality]

    def projection(self, modality: str) -> np.ndarray:
        """The host buffer holding p_m, which the head reads (the absent projection while absent)."""
        return self._proj[modality]

    def _bind_absent(self, modality: str) -> None:
        np.copyto(self._proj[modality], self._absent[modality][None])

    def _warm_outputs(self) -> dict[str, np.ndarray]:
        return {f"the {m} projection": self._proj[m] for m in self.names}


def _bind(bind, name: str, buf: np.ndarray) -> None:
    bind(name, "cpu", 0, np.float32, list(buf.shape), buf.ctypes.data)
