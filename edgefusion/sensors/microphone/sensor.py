"""Microphones: blocks of PCM in, a window of the last ``window_s`` seconds out.

Captured blocks go into a ring that is mirrored (every sample written twice, ``size`` apart), so
the newest window is always one contiguous view: no copy, no allocation per block. The ring is
two hops (200 ms of audio) longer than the window, so a window handed out stays intact while
the next blocks are written for that long. The loop copies a new window at its next tick (33 ms
at 30 Hz), well inside that, and never copies the same window twice; but capture draining a
backlog (PortAudio after a stall) can write faster than real time, so each window carries a
check the reader makes after its copy (``Sample.intact``): a torn copy is never used.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from edgefusion.sensors.base import Sensor

# A window whose newest 0.3 s are digital silence (exact zeros: a muted input, an idle PulseAudio
# monitor) is absent to the model. On the demo bundle (fp32, 300 held-out samples) a window that
# is all silence is answered right 32 % of the time at 0.95 confidence, 0.3 s of it 98 %, 0.5 s
# 75 %; audio absent 93 %. The sensor stays OK and keeps the window: the device is not broken.
SILENT_AFTER_S = 0.3


class AudioRing:
    """The mirrored ring. ``written`` counts every sample ever pushed and ``claimed`` those a push
    has begun to write: a sequence check for readers on another thread (see ``intact``)."""

    def __init__(self, window: int, margin: int):
        self.window = window
        self.size = window + margin
        self._buf = np.zeros(2 * self.size, np.float32)
        self._pos = 0  # next write index in [0, size)
        self.written = self.claimed = 0

    def push(self, block: np.ndarray) -> None:
        n = len(block)
        if n > self.size - self.window:
            raise ValueError(f"block of {n} samples exceeds the ring margin {self.size - self.window}")
        self.claimed = self.written + n  # before a sample is overwritten (the GIL orders the two)
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
        self.written = self.claimed

    def latest(self) -> np.ndarray:
        """The newest ``window`` samples, oldest first."""
        end = self._pos + self.size
        return self._buf[end - self.window : end]

    def intact(self, end: int) -> bool:
        """Whether the window that ended at sample ``end`` (``written`` when it was taken) is still
        whole: no push has begun to overwrite its oldest sample. Called after copying it out,
        True means the copy is that window."""
        return self.claimed - end <= self.size - self.window


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
        self._silence = 0  # samples in the blocks of digital silence at the ring's end
        self._silent_after = int(round(SILENT_AFTER_S * sample_rate))
        # Called on the capture thread with every good block before any window it completes is
        # published (a session recorder writes the blocks; a window then ends at its last one).
        self.on_block: Callable[[np.ndarray, float], None] | None = None

    def _opened(self) -> None:
        # Audio from before an outage must not be handed out as new: start the window afresh.
        self._good = self._since_hop = self._silence = 0
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
        self._silence = 0 if data.any() else self._silence + len(data)
        if self._since_hop >= self.hop and self._good >= self._ring.window:
            # Keep a hop's overshoot (uneven blocks must not stretch the hop), not a refill's after
            # dropped samples: the next window comes a hop after this one, never sooner.
            self._since_hop = self._since_hop % self.hop if self._since_hop < 2 * self.hop else 0
            self._publish_window(t)

    def _publish_window(self, t: float) -> None:
        """The newest window, with its sequence check; silent (said in the state's reason) when
        its newest SILENT_AFTER_S are digital silence."""
        silent = self._silence >= self._silent_after
        reason = ""
        if silent:
            self.counters["silent_windows"] += 1
            reason = f"digital silence for {self._silence / self.sample_rate:.1f} s (a muted or idle input)"
        intact = functools.partial(self._ring.intact, self._ring.written)
        self._store(self._ring.latest(), t, reason, silent=silent, intact=intact)
