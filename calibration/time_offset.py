"""Audio-video time offset of a rig, from a recording of sharp events (claps seen and heard).

The seed's estimator: tau* = argmin_tau || x_s(t) - x_g(t + tau) || (the sign chosen so that
tau is what to add to the audio timestamps). Here x_s is the audio's
energy and x_g the camera's per-frame event strength (the brightness of a flash-like event).
A camera integrates light over each frame's exposure, so the audio is compared the same way: its
energy averaged over every frame's exposure window, shifted by tau. With several events at
different phases of the frame clock this resolves the offset far below one frame period.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OffsetEstimate:
    offset_s: float  # add this to the audio sensor's timestamps (the config's offset_ms / 1000)
    residual: float  # normalised squared distance at the optimum: 0 = perfect match, 2 = none
    events_frames: int  # frames with a clear event, a sanity check that the recording has claps


def brightness(frames: np.ndarray) -> np.ndarray:
    """Per-frame event strength for a flash-like event (an LED clapper, a tap on a lit plate):
    mean brightness, which a frame integrates over its exposure just as the estimator assumes.
    Motion energy would be the event's derivative and bias the estimate by its rise time."""
    return frames.reshape(len(frames), -1).astype(np.float64).mean(axis=1)


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-12)


def estimate_av_offset(
    audio: np.ndarray,
    sample_rate: float,
    audio_t0: float,
    frame_times: np.ndarray,
    frame_signal: np.ndarray,
    exposure_s: float | None = None,
    max_offset_s: float = 0.25,
    step_s: float = 0.0005,
) -> OffsetEstimate:
    """Offset between the audio and video clocks of one recording.

    ``audio_t0`` is the time of the first audio sample and ``frame_times`` the time each frame's
    exposure ended, both on the runtime's clock; ``exposure_s`` defaults to one frame period.
    """
    frame_times = np.asarray(frame_times, dtype=np.float64)
    if len(frame_times) != len(frame_signal) or len(frame_times) < 3:
        raise ValueError("need one event-strength value per frame, and at least 3 frames")
    if exposure_s is None:
        exposure_s = float(np.median(np.diff(frame_times)))
    energy = np.asarray(audio, dtype=np.float64) ** 2
    csum = np.concatenate([[0.0], np.cumsum(energy)])
    observed = _zscore(np.asarray(frame_signal, dtype=np.float64))

    def predicted(tau: float) -> np.ndarray:
        # Audio energy over each frame's exposure, with the audio clock moved by tau.
        end = np.clip(((frame_times - tau) - audio_t0) * sample_rate, 0, len(energy))
        start = np.clip(end - exposure_s * sample_rate, 0, len(energy))
        i0, i1 = np.floor(start).astype(int), np.floor(end).astype(int)
        return (csum[i1] - csum[i0]) / np.maximum(i1 - i0, 1)

    taus = np.arange(-max_offset_s, max_offset_s + step_s / 2, step_s)
    cost = np.array([np.mean((_zscore(predicted(t)) - observed) ** 2) for t in taus])
    best = int(np.argmin(cost))
    tau = taus[best]
    if 0 < best < len(taus) - 1:  # parabolic refinement between grid points
        a, b, c = cost[best - 1 : best + 2]
        denom = a - 2 * b + c
        if denom > 0:
            tau += 0.5 * (a - c) / denom * step_s
    # The best match reads audio stamped (frame time - tau): audio stamps run -tau late, so
    # adding tau to them puts both on one clock.
    return OffsetEstimate(float(tau), float(cost[best]), int((observed > 2).sum()))


def session_offset(session) -> OffsetEstimate:
    """The offset in a recorded session (``load_session``) of clapper events (``edgefusion record`` while someone
    claps an LED clapper in view): audio.wav against the RGB frames' brightness.

    The WAV holds the good audio back to back; each window event says which sample ended when,
    so the first sample's time is the median of (t - (end - 1) / rate). A recording with a microphone
    outage in it has two such clocks: record the clapping without faults."""
    from edgefusion.errors import SessionError

    rgb = session.frames["rgb"]
    if len(rgb) < 3 or not session.windows:
        raise SessionError(f"{session.root}: needs RGB frames and audio to estimate the audio-video offset")
    rate = int(session.facts["sample_rate"])
    audio_t0 = float(np.median([t - (end - 1) / rate for (t, _), end in zip(session.windows, session.window_ends)]))
    times = np.array([t for t, _ in rgb])
    return estimate_av_offset(session.audio, rate, audio_t0, times, brightness(np.stack([f for _, f in rgb])))
