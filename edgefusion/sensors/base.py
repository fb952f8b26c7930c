"""The sensor protocol: connect, read the latest sample with an age limit, disconnect, state.

A driver implements only ``_open`` / ``_capture`` / ``_close`` (blocking, with a timeout, in the
driver's own terms). This base class runs capture on the sensor's own thread, keeps the newest
sample and its timestamp, tracks health (OK / STALE / FAILED / RECONNECTING) and reconnects with
capped backoff, so the loop only ever calls the non-blocking ``read_latest``.
"""

from __future__ import annotations

import enum
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class SensorState(str, enum.Enum):
    """A str subclass: comparable with and serialisable as its plain name."""

    OK = "OK"
    STALE = "STALE"
    FAILED = "FAILED"
    RECONNECTING = "RECONNECTING"


@dataclass(frozen=True)
class Sample:
    data: np.ndarray  # owned by the sensor: copy out before the next read_latest
    t: float  # capture time on time.monotonic()'s clock, offset-corrected
    seq: int  # increases by one per new sample: "is this new since I last looked?"


class SampleSource(Protocol):
    """What the loop needs of a sensor. ``Sensor`` implements it for every real or simulated
    device; a benchmark or a replay may implement it directly."""

    modality: str
    dropped_nonfinite: int

    def connect(self) -> None: ...

    def disconnect(self) -> None: ...

    def read_latest(self, max_age_s: float, now: float | None = None) -> Sample | None: ...

    def state(self, max_age_s: float, now: float | None = None) -> tuple[SensorState, str]: ...

    def poll(self, max_age_s: float, now: float | None = None) -> tuple[Sample | None, SensorState, str]: ...


def _as_seen(
    latest: Sample | None, state: SensorState, reason: str, max_age_s: float, now: float | None
) -> tuple[Sample | None, SensorState, str]:
    """A connected sensor whose newest sample is too old is STALE, and hands out nothing."""
    now = time.monotonic() if now is None else now
    if latest is not None and now - latest.t <= max_age_s:
        return latest, state, reason
    if state is SensorState.OK:
        state, reason = SensorState.STALE, reason or ("no sample within max age" if latest else "no sample yet")
    return None, state, reason


class SensorGone(Exception):
    """Raised by a driver's ``_capture`` when the device is lost (not a mere timeout)."""


@dataclass(frozen=True)
class Backoff:
    first_s: float = 0.2
    max_s: float = 2.0

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.first_s * 2 ** min(attempt, 30))


class Sensor(ABC):
    """One device delivering one modality."""

    modality: str

    def __init__(self, name: str, offset_s: float = 0.0, backoff: Backoff = Backoff(), read_timeout_s: float = 0.5):
        self.name = name
        self.offset_s = offset_s
        self.backoff = backoff
        self.read_timeout_s = read_timeout_s
        self._lock = threading.Lock()
        self._latest: Sample | None = None
        self._seq = 0
        self._state = SensorState.RECONNECTING
        self._reason = "not connected yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped_nonfinite = 0  # samples with NaN/Inf, dropped on the capture thread
        # Called on the capture thread with every new sample (a session recorder's tap): it
        # must be quick and must not keep ``data`` past the call without copying it.
        self.on_sample: Callable[[Sample], None] | None = None

    # -- protocol -------------------------------------------------------------------------------
    def connect(self) -> None:
        """Start capturing on the sensor's thread; returns at once (the first open may fail and
        is then retried in the background: the loop never waits for a device)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"sensor-{self.name}", daemon=True)
            self._thread.start()

    def disconnect(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if not self._thread.is_alive():  # a driver stuck in a call keeps its thread
                self._thread = None

    def read_latest(self, max_age_s: float, now: float | None = None) -> Sample | None:
        """The newest sample if it is at most ``max_age_s`` old, else None. Never blocks."""
        return self.poll(max_age_s, now)[0]

    def state(self, max_age_s: float, now: float | None = None) -> tuple[SensorState, str]:
        """Health as the loop sees it: a connected sensor whose newest sample is too old is STALE."""
        return self.poll(max_age_s, now)[1:]

    def poll(self, max_age_s: float, now: float | None = None) -> tuple[Sample | None, SensorState, str]:
        """read_latest and state at once, under one lock: what the loop asks every tick."""
        with self._lock:
            state, reason, latest = self._state, self._reason, self._latest
        return _as_seen(latest, state, reason, max_age_s, now)

    # -- driver side ----------------------------------------------------------------------------
    @abstractmethod
    def _open(self) -> None:
        """Open the device; raise on failure (it will be retried with backoff)."""

    @abstractmethod
    def _capture(self, timeout_s: float) -> tuple[np.ndarray, float] | None:
        """Block up to ``timeout_s`` for the next sample: (data, device time on the monotonic
        clock) or None on a timeout. Raise SensorGone (or any error) when the device is lost."""

    @abstractmethod
    def _close(self) -> None: ...

    def _finite(self, data: np.ndarray) -> bool:
        """False (and counted) for a sample holding NaN/Inf: it must never reach the model.

        Checked here, on the capture thread, so the tick pays nothing for it."""
        if np.isfinite(data).all():
            return True
        self.dropped_nonfinite += 1
        self._set_state(SensorState.OK, f"dropping non-finite samples ({self.dropped_nonfinite} so far)")
        return False

    def _publish(self, data: np.ndarray, t: float) -> None:
        """Called by the capture thread with each captured sample."""
        if self._finite(data):
            self._store(data, t)

    def _store(self, data: np.ndarray, t: float) -> None:
        with self._lock:
            self._reason = ""
            self._seq += 1
            self._latest = sample = Sample(data, t + self.offset_s, self._seq)
        if self.on_sample is not None:
            self.on_sample(sample)

    def _set_state(self, state: SensorState, reason: str) -> None:
        with self._lock:
            self._state, self._reason = state, reason

    def _opened(self) -> None:
        """After every successful open. A driver that keeps state across samples (a ring of
        audio) extends this to forget what came before the outage."""
        self._set_state(SensorState.OK, "")

    def _stream(self, modality: str) -> StreamView:
        """A second modality delivered by this device's capture thread (a RealSense gives rgb
        and depth in one frameset). The driver publishes into it with ``view._publish``."""
        return StreamView(self, modality)

    def _run(self) -> None:
        attempt = 0  # consecutive failures; reset only once a sample has arrived
        while not self._stop.is_set():
            try:
                self._open()
            except Exception as err:  # a driver's open may fail in any library-specific way
                self._set_state(SensorState.RECONNECTING, f"open failed: {err}")
                self._stop.wait(self.backoff.delay(attempt))
                attempt += 1
                continue
            self._opened()
            try:
                while not self._stop.is_set():
                    got = self._capture(self.read_timeout_s)
                    if got is not None:
                        self._publish(*got)
                        attempt = 0
            except Exception as err:  # the device is gone: close, report, retry
                self._set_state(SensorState.FAILED, f"{type(err).__name__}: {err}")
                self._stop.wait(self.backoff.delay(attempt))
                attempt += 1
            finally:
                try:
                    self._close()
                except Exception:  # closing a dead device may fail too; the next open decides
                    pass
            if not self._stop.is_set():
                self._set_state(SensorState.RECONNECTING, "reopening")
        self._set_state(SensorState.FAILED, "disconnected")


class StreamView:
    """One more modality of a multi-stream device: its own newest sample, the device's health.

    Connecting or disconnecting either the device or any of its views starts or stops the one
    capture thread (both are idempotent), so the loop treats every modality alike.
    """

    def __init__(self, device: Sensor, modality: str):
        self.device, self.modality = device, modality
        self.name = f"{device.name}/{modality}"
        self.offset_s = 0.0  # this stream's own calibration offset, as Sensor.offset_s
        self._lock = threading.Lock()
        self._latest: Sample | None = None
        self._seq = 0
        self.dropped_nonfinite = 0
        self.on_sample: Callable[[Sample], None] | None = None  # as Sensor.on_sample

    def connect(self) -> None:
        self.device.connect()

    def disconnect(self) -> None:
        self.device.disconnect()

    def _publish(self, data: np.ndarray, t: float) -> None:
        """Called by the device's capture thread with the device's time (before any offset)."""
        if not np.isfinite(data).all():
            self.dropped_nonfinite += 1
            return
        with self._lock:
            self._seq += 1
            self._latest = sample = Sample(data, t + self.offset_s, self._seq)
        if self.on_sample is not None:
            self.on_sample(sample)

    def read_latest(self, max_age_s: float, now: float | None = None) -> Sample | None:
        return self.poll(max_age_s, now)[0]

    def state(self, max_age_s: float, now: float | None = None) -> tuple[SensorState, str]:
        return self.poll(max_age_s, now)[1:]

    def poll(self, max_age_s: float, now: float | None = None) -> tuple[Sample | None, SensorState, str]:
        with self.device._lock:
            state, reason = self.device._state, self.device._reason
        with self._lock:
            latest = self._latest
        return _as_seen(latest, state, reason, max_age_s, now)
