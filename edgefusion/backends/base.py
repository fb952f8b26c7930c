"""The backend protocol, shaped by TensorRT's execution model.

A backend loads a bundle once, allocates and binds every input and output buffer once, and
then per tick: the loop writes new sensor data into the backend's own input buffers, calls
``submit`` (enqueue: encoders of modalities with new data, then the head, on one stream) and
``wait`` once. Nothing is allocated per tick.

Per-modality caching lives here, behind the protocol: an encoder runs only when its modality
has new data, and its projection p_m stays where the head reads it. Absence is a backend's own
hook (``_bind_absent``), called once when a modality goes away: ONNX Runtime copies the learned
absent projection into the buffer the head reads; TensorRT points the head's input at the absent
projection kept on the device, so nothing is copied per change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edgefusion.bundle import Bundle
from edgefusion.errors import EdgefusionError


class BackendError(EdgefusionError):
    """A backend that cannot run here (library missing, device absent, graph refused)."""


def first_line(err: BaseException) -> str:
    """The first line of an error, for a one-line message (a runtime's own errors run over several)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


@dataclass
class BackendStats:
    encoder_runs: dict[str, int] = field(default_factory=dict)  # per modality name, in the bundle's order
    head_runs: int = 0


class Backend(ABC):
    """One bundle variant, ready to run ticks at batch 1. Use as a context manager."""

    name: str = "backend"
    # Set by open_backend when this is not what the config asked for: "asked for tensorrt int8,
    # running onnxruntime int8: <why>" (STATUS, doctor, the summary and the exit line show it).
    degraded: str | None = None

    def __init__(self, bundle: Bundle, precision: str = "fp32"):
        if precision not in bundle.precisions:
            raise BackendError(
                f"bundle {bundle.root} has no {precision} variant; choose one of {', '.join(bundle.precisions)}"
            )
        self.bundle = bundle
        self.precision = precision
        self.names = bundle.names  # the modalities, in the order of submit's masks
        self.stats = BackendStats(dict.fromkeys(self.names, 0))
        self._absent = bundle.absent(precision)
        self._is_absent = dict.fromkeys(self.names, True)  # the head reads m's absent projection
        self._active = False

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Backend:
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def activate(self) -> None:
        """Build and bind everything, then run one warm tick: a backend that activates is one
        that runs, so a start or a reload fails here (BackendError, one line), never on a tick."""
        if self._active:
            return
        self._activate_impl()
        try:
            self._warm_tick()
        except BaseException:
            self._deactivate_impl()
            raise
        for m in self.names:
            self._bind_absent(m)
        self._is_absent = dict.fromkeys(self.names, True)
        self._active = True

    def _warm_tick(self) -> None:
        """Every encoder and the head once, on zero inputs (left zero), not counted in the stats:
        the outputs must be finite. It also takes the first run's one-off costs off the first tick."""
        for m in self.names:
            self.input_buffer(m).fill(0.0)
        where = f"bundle {self.bundle.root} ({self.precision}) on {self.name}"
        try:
            self._enqueue_impl(list(self.names), (True,) * len(self.names))
            logits, probs = self.wait()
        except Exception as err:  # a runtime's own exception types: the graph cannot run here
            raise BackendError(f"{where}: the warm-up tick failed: {first_line(err)}") from err
        outputs = {**self._warm_outputs(), "logits": logits, "probs": probs}
        for what, out in outputs.items():
            if not np.isfinite(out).all():
                raise BackendError(f"{where}: the warm-up tick gave non-finite {what}; export the bundle again")

    def _warm_outputs(self) -> dict[str, np.ndarray]:
        """What the warm tick checks besides the head's outputs, where a backend can see it on the host."""
        return {}

    def deactivate(self) -> None:
        if self._active:
            self._deactivate_impl()
            self._active = False

    # -- per tick ------------------------------------------------------------------------------
    def submit(self, fresh: Sequence[bool], present: Sequence[bool]) -> None:
        """Enqueue one tick. ``fresh[i]``: modality i (in the bundle's order) has data in its input
        buffer not yet encoded; ``present[i]``: modality i counts (else its absent projection is used)."""
        if not self._active:
            raise RuntimeError("submit() on an inactive backend: call activate() first")
        if len(fresh) != len(self.names) or len(present) != len(self.names):
            raise ValueError(
                f"submit() takes one fresh and one present flag per modality ({', '.join(self.names)}), "
                f"got {len(fresh)} and {len(present)}"
            )
        run = []
        for m, is_fresh, is_present in zip(self.names, fresh, present):
            if not is_present:
                if not self._is_absent[m]:
                    self._bind_absent(m)
                    self._is_absent[m] = True
            elif is_fresh or self._is_absent[m]:  # back from absence: its buffer's sample is encoded again
                run.append(m)
                self._is_absent[m] = False
        self._enqueue_impl(run, tuple(present))
        for m in run:
            self.stats.encoder_runs[m] += 1
        self.stats.head_runs += 1

    @abstractmethod
    def wait(self) -> tuple[np.ndarray, np.ndarray]:
        """Block until the submitted tick is done; (logits, probs) of shape (n_classes,).

        The arrays are the backend's own buffers: valid until the next submit."""

    # -- buffers the loop writes into / reads ----------------------------------------------------
    @abstractmethod
    def input_buffer(self, modality: str) -> np.ndarray:
        """The host buffer (batch 1) that modality's encoder reads: write new data here."""

    # -- what subclasses implement -----------------------------------------------------------------
    @abstractmethod
    def _activate_impl(self) -> None: ...

    @abstractmethod
    def _deactivate_impl(self) -> None: ...

    @abstractmethod
    def _enqueue_impl(self, encoders: list[str], present: tuple[bool, ...]) -> None:
        """Run the listed encoders (writing their projections), then the head, which reads each
        modality's projection where ``present`` says it counts, else its absent projection."""

    @abstractmethod
    def _bind_absent(self, modality: str) -> None:
        """From now until its encoder runs again, the head reads ``modality``'s absent projection."""

    # -- helpers ---------------------------------------------------------------------------------
    def _input_shape(self, modality: str) -> tuple[int, ...]:
        return (1, *self.bundle.modality(modality).shape)

    def _projection_shape(self, modality: str) -> tuple[int, ...]:
        return (1, *self.bundle.modality(modality).projection)

    @property
    def n_classes(self) -> int:
        return len(self.bundle.labels)
