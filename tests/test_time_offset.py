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


def test_calibrate_offset_writes_the_config_from_a_recorded_session(tmp_path):
    """A session recorded while claps were seen and heard: the command finds the offset and
    writes it into the config, keeping the rest of the file."""
    pytest.importorskip("pyrealsense2")
    import json
    import subprocess
    import sys
    import wave

    from edgefusion.sensors.frames import pcm16
    from edgefusion.session.camera_file import CameraFileWriter, camera_file_name
    from edgefusion.session.layout import SESSION_FORMAT

    late_s = 0.043
    audio, t0, frame_end, frames = _recording(late_s, seed=3)
    session = tmp_path / "claps"
    session.mkdir()
    camera = CameraFileWriter(session / camera_file_name(), {"rgb": (48, 64)})
    for t, f in zip(frame_end, frames):
        camera.write("rgb", np.full((3, 48, 64), f.mean(), np.float32), float(t))
    camera.close()
    with wave.open(str(session / "audio.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm16(audio * 10_000).tobytes())
    events = [{"t": 0.0, "kind": "start", "format": SESSION_FORMAT, "sample_rate": SR, "offsets_ms": {"audio": 5.0}}]
    events += [{"t": t0 + (end - 1) / SR, "kind": "window", "end": end} for end in range(SR, len(audio), SR // 10)]
    (session / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    config = tmp_path / "robot.toml"
    config.write_text("# the robot\n[runtime]\ntick_hz = 30.0\n\n[sensors.audio]\nmax_age_ms = 250.0\n")

    cmd = ["calibrate-offset", "--session", str(session), "--config", str(config)]
    r = subprocess.run(
        [sys.executable, "-m", "edgefusion.cli", *cmd],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    text = config.read_text()
    assert text.startswith("# the robot\n") and "max_age_ms = 250.0" in text
    from edgefusion.config import load_config

    # The recording ran with +5 ms already applied; the stamps were late_s late on top of that.
    assert abs(load_config(config).sensors["audio"].offset_ms - (5.0 - late_s * 1000)) <= 5.0
