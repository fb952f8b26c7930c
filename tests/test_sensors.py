"""Sensor base behaviour (threads, health, reconnect, NaN drop), the audio ring, the simulated rig."""

import time

import numpy as np
import pytest
from stream_specs import DEMO, DEPTH_AUDIO
from waiting import wait_for

from edgefusion.sensors.base import Backoff, Sensor, SensorGone, SensorState
from edgefusion.sensors.faults import parse_faults
from edgefusion.sensors.frames import depth_metres, depth_z16
from edgefusion.sensors.microphone import AudioRing, MicrophoneSensor
from edgefusion.sim.simulated import Deliver, resample, simulated_rig
from edgefusion.task import GESTURES
from edgefusion.task.scenes import render_depth


def test_audio_ring_window_is_the_last_samples_across_wraps():
    ring = AudioRing(window=100, margin=40)
    stream = np.arange(1000, dtype=np.float32)
    for start in range(0, 1000, 30):
        ring.push(stream[start : start + 30])
        end = min(start + 30, 1000)
        if end >= 100:
            np.testing.assert_array_equal(ring.latest(), stream[end - 100 : end])
    with pytest.raises(ValueError):
        ring.push(np.zeros(41, np.float32))


class _ScriptedDevice(Sensor):
    """A driver double whose open/capture follow a script: exercises the base class's logic."""

    modality = "rgb"

    def __init__(self, fail_opens=0, lose_after=None, nan_every=0):
        super().__init__("scripted", backoff=Backoff(0.01, 0.02), read_timeout_s=0.05)
        self.fail_opens, self.lose_after, self.nan_every = fail_opens, lose_after, nan_every
        self.opens = self.frames = 0

    def _open(self):
        self.opens += 1
        if self.opens <= self.fail_opens:
            raise OSError("no device")

    def _capture(self, timeout_s):
        time.sleep(0.005)
        self.frames += 1
        if self.lose_after is not None and self.frames == self.lose_after:
            raise SensorGone("unplugged")
        bad = self.nan_every and self.frames % self.nan_every == 0
        return np.full(4, np.nan if bad else self.frames, np.float32), time.monotonic()

    def _close(self):
        pass


def _wait_for(pred, timeout=3.0):
    return wait_for(pred, timeout)


def test_failed_opens_are_retried_until_the_device_appears():
    dev = _ScriptedDevice(fail_opens=3)
    dev.connect()
    try:
        assert _wait_for(lambda: dev.read_latest(0.5) is not None)
        assert dev.opens == 4 and dev.state(0.5)[0] is SensorState.OK
    finally:
        dev.disconnect()


def test_a_lost_device_is_reported_and_reopened():
    dev = _ScriptedDevice(lose_after=5)
    dev.connect()
    try:
        assert _wait_for(lambda: dev.opens >= 2 and dev.read_latest(0.1) is not None)
        assert dev.state(0.1)[0] is SensorState.OK
    finally:
        dev.disconnect()
    assert dev.state(0.1)[0] is SensorState.FAILED


def test_stale_when_no_sample_within_max_age():
    dev = _ScriptedDevice()
    dev.connect()
    try:
        assert _wait_for(lambda: dev.read_latest(0.5) is not None)
        later = time.monotonic() + 10
        assert dev.read_latest(0.5, now=later) is None
        assert dev.state(0.5, now=later)[0] is SensorState.STALE
    finally:
        dev.disconnect()


def test_non_finite_samples_are_dropped_and_counted():
    dev = _ScriptedDevice(nan_every=2)
    dev.connect()
    try:
        assert _wait_for(lambda: dev.dropped["nonfinite"] >= 5)
        for _ in range(20):
            s = dev.read_latest(1.0)
            assert s is None or np.isfinite(s.data).all()
    finally:
        dev.disconnect()


class _Tone(MicrophoneSensor):
    """Counts samples 0, 1, 2, ... in blocks of 10; block ``bad_block`` carries an Inf."""

    def __init__(self, bad_block=None):
        super().__init__("tone", sample_rate=1000, window_s=0.5, hop_s=0.1, block=10)
        self.bad_block, self.blocks = bad_block, 0
        self.windows: list[np.ndarray] = []

    def _store(self, data, t, *args, **kw):
        self.windows.append(data.copy())
        super()._store(data, t, *args, **kw)

    def _open(self):
        pass

    def _capture(self, timeout_s):
        time.sleep(0.0005)
        self.blocks += 1
        block = np.arange(self.blocks * 10, self.blocks * 10 + 10, dtype=np.float32)
        if self.blocks == self.bad_block:
            block[3] = np.inf
        return block, time.monotonic()

    def _close(self):
        pass


def test_microphone_windows_are_contiguous_and_never_span_a_bad_block():
    mic = _Tone(bad_block=70)
    mic.connect()
    try:
        assert _wait_for(lambda: mic.blocks > 150)
    finally:
        mic.disconnect()
    bad_start = 70 * 10
    assert mic.dropped["nonfinite"] == 1
    assert mic.windows, "windows were published"
    for w in mic.windows:
        assert len(w) == 500 and np.isfinite(w).all()
        np.testing.assert_array_equal(np.diff(w), 1)  # one unbroken run of samples
        assert w[-1] < bad_start or w[0] >= bad_start + 10, "no window reaches across the dropped block"
    before = [w for w in mic.windows if w[-1] < bad_start]
    after = [w for w in mic.windows if w[0] >= bad_start + 10]
    assert before and after, "windows on both sides of the gap"


def test_simulated_rig_streams_and_recovers_from_a_stop():
    rig = simulated_rig(DEMO, seed=1, faults=parse_faults("depth:stop@0.6-1.2"))
    scenario, sensors = rig.scenario, rig.sensors
    rig.clock.start()
    for s in sensors.values():
        s.connect()
    try:
        assert _wait_for(lambda: sensors["depth"].read_latest(0.1) is not None), "depth streams"
        assert _wait_for(lambda: sensors["depth"].read_latest(0.1) is None), "depth stops at 0.6 s"
        assert sensors["depth"].state(0.1)[0] in (SensorState.FAILED, SensorState.RECONNECTING)
        # Back at 1.2 s, reopened by the backoff schedule within another 0.8 s.
        assert _wait_for(lambda: sensors["depth"].read_latest(0.1) is not None, timeout=3.0)
        rgb = sensors["rgb"].read_latest(0.1)
        assert rgb is not None and rgb.data.shape == (3, 48, 64)
        assert rgb.seq >= 15, "frames keep coming (about 30 per second)"
        audio = sensors["audio"].read_latest(0.3)
        assert audio is not None and audio.data.shape == (16000,) and np.abs(audio.data).max() > 0
        assert sensors["depth"].state(0.1)[0] is SensorState.OK
        first, second = scenario.intent_and_cues(0), scenario.intent_and_cues(1)
        assert scenario.intent_at(0.0) == first[0] and scenario.intent_at(scenario.segment_s + 0.01) == second[0]
    finally:
        for s in sensors.values():
            s.disconnect()


def test_a_simulated_rig_delivers_each_stream_at_its_modalitys_size_rate_and_window():
    """A depth + audio bundle (160x120 depth, 0.5 s at 8 kHz, names apart from their streams):
    no colour stream, depth frames resized from the task's scenes, audio resampled and windowed."""
    rig = simulated_rig(DEPTH_AUDIO, seed=2)
    assert set(rig.sensors) == {"depth", "audio"}
    rig.clock.start()
    for s in rig.sensors.values():
        s.connect()
    try:
        assert _wait_for(lambda: rig.sensors["audio"].read_latest(0.3) is not None, timeout=5.0)
        depth, audio = rig.sensors["depth"].read_latest(0.2), rig.sensors["audio"].read_latest(0.3)
    finally:
        for s in rig.sensors.values():
            s.disconnect()
    assert depth is not None and depth.data.shape == (1, 120, 160)
    np.testing.assert_array_equal(depth.data, depth_metres(depth_z16(depth.data)))  # whole Z16 steps
    assert audio.data.shape == (4000,) and np.abs(audio.data).max() > 0
    np.testing.assert_array_equal(audio.data, np.rint(audio.data))  # whole 16-bit steps


def test_scenes_are_resized_as_a_camera_resizes_and_audio_resampled_band_limited():
    scene = render_depth(GESTURES[0], np.random.default_rng(0))
    small, large = Deliver("depth", (48, 64))(scene), Deliver("depth", (120, 160))(scene)
    rows = ((np.arange(120) + 0.5) * 48 / 120).astype(int)
    cols = ((np.arange(160) + 0.5) * 64 / 160).astype(int)
    np.testing.assert_array_equal(large[0], small[0][rows][:, cols])  # nearest: no depth invented
    t = np.arange(16000) / 16000
    tone = (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 6000 * t)).astype(np.float32) * 1000
    down = resample(tone, 16000, 8000)
    spectrum = np.abs(np.fft.rfft(down))
    assert len(down) == 8000 and np.argmax(spectrum) == 440  # 1 Hz bins over one second
    # 6 kHz is above the 4 kHz that 8 kHz can hold: gone, not aliased to 2 kHz.
    assert np.delete(spectrum, 440).max() < 1e-3 * spectrum[440]
