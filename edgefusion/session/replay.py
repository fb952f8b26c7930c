"""Replaying a session: each stream's recorded samples handed out at their recorded times.

A replay source needs no thread: the newest sample at a tick is found by time. ``shift`` maps
recorded times onto the runtime's clock: 0 replays on the recorded clock (ticks driven at the
recorded ticks, as fast as they run: ``replay_tick``), and ``now - t_start`` replays in
real time from now.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter

import numpy as np

from edgefusion.loop import Runtime, TickResult
from edgefusion.modalities import STREAMS, ModalitySpec
from edgefusion.sensors.base import Sample, SensorState, _as_seen
from edgefusion.session.layout import Session


class ReplaySource:
    """One stream of a session, as a SampleSource."""

    dropped: dict[str, int] = {}  # nothing is checked again: these samples were checked live

    def __init__(self, modality: str, samples: list[tuple[float, np.ndarray]], states: list[tuple[float, str]]):
        self.modality = modality
        self.counters: Counter[str] = Counter()  # events the sync counts (torn copies); no device
        self.name = f"replay-{modality}"
        self._times = [t for t, _ in samples]
        self._data = [d for _, d in samples]
        self._state_times = [t for t, _ in states]
        self._states = [SensorState(s) for _, s in states]
        self.shift = 0.0
        self._current: Sample | None = None
        self._pinned: tuple[float | None] | None = None
        self.on_sample = None  # a replay is not recorded again

    def pin(self, sample_t: float | None) -> None:
        """Hand out the sample captured at ``sample_t`` (None: none) at the next poll, whatever
        the time: what a recorded tick used. A sample captured just before a tick but delivered
        just after it was not seen by the run; by capture time alone a replay would see it."""
        self._pinned = (sample_t,)

    def connect(self) -> None:
        pass

    def disconnect(self) -> None:
        pass

    def poll(self, max_age_s: float, now: float | None = None) -> tuple[Sample | None, SensorState, str]:
        now = time.monotonic() if now is None else now
        t = now - self.shift
        if self._pinned is not None:
            (pinned,), self._pinned = self._pinned, None
            # The sample itself (its time went through the recording's milliseconds: equal
            # within a microsecond), or, if the recorder had to drop it, the one before it.
            i = -1 if pinned is None else bisect.bisect_right(self._times, pinned - self.shift + 1e-6) - 1
        else:
            i = bisect.bisect_right(self._times, t) - 1
        if i < 0:
            latest = None
        else:
            if self._current is None or self._current.seq != i + 1:
                self._current = Sample(self._data[i], self._times[i] + self.shift, i + 1)
            latest = self._current
        return _as_seen(latest, *self._state_at(t), max_age_s, now)

    def _state_at(self, t: float) -> tuple[SensorState, str]:
        if not self._times:
            return SensorState.FAILED, "not in this recording"
        if t > self._times[-1] + 1.0:
            return SensorState.FAILED, "end of recording"
        j = bisect.bisect_right(self._state_times, t) - 1
        if j < 0:  # no state recorded yet: the recording says what it has
            return (SensorState.OK, "") if t >= self._times[0] else (SensorState.RECONNECTING, "not started yet")
        return self._states[j], "recorded"

    def read_latest(self, max_age_s: float, now: float | None = None) -> Sample | None:
        return self.poll(max_age_s, now)[0]

    def state(self, max_age_s: float, now: float | None = None) -> tuple[SensorState, str]:
        return self.poll(max_age_s, now)[1:]


def replay_sources(session: Session, specs: tuple[ModalitySpec, ...] | None = None) -> dict[str, ReplaySource]:
    """A source per stream the bundle's modalities use (None: every stream); one the session
    lacks is there, FAILED throughout ("not in this recording")."""
    samples = {**session.frames, "audio": session.windows}
    streams = STREAMS if specs is None else tuple(s.sensor for s in specs)
    return {m: ReplaySource(m, samples.get(m, []), session.states.get(m, [])) for m in streams}


def recorded_ticks(session: Session, tick_hz: float) -> list[dict]:
    """The recorded run's ticks, or (for a session without results) ticks at ``tick_hz`` from
    the first sample to the last, which see samples by their capture times."""
    if session.ticks:
        return session.ticks
    times = [t for m in session.frames.values() for t, _ in m] + [t for t, _ in session.windows]
    if not times:
        return []
    return [{"t": float(t)} for t in np.arange(min(times), max(times) + 1e-9, 1.0 / tick_hz)]


def replay_tick(runtime: Runtime, sources: dict[str, ReplaySource], tick: dict) -> TickResult:
    """Re-run one recorded tick (its time, the samples it used) on ``runtime``, whose sensors
    are ``sources`` on the recorded clock (shift 0)."""
    if "sample_t" in tick:  # by stream (the recorder's); a stream the session lacks has none
        for m, source in sources.items():
            source.pin(tick["sample_t"].get(m))
    return runtime.tick(tick["t"])
