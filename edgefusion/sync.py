"""Sync: from the sensors' latest samples to what the model sees at one tick.

Every sample carries a time on the one monotonic clock (sensor offsets already applied). At a
tick, a modality is *present* when its newest sample is no older than its age limit (sensors
drop non-finite samples on their own threads), and *fresh* when that sample has not been fed
before: only fresh modalities are copied into the backend and re-encoded. The audio window is
the microphone's newest window: a new one every hop (0.1 s), so it ends at most one hop (plus
one 10 ms capture block) before the tick; its age limit bounds that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgefusion.backends.base import Backend
from edgefusion.modalities import MODALITIES
from edgefusion.sensors.base import SampleSource, SensorState


@dataclass
class SyncState:
    present: list[bool] = field(default_factory=lambda: [False] * len(MODALITIES))
    fresh: list[bool] = field(default_factory=lambda: [False] * len(MODALITIES))
    states: list[SensorState] = field(default_factory=lambda: [SensorState.RECONNECTING] * len(MODALITIES))
    sample_t: list[float | None] = field(default_factory=lambda: [None] * len(MODALITIES))  # capture times used


class Synchronizer:
    def __init__(self, sensors: dict[str, SampleSource], max_age_s: dict[str, float], backend: Backend):
        self.sensors = [sensors.get(m) for m in MODALITIES]
        self.max_age = [max_age_s[m] for m in MODALITIES]
        self.buffers = [backend.input_buffer(m)[0] for m in MODALITIES]
        self.state = SyncState()
        self._last_seq = [0] * len(MODALITIES)

    def update(self, now: float) -> SyncState:
        s = self.state
        present, fresh, states, sample_t, last = s.present, s.fresh, s.states, s.sample_t, self._last_seq
        for i, sensor in enumerate(self.sensors):
            if sensor is None:
                present[i] = fresh[i] = False
                states[i], sample_t[i] = SensorState.FAILED, None
                continue
            sample, states[i], _ = sensor.poll(self.max_age[i], now)
            if sample is None:
                present[i] = fresh[i] = False
                sample_t[i] = None
                continue
            sample_t[i] = sample.t
            if sample.seq != last[i]:
                last[i] = sample.seq
                np.copyto(self.buffers[i], sample.data)
                present[i] = fresh[i] = True
            else:
                present[i], fresh[i] = True, False
        return s
