"""The runtime loop: fixed-rate ticks that never wait for a sensor.

Each tick: sync (presence mask, copy fresh samples into the backend's buffers) → submit → one
wait → the result to the sink writer's thread (JSON and I/O happen there, off the tick). The
sensors run on their own threads; a tick only reads their newest samples. A tick that overruns
its slot is counted; the next runs at once, and whole missed slots are skipped rather than
burst through to catch up.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import orjson

from edgefusion import log
from edgefusion.backends.base import Backend
from edgefusion.modalities import MODALITIES
from edgefusion.sensors.base import SampleSource, SensorState
from edgefusion.sinks import Sink, SinkWriter
from edgefusion.sync import Synchronizer


class TickResult(NamedTuple):
    """What a tick produces, kept as a tuple on the tick's path; ``as_dict`` is the result
    line's schema, built where it is consumed (the sink writer's thread, the live view)."""

    t: float  # the tick's time, monotonic seconds
    tick: int
    label: str | None  # None when no modality was present
    confidence: float
    probs: list[float]  # in label order
    present: tuple[bool, ...]  # in MODALITIES order
    fresh: tuple[bool, ...]
    sensors: tuple[SensorState, ...]
    latency_ms: float
    sample_t: tuple[float | None, ...]  # capture time of each sample used (None: absent)

    def as_dict(self, labels: tuple[str, ...]) -> dict:
        return {
            "t": self.t,
            "tick": self.tick,
            "label": self.label,
            "confidence": self.confidence,
            "probs": dict(zip(labels, self.probs)),
            "present": dict(zip(MODALITIES, self.present)),
            "fresh": dict(zip(MODALITIES, self.fresh)),
            "sensors": {m: state.value for m, state in zip(MODALITIES, self.sensors)},
            "latency_ms": self.latency_ms,
            "sample_t": dict(zip(MODALITIES, self.sample_t)),
        }


class Runtime:
    def __init__(
        self,
        backend: Backend,
        sensors: dict[str, SampleSource],
        max_age_s: dict[str, float],
        tick_hz: float = 30.0,
        sinks: tuple[Sink, ...] = (),
        on_result: Callable[[dict], None] | None = None,
        flush_s: float = 0.05,
        deadline_ms: float = 20.0,
    ):
        self.backend = backend
        self.sensors = sensors
        self.max_age_s = max_age_s
        self.tick_hz = tick_hz  # as configured; the thermal policy may tick slower for a while
        self.period = 1.0 / tick_hz
        self.labels = labels = backend.bundle.labels
        encode = lambda r: orjson.dumps(r.as_dict(labels)).decode()  # noqa: E731
        self.writer = SinkWriter(sinks, encode, interval_s=flush_s) if sinks else None
        self.on_result = on_result
        self._uniform = [1.0 / len(self.labels)] * len(self.labels)
        self.ticks = 0
        self.overruns = 0
        self.deadline_ms = deadline_ms
        self.late = 0  # ticks whose work (sync, inference, result) took longer than deadline_ms
        self.sync: Synchronizer | None = None
        self.next_backend: Backend | None = None  # set by a reload (another thread), swapped in by run()

    def start(self) -> None:
        self.backend.activate()
        self.sync = Synchronizer(self.sensors, self.max_age_s, self.backend)
        for s in self.sensors.values():
            s.connect()

    def stop(self) -> None:
        try:
            for s in self.sensors.values():
                s.disconnect()
            self.backend.deactivate()
            if self.next_backend is not None:  # reloaded but never swapped in
                self.next_backend.deactivate()
        finally:
            if self.writer is not None:
                self.writer.close()

    @property
    def rate_hz(self) -> float:
        return 1.0 / self.period

    def set_rate(self, hz: float) -> None:
        """From any thread: the loop takes the new period at its next tick."""
        self.period = 1.0 / hz

    def swap_backend(self, backend: Backend) -> None:
        """Between ticks: run ``backend`` (active, same labels) from the next tick on. Its
        buffers are new, so every present modality is copied in and encoded again."""
        old, self.backend = self.backend, backend
        self.sync = Synchronizer(self.sensors, self.max_age_s, backend)
        old.deactivate()

    def tick(self, now: float | None = None) -> TickResult:
        t0 = time.monotonic()
        now = t0 if now is None else now
        st = self.sync.update(now)
        self.ticks += 1
        if any(st.present):
            self.backend.submit(st.fresh, st.present)
            p = self.backend.wait()[1].tolist()
            best = p.index(max(p))
            label, confidence = self.labels[best], p[best]
        else:  # nothing to go on: say so rather than report the head's bias as an answer
            p = self._uniform
            label, confidence = None, 0.0
        result = TickResult(
            now,
            self.ticks,
            label,
            confidence,
            p,
            tuple(st.present),
            tuple(st.fresh),
            tuple(st.states),
            (time.monotonic() - t0) * 1000,
            tuple(st.sample_t),
        )
        if self.writer is not None:
            self.writer.put(result)
        if self.on_result is not None:
            self.on_result(result.as_dict(self.labels))
        return result

    def _late(self) -> None:
        """Said on stderr at the 1st, 2nd, 4th, 8th... late tick: a backend that has become slow
        (thermal throttling, a busy GPU) is visible without flooding the journal."""
        self.late += 1
        if self.late & (self.late - 1) == 0:
            log.warning(f"a tick took longer than its {self.deadline_ms:g} ms deadline ({self.late} so far)")

    def run(self, stop: threading.Event, duration_s: float | None = None) -> None:
        start = time.monotonic()
        next_t = start
        while not stop.is_set():
            now = time.monotonic()
            if duration_s is not None and now - start >= duration_s:
                break
            if now < next_t:
                stop.wait(next_t - now)
                continue
            if self.next_backend is not None:
                backend, self.next_backend = self.next_backend, None
                self.swap_backend(backend)
            if self.tick(now).latency_ms > self.deadline_ms:
                self._late()
            next_t += self.period
            late = time.monotonic() - next_t
            if late > 0:  # ran into the next tick's slot: counted; it runs at once, and
                self.overruns += 1  # whole slots already missed are skipped, not burst through
                next_t += math.floor(late / self.period) * self.period
