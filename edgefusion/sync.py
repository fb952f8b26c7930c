"""Sync: from the sensors' latest samples to what the model sees at one tick.

Every sample carries a time on the one monotonic clock (sensor offsets already applied). At a
tick, a modality is *present* when its sensor is connected (not FAILED or RECONNECTING) and its
newest sample is no older than its age limit, by capture time and by arrival (sensors drop
non-finite and frozen samples on their own threads), and *fresh* when that sample has not been
fed before: only fresh modalities are copied into the backend and re-encoded. The audio window
is the microphone's newest window: a new one every hop (0.1 s), so it ends at most one hop (plus
one 10 ms capture block) before the tick; its age limit bounds that. A window of digital silence
is absent (microphone/sensor.py says why).

A sample whose data is a view into a buffer its capture thread goes on writing (the
microphone's ring) is checked after the copy; a torn copy is retried on the newest sample, and
if capture outruns every try, the modality is absent for this tick and copied at the next. Each
torn copy is counted in the sensor's ``counters["torn_copies"]``.

The sync works over the bundle's modalities, in the bundle's order: each is fed by the sensor of
its stream (``ModalitySpec.sensor``), with that stream's age limit; a modality whose stream has no
sensor on this robot is absent on every tick (state FAILED).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgefusion.backends.base import Backend
from edgefusion.modalities import ModalitySpec
from edgefusion.sensors.base import ABSENT_STATES, Sample, SampleSource, SensorState

COPY_TRIES = 3  # copies of a view that a capture burst may tear before the tick gives up on it


@dataclass
class SyncState:
    """One tick's view, one entry per modality in the bundle's order (lists reused tick after tick)."""

    present: list[bool]
    fresh: list[bool]
    states: list[SensorState]
    sample_t: list[float | None]  # capture times used

    @classmethod
    def empty(cls, n: int) -> SyncState:
        return cls([False] * n, [False] * n, [SensorState.RECONNECTING] * n, [None] * n)


class Synchronizer:
    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        sensors: dict[str, SampleSource],
        max_age_s: dict[str, float],
        backend: Backend,
    ):
        """``modalities``: the bundle's, in its order; ``sensors`` and ``max_age_s``: by stream
        (rgb, depth, audio), as the config and the rig know them; ``backend``: its input buffers,
        one per modality name."""
        self.sensors = [sensors.get(spec.sensor) for spec in modalities]
        self.max_age = [max_age_s[spec.sensor] for spec in modalities]
        self.buffers = [backend.input_buffer(spec.name)[0] for spec in modalities]
        self.state = SyncState.empty(len(modalities))
        self._last_seq = [0] * len(modalities)

    def update(self, now: float) -> SyncState:
        s = self.state
        present, fresh, states, sample_t, last = s.present, s.fresh, s.states, s.sample_t, self._last_seq
        for i, sensor in enumerate(self.sensors):
            if sensor is None:
                present[i] = fresh[i] = False
                states[i], sample_t[i] = SensorState.FAILED, None
                continue
            sample, states[i], _ = sensor.poll(self.max_age[i], now)
            if states[i] in ABSENT_STATES:  # a dead device's last sample, young by its offset or not
                sample = None
            copied = False
            if sample is not None and sample.seq != last[i]:
                sample = self._copy_in(i, sensor, sample, now)
                copied = sample is not None
            if sample is None or sample.silent:
                present[i] = fresh[i] = False
                sample_t[i] = None
            else:
                present[i], fresh[i], sample_t[i] = True, copied, sample.t
        return s

    def _copy_in(self, i: int, sensor: SampleSource, sample: Sample, now: float) -> Sample | None:
        """Copy a new sample into the backend's buffer: the sample copied whole, or None."""
        for _ in range(COPY_TRIES):
            np.copyto(self.buffers[i], sample.data)
            if sample.intact is None or sample.intact():
                self._last_seq[i] = sample.seq
                return sample
            sensor.counters["torn_copies"] += 1  # this thread's key alone: no race with the capture thread's
            newer, state, _ = sensor.poll(self.max_age[i], now)
            if newer is None or state in ABSENT_STATES:
                break
            sample = newer
        self._last_seq[i] = 0  # the buffer holds no whole sample: the next one is fresh, whatever it is
        return None
