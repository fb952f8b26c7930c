"""The sensor protocol: connect, read the latest sample with an age limit, disconnect, state.

A driver implements only ``_open`` / ``_capture`` / ``_close`` (blocking, with a timeout, in the
driver's own terms). This base class runs capture on the sensor's own thread, keeps the newest
sample and its timestamp, tracks health (OK / STALE / FAILED / RECONNECTING) and reconnects with
capped backoff, so the loop only ever calls the non-blocking ``read_latest``.
"""

from __future__ import annotations

import collections
import enum
import math
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgefusion import log
from edgefusion.sensors.frames import CAMERAS, VALID_RANGE


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
    # When the sample reached the sensor, on the same clock (None: not known, as in a replay). Age
    # is judged on this too: a positive offset must not keep a dead sensor's last sample young.
    arrived: float | None = None
    # Digital silence (microphone/sensor.py): the device is fine, but the model must not take it as sound.
    silent: bool = False
    # For data that is a view into a buffer the capture thread goes on writing (the microphone's
    # ring): True while ``data`` still holds what was published. Check it after copying out.
    intact: Callable[[], bool] | None = None


class SampleSource(Protocol):
    """What the loop needs of a sensor. ``Sensor`` implements it for every real or simulated
    device; a benchmark or a replay may implement it directly."""

    modality: str
    dropped: dict[str, int]  # samples dropped by kind (nonfinite, range, frozen, clock)
    # Events by kind: state_changes, reconnects, device_errors, open_failures, silent_windows,
    # torn_copies (sync.py), and the drivers' own (overflows, dropped_blocks, resets). For STATUS,
    # doctor and the run summary.
    counters: collections.Counter[str]

    def connect(self) -> None: ...

    def disconnect(self) -> None: ...

    def read_latest(self, max_age_s: float, now: float | None = None) -> Sample | None: ...

    def state(self, max_age_s: float, now: float | None = None) -> tuple[SensorState, str]: ...

    def poll(self, max_age_s: float, now: float | None = None) -> tuple[Sample | None, SensorState, str]: ...


# A sensor in these states is absent to the model whatever the age of its last sample (sync.py);
# ``read_latest`` still hands that sample out, for a look at what the device gave last.
ABSENT_STATES = (SensorState.FAILED, SensorState.RECONNECTING)


def _fresh_enough(sample: Sample, max_age_s: float, now: float) -> bool:
    """Young by its capture time (offset-corrected) and by when it arrived: an offset moves the
    capture time, never the arrival, so no offset keeps an old sample present."""
    return now - sample.t <= max_age_s and (sample.arrived is None or now - sample.arrived <= max_age_s)


def _as_seen(
    latest: Sample | None, state: SensorState, reason: str, max_age_s: float, now: float | None
) -> tuple[Sample | None, SensorState, str]:
    """A connected sensor whose newest sample is too old is STALE, and hands out nothing."""
    now = time.monotonic() if now is None else now
    if latest is not None and _fresh_enough(latest, max_age_s, now):
        return latest, state, reason
    if state is SensorState.OK:
        state, reason = SensorState.STALE, reason or ("no sample within max age" if latest else "no sample yet")
    return None, state, reason


class SensorGone(Exception):
    """Raised by a driver's ``_capture`` when the device is lost (not a mere timeout)."""


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: many robots (or two sensors on one USB hub)
    retrying in step would all hit the bus at once. The cap bounds the whole delay, jitter
    included, so a device that is back is reopened within ``max_s``."""

    first_s: float = 0.1
    # 0.8 s: a camera is back within 0.8 s of its device, a microphone within 2 s (its first
    # window needs 1 s of audio); a retry is cheap (a device query, ~1 ms for a RealSense).
    max_s: float = 0.8

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.first_s * 2 ** min(attempt, 30)) * random.uniform(0.5, 1.0)


DROP_KINDS = ("nonfinite", "range", "frozen", "clock")
# A frozen stream repeats what it gave before, bit for bit: one sample again (a stuck buffer) or a
# short cycle of them (a stuck DMA ring: V4L2 and ALSA drivers usually cycle 2 to 4 buffers).
FROZEN_DEPTH = 4  # how many earlier distinct samples a new one is compared with
# Samples in a row before they are dropped. A camera may hand out a frame twice (a RealSense
# frameset repeats the other stream's last frame), so the third in a row (100 ms at 30 fps);
# a microphone never does, so its first repeated block.
FROZEN_AFTER = 3  # identical frames in a row
FROZEN_AUDIO_AFTER = 2  # identical audio blocks in a row
CLOCK_REOPEN_AFTER = 15  # samples in a row with an impossible time before the device is reopened
FUTURE_S = 0.25  # a sample stamped later than this past now has a clock that jumped ahead


class SampleGuard:
    """What a sample must pass, on the capture thread, before the loop may see it.

    Dropped and counted, never fed to the model: NaN/Inf; values no device of this modality can
    give (``valid``: 8-bit RGB, Z16 depth in metres, 16-bit audio); a sample equal to one of the
    last ``FROZEN_DEPTH`` distinct ones (a frozen stream: a live sensor's noise never repeats a
    frame or an audio block bit for bit); a timestamp that does not advance or lies in the future
    (a clock that jumped). A clock that stays wrong is the device's: the guard raises SensorGone
    and the reopen re-syncs it.

    A constant audio block (digital silence from a muted input or an idle PulseAudio monitor, or
    a rail) repeats by nature: it is never taken for frozen; the microphone marks its windows
    silent instead (microphone/sensor.py).
    """

    def __init__(self, valid: tuple[float, float], modality: str):
        self.valid = valid
        self.audio = modality not in CAMERAS
        self.frozen_after = (FROZEN_AUDIO_AFTER if self.audio else FROZEN_AFTER) - 1  # repeats
        self.dropped = dict.fromkeys(DROP_KINDS, 0)
        self.reset()

    def reset(self) -> None:
        """A reopened device starts afresh: a new clock mapping, no earlier samples."""
        self._last_t = -math.inf
        self._history: list[np.ndarray] = []  # the last FROZEN_DEPTH distinct samples, reused in turn
        self._oldest = 0
        self._same = self._bad_clock = 0

    def check(self, data: np.ndarray, t: float) -> str | None:
        """None if ``data`` at ``t`` may be used, else the kind of fault it shows."""
        if not np.isfinite(data).all():
            return self._drop("nonfinite")
        lo, hi = data.min(), data.max()
        if lo < self.valid[0] or hi > self.valid[1]:
            return self._drop("range")
        if t <= self._last_t or t > time.monotonic() + FUTURE_S:
            self._bad_clock += 1
            if self._bad_clock >= CLOCK_REOPEN_AFTER:
                raise SensorGone(f"the device clock jumped ({self._bad_clock} samples out of time)")
            return self._drop("clock")
        self._bad_clock = 0
        self._last_t = t
        if self.audio and lo == hi:
            self._same = 0
        elif self._repeats(data):
            self._same += 1
            if self._same >= self.frozen_after:
                return self._drop("frozen")
        else:
            self._same = 0
        return None

    def _repeats(self, data: np.ndarray) -> bool:
        """Whether ``data`` equals one of the remembered samples; if not, it is remembered in the
        oldest one's place (buffers allocated while the history fills, then reused)."""
        first = data.flat[0]
        for earlier in self._history:  # the first value first: live audio mostly differs there already
            if earlier.shape == data.shape and earlier.flat[0] == first and np.array_equal(earlier, data):
                return True
        if len(self._history) < FROZEN_DEPTH:
            self._history.append(data.copy())
            return False
        if self._history[self._oldest].shape != data.shape:
            self._history[self._oldest] = np.empty_like(data)
        np.copyto(self._history[self._oldest], data)
        self._oldest = (self._oldest + 1) % FROZEN_DEPTH
        return False

    def _drop(self, kind: str) -> str:
        self.dropped[kind] += 1
        return kind


_DROP_REASON = {
    "nonfinite": "dropping non-finite samples",
    "range": "dropping out-of-range samples",
    "frozen": "frozen: dropping samples that repeat earlier ones bit for bit",
    "clock": "dropping samples stamped out of time (clock jump)",
}


class StateLog:
    """Says a sensor's state changes on stderr (the journal under systemd), one line each.

    Rate-limited per sensor and reason: a reason (its numbers aside, so "12 so far" and "13 so
    far" are one reason) is said the 1st, 2nd, 4th, 8th... time it comes, with its count, so a
    sensor that flaps for hours says so in a few dozen lines. Lines come from the sensor's
    capture thread only, so this keeps no lock.
    """

    def __init__(self, name: str, state: SensorState, reason: str = ""):
        self.name = name
        self._as_given = self._current = (state, reason)  # as it starts: not said
        self._times: collections.Counter[tuple[SensorState, str]] = collections.Counter()

    def changed(self, state: SensorState, reason: str) -> bool:
        """Record ``state`` with ``reason``; True (and said, if due) when it differs from before."""
        if (state, reason) == self._as_given:  # the common case, per sample: no regex
            return False
        self._as_given = (state, reason)
        key = (state, re.sub(r"\d+(\.\d+)?", "#", reason))
        if key == self._current:
            return False
        self._current = key
        self._times[key] += 1
        n = self._times[key]
        if log.doubled(n - 1, n):
            say = log.notice if state is SensorState.OK else log.warning
            times = f" [{n} times]" if n > 1 else ""
            say(f"sensor {self.name}: {state.value}{': ' + reason if reason else ''}{times}")
        return True


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
        self.guard = SampleGuard(VALID_RANGE[self.modality], self.modality)
        self.counters: collections.Counter[str] = collections.Counter()  # events by kind, drivers' too
        self._log = StateLog(name, SensorState.OK)  # said from the first change away from what is expected
        self._views: list[StreamView] = []
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

    @property
    def dropped(self) -> dict[str, int]:
        """Samples dropped on the capture thread, by kind (see SampleGuard)."""
        return self.guard.dropped

    def _usable(self, data: np.ndarray, t: float) -> bool:
        """The guard's verdict, said in the sensor's reason when it drops. Checked here, on the
        capture thread, so the tick pays nothing for it."""
        kind = self.guard.check(data, t)
        if kind is None:
            return True
        self._set_state(SensorState.OK, f"{_DROP_REASON[kind]} ({self.guard.dropped[kind]} so far)")
        return False

    def _publish(self, data: np.ndarray, t: float) -> None:
        """Called by the capture thread with each captured sample."""
        if self._usable(data, t):
            self._store(data, t)

    def _store(self, data: np.ndarray, t: float, reason: str = "", **extra) -> None:
        """Publish a good sample; ``reason`` says what the state's reason is from now on (a
        good sample ends a run of drops), ``extra`` the Sample's optional fields."""
        if reason != self._reason:  # only this thread writes it
            self._set_state(SensorState.OK, reason)
        with self._lock:
            self._seq += 1
            self._latest = sample = Sample(data, t + self.offset_s, self._seq, time.monotonic(), **extra)
        tap = self.on_sample  # read once: a recorder may detach it from another thread meanwhile
        if tap is not None:
            tap(sample)

    def _set_state(self, state: SensorState, reason: str, say: bool = True) -> None:
        """Set the health the loop sees; a change is counted and said (see StateLog)."""
        with self._lock:
            self._state, self._reason = state, reason
        if say and self._log.changed(state, reason):
            self.counters["state_changes"] += 1

    def _opened(self) -> None:
        """After every successful open. A driver that keeps state across samples (a ring of
        audio) extends this to forget what came before the outage."""
        self.guard.reset()
        for view in self._views:
            view.guard.reset()
        self._set_state(SensorState.OK, "")

    def _stream(self, modality: str) -> StreamView:
        """A second modality delivered by this device's capture thread (a RealSense gives rgb
        and depth in one frameset). The driver publishes into it with ``view._publish``."""
        view = StreamView(self, modality)
        self._views.append(view)
        return view

    def _run(self) -> None:
        attempt = 0  # consecutive failures; reset only once a sample has arrived
        opened_before = False
        while not self._stop.is_set():
            try:
                self._open()
            except Exception as err:  # a driver's open may fail in any library-specific way
                self.counters["open_failures"] += 1
                self._set_state(SensorState.RECONNECTING, f"open failed: {err}")
                self._stop.wait(self.backoff.delay(attempt))
                attempt += 1
                continue
            if opened_before:
                self.counters["reconnects"] += 1
            opened_before = True
            self._opened()
            try:
                while not self._stop.is_set():
                    got = self._capture(self.read_timeout_s)
                    if got is not None:
                        self._publish(*got)
                        attempt = 0
                    elif not self._reason:  # said once a stall begins; a good sample ends it
                        self._set_state(SensorState.OK, f"stalled: no sample within {self.read_timeout_s:g} s")
            except Exception as err:  # the device is gone: close, report, retry
                self.counters["device_errors"] += 1
                self._set_state(SensorState.FAILED, f"{type(err).__name__}: {err}; reopening")
                self._stop.wait(self.backoff.delay(attempt))
                attempt += 1
            finally:
                try:
                    self._close()
                except Exception:  # closing a dead device may fail too; the next open decides
                    pass
            if not self._stop.is_set():  # not said: the FAILED line said so, the open's outcome follows
                self._set_state(SensorState.RECONNECTING, "reopening", say=False)
        self._set_state(SensorState.FAILED, "disconnected", say=False)  # a requested stop is no fault


class StreamView:
    """One more modality of a multi-stream device: its own newest sample, the device's health.

    Connecting or disconnecting either the device or any of its views starts or stops the one
    capture thread (both are idempotent), so the loop treats every modality alike.
    """

    def __init__(self, device: Sensor, modality: str):
        self.device, self.modality = device, modality
        self.name = f"{device.name}/{modality}"
        self.offset_s = 0.0  # this stream's own calibration offset, as Sensor.offset_s
        self.guard = SampleGuard(VALID_RANGE[modality], modality)
        self.counters: collections.Counter[str] = collections.Counter()
        self._log = StateLog(self.name, SensorState.OK)  # the device says its own state
        self._lock = threading.Lock()
        self._latest: Sample | None = None
        self._seq = 0
        self.on_sample: Callable[[Sample], None] | None = None  # as Sensor.on_sample

    @property
    def dropped(self) -> dict[str, int]:
        return self.guard.dropped

    def connect(self) -> None:
        self.device.connect()

    def disconnect(self) -> None:
        self.device.disconnect()

    def _publish(self, data: np.ndarray, t: float) -> None:
        """Called by the device's capture thread with the device's time (before any offset).
        The device's state is the view's too; a run of drops is said under the view's name."""
        kind = self.guard.check(data, t)
        if kind is not None:
            self._log.changed(SensorState.OK, _DROP_REASON[kind])
            return
        self._log.changed(SensorState.OK, "")
        with self._lock:
            self._seq += 1
            self._latest = sample = Sample(data, t + self.offset_s, self._seq, time.monotonic())
        tap = self.on_sample  # read once: a recorder may detach it from another thread meanwhile
        if tap is not None:
            tap(sample)

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
