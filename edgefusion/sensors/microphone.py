"""Microphones: blocks of PCM in, a window of the last ``window_s`` seconds out.

Captured blocks go into a ring that is mirrored (every sample written twice, ``size`` apart), so
the newest window is always one contiguous view: no copy, no allocation per block. The ring is
two hops (200 ms of audio) longer than the window, so a window handed out stays intact while
the next blocks are written for that long. The loop copies a new window at its next tick (33 ms
at 30 Hz), well inside that, and never copies the same window twice.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgefusion.sensors.base import Sensor


class AudioRing:
    def __init__(self, window: int, margin: int):
        self.window = window
        self.size = window + margin
        self._buf = np.zeros(2 * self.size, np.float32)
        self._pos = 0  # next write index in [0, size)

    def push(self, block: np.ndarray) -> None:
        n = len(block)
        if n > self.size - self.window:
            raise ValueError(f"block of {n} samples exceeds the ring margin {self.size - self.window}")
        end = self._pos + n
        if end <= self.size:
            self._buf[self._pos : end] = block
            self._buf[self._pos + self.size : end + self.size] = block
        else:
            k = self.size - self._pos
            self._buf[self._pos : self.size] = block[:k]
            self._buf[self._pos + self.size :] = block[:k]
            self._buf[: n - k] = block[k:]
            self._buf[self.size : self.size + n - k] = block[k:]
        self._pos = end % self.size

    def latest(self) -> np.ndarray:
        """The newest ``window`` samples, oldest first."""
        end = self._pos + self.size
        return self._buf[end - self.window : end]


class MicrophoneSensor(Sensor):
    """A driver's ``_capture`` returns one block and the time of its last sample; a new window
    sample is published every ``hop_s`` of audio (the audio encoder's rate)."""

    modality = "audio"

    def __init__(self, name: str, sample_rate: int, window_s: float, hop_s: float = 0.1, block: int = 160, **kw):
        super().__init__(name, **kw)
        self.sample_rate = sample_rate
        self.block = block
        self.hop = int(round(hop_s * sample_rate))
        self._ring = AudioRing(int(round(window_s * sample_rate)), margin=max(2 * self.hop, 16 * block))
        self._since_hop = 0
        self._good = 0  # samples since the last dropped block: a window must be all good
        # Called on the capture thread with every good block before any window it completes is
        # published (a session recorder writes the blocks; a window then ends at its last one).
        self.on_block: Callable[[np.ndarray, float], None] | None = None

    def _opened(self) -> None:
        # Audio from before an outage must not be handed out as new: start the window afresh.
        self._good = self._since_hop = 0
        super()._opened()

    def _publish(self, data: np.ndarray, t: float) -> None:
        if not self._usable(data, t):
            self._good = 0
            return
        self._ring.push(data)
        tap = self.on_block  # read once: see Sensor._store
        if tap is not None:
            tap(data, t)
        self._good += len(data)
        self._since_hop += len(data)
        if self._since_hop >= self.hop and self._good >= self._ring.window:
            self._since_hop %= self.hop  # keep the overshoot: uneven blocks must not stretch the hop
            self._store(self._ring.latest(), t)
