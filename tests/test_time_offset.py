"""Audio-video offset from claps: a synthetic recording with a known offset is recovered."""

import numpy as np
import pytest
from edgefusion.calibration.time_offset import brightness, estimate_av_offset

FPS, SR = 30.0, 16_000


def _recording(audio_late_s: float, seed: int = 0, seconds: float = 12.0):
    """Eight clapper events at random times: an LED lit for 10 ms while a 10 ms beep sounds (the
    estimator aligns the events' energy, so both last as long). The camera integrates the LED
    over its exposure; the microphone's samples are stamped ``audio_late_s`` late."""
    rng = np.random.default_rng(seed)
    claps = np.sort(rng.uniform(1.0, seconds - 1.0, 8))
    frame_end = np.arange(1, int(seconds * FPS)) / FPS + 0.0123  # the camera clock's own phase
    exposure = 1 / FPS
    frames = np.zeros((len(frame_end), 8, 8), np.float32)
    for k, end in enumerate(frame_end):
        lit = sum(max(0.0, min(end, c + 0.010) - max(end - exposure, c)) for c in claps) / exposure
        frames[k] = 50 + 150 * lit + rng.normal(0, 2, (8, 8))
    n = int(seconds * SR)
    audio = rng.normal(0, 0.01, n)
    for c in claps:
        i = int(c * SR)
        audio[i : i + int(0.010 * SR)] += np.sin(2 * np.pi * 2000 * np.arange(int(0.010 * SR)) / SR)
    # The audio clock stamps every sample audio_late_s late.
    return audio.astype(np.float32), audio_late_s, frame_end, frames


@pytest.mark.parametrize("late_s", [0.0, 0.037, -0.052, 0.11])
def test_a_known_offset_is_recovered_within_5_ms(late_s):
    audio, t0, frame_end, frames = _recording(late_s, seed=int(abs(late_s) * 1000))
    est = estimate_av_offset(audio, SR, t0, frame_end, brightness(frames))
    assert abs(est.offset_s - (-late_s)) <= 0.005, est
    assert est.events_frames >= 8 and est.residual < 1.0


def test_a_recording_without_events_does_not_pretend():
    rng = np.random.default_rng(1)
    frames = 50 + rng.normal(0, 2, (300, 8, 8))
    est = estimate_av_offset(rng.normal(0, 0.01, 10 * SR), SR, 0.0, np.arange(1, 301) / FPS, brightness(frames))
    assert est.residual > 1.5, "noise against noise matches nothing"
