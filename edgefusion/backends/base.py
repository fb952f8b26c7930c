"""The backend protocol, shaped by TensorRT's execution model.

A backend loads a bundle once, allocates and binds every input and output buffer once, and
then per tick: the loop writes new sensor data into the backend's own input buffers, calls
``submit`` (enqueue: encoders of modalities with new data, then the head, on one stream) and
``wait`` once. Nothing is allocated per tick.

Per-modality caching lives here, behind the protocol: an encoder runs only when its modality
has new data, its projection p_m stays in the buffer the head reads, and an absent modality's
buffer holds the learned absent projection, written once when the modality goes away.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edgefusion.bundle import Bundle
from edgefusion.errors import EdgefusionError
from edgefusion.modalities import MODALITIES


class BackendError(EdgefusionError):
    """A backend that cannot run here (library missing, device absent, graph refused)."""


@dataclass
class BackendStats:
    encoder_runs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))
    head_runs: int = 0


class Backend(ABC):
    """One bundle variant, ready to run ticks at batch 1. Use as a context manager."""

    name: str = "backend"

    def __init__(self, bundle: Bundle, precision: str = "fp32"):
        if precision not in bundle.precisions:
            raise BackendError(
                f"bundle {bundle.root} has no {precision} variant; choose one of {', '.join(bundle.precisions)}"
            )
        self.bundle = bundle
        self.precision = precision
        self.stats = BackendStats()
        self._absent = bundle.absent(precision)
        self._holds_absent = dict.fromkeys(MODALITIES, True)
        self._active = False

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Backend:
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def activate(self) -> None:
        if self._active:
            return
        self._activate_impl()
        for m in MODALITIES:
            np.copyto(self.projection(m), self._absent[m][None])
        self._holds_absent = dict.fromkeys(MODALITIES, True)
        self._active = True

    def deactivate(self) -> None:
        if self._active:
            self._deactivate_impl()
            self._active = False

    # -- per tick ------------------------------------------------------------------------------
    def submit(self, fresh: Sequence[bool], present: Sequence[bool]) -> None:
        """Enqueue one tick. ``fresh[i]``: modality i's input buffer holds data not yet encoded;
        ``present[i]``: modality i counts (else its absent projection is used)."""
        if not self._active:
            raise RuntimeError("submit() on an inactive backend: call activate() first")
        run = []
        for m, is_fresh, is_present in zip(MODALITIES, fresh, present):
            if not is_present:
                if not self._holds_absent[m]:
                    np.copyto(self.projection(m), self._absent[m][None])
                    self._holds_absent[m] = True
            elif is_fresh or self._holds_absent[m]:
                run.append(m)
                self._holds_absent[m] = False
        self._enqueue_impl(run)
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

    @abstractmethod
    def projection(self, modality: str) -> np.ndarray:
        """The host buffer holding p_m, which the head reads."""

    # -- what subclasses implement -----------------------------------------------------------------
    @abstractmethod
    def _activate_impl(self) -> None: ...

    @abstractmethod
    def _deactivate_impl(self) -> None: ...

    @abstractmethod
    def _enqueue_impl(self, encoders: list[str]) -> None:
        """Run the listed encoders (writing their projections), then the head."""

    # -- helpers ---------------------------------------------------------------------------------
    def _input_shape(self, modality: str) -> tuple[int, ...]:
        spec = self.bundle.input_spec(modality)
        return (1, *spec["shape"][1:])

    def _projection_shape(self, modality: str) -> tuple[int, ...]:
        return (1, *self._absent[modality].shape)

    @property
    def n_classes(self) -> int:
        return len(self.bundle.labels)
