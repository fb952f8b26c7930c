"""A real RealSense and a real microphone on the robot: the drivers against the devices.

Skipped where no RealSense is plugged in (``rs.context().query_devices()`` is empty) or no
PortAudio input device exists. ``EDGEFUSION_MIC`` picks the microphone (name or index, as
``[microphone] device``); a person should speak near it during the microphone test.
"""

import os
import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")


def _wait(sensor, max_age_s, n, timeout_s=15.0):
    """``n`` distinct samples from a connected sensor, or fail after ``timeout_s``."""
    seen, deadline = {}, time.monotonic() + timeout_s
    while len(seen) < n and time.monotonic() < deadline:
        s = sensor.read_latest(max_age_s)
        if s is not None:
            seen[s.seq] = (s.t, s.data.copy(), time.monotonic())
        time.sleep(0.005)
    assert len(seen) >= n, f"{sensor.name}: {len(seen)} of {n} samples; state {sensor.state(max_age_s)}"
    return [seen[k] for k in sorted(seen)]


@pytest.mark.skipif(len(rs.context().query_devices()) == 0, reason="no RealSense connected")
def test_a_realsense_streams_aligned_metric_frames_on_the_monotonic_clock():
    from edgefusion.sensors.realsense import RealSenseCamera, RealSenseConfig

    camera = RealSenseCamera(
        RealSenseConfig(serial=os.environ.get("EDGEFUSION_SERIAL", "")), {"rgb": (48, 64), "depth": (48, 64)}
    )
    camera.connect()
    try:
        rgb = _wait(camera, 0.1, 60)
        depth = _wait(camera.sources["depth"], 0.1, 30)
    finally:
        camera.disconnect()
    times = np.array([t for t, _, _ in rgb])
    assert 20 <= 1 / np.median(np.diff(times)) <= 40, "about 30 fps"
    assert all(0 <= seen - t <= 0.2 for t, _, seen in rgb), "stamped at capture, on the monotonic clock"
    assert rgb[-1][1].shape == (3, 48, 64) and depth[-1][1].shape == (1, 48, 64)
    d = depth[-1][1]
    assert 0.1 < np.median(d[d > 0]) < 10, "depth in metres"


def test_a_microphone_delivers_16_khz_windows_on_the_monotonic_clock():
    pytest.importorskip("pyaudio")
    from edgefusion.sensors.microphone import MicrophoneConfig, PyAudioMicrophone, import_pyaudio, input_devices

    pa = import_pyaudio().PyAudio()
    try:
        if not input_devices(pa):
            pytest.skip("no input device")
    finally:
        pa.terminate()
    mic = PyAudioMicrophone(MicrophoneConfig(device=os.environ.get("EDGEFUSION_MIC", "")), 16000, 1.0)
    mic.connect()
    try:
        windows = _wait(mic, 0.25, 15, timeout_s=10)
    finally:
        mic.disconnect()
    times = np.array([t for t, _, _ in windows])
    assert abs(np.median(np.diff(times)) - 0.1) < 0.01, "a window every 0.1 s"
    assert windows[-1][1].shape == (16000,) and np.abs(windows[-1][1]).max() > 0, "not silence"
    assert mic.counters["overflows"] == 0 and mic.counters["dropped_blocks"] == 0
