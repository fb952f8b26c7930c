"""Time in the sync: a FAILED or RECONNECTING sensor is absent whatever its offset, age is judged
on arrival as well as on corrected capture time, and an audio window copied while capture bursts
is never torn."""

import threading
import time

import numpy as np
import pytest
from waiting import wait_for

from edgefusion.modalities import MODALITIES, ModalitySpec
from edgefusion.sensors.base import Backoff, Sensor, SensorGone, SensorState
from edgefusion.sensors.microphone import AudioRing, MicrophoneSensor
from edgefusion.sync import Synchronizer

SHAPES = {"rgb": (3, 48, 64), "depth": (1, 48, 64), "audio": (16000,)}
SPECS = tuple(
    ModalitySpec(m, m, SHAPES[m], m, f"p_{m}", (4, 32), 30.0) for m in MODALITIES
)  # the demo's, fed by their namesakes


class _Buffers:
    """What the Synchronizer needs of a backend: one input buffer per modality."""

    def __init__(self):
        self.buffers = {m: np.zeros((1, *SHAPES[m]), np.float32) for m in MODALITIES}

    def input_buffer(self, modality):
        return self.buffers[modality]


class _Camera(Sensor):
    """A depth camera giving a new frame every 5 ms until ``lose`` is set, then lost for good
    (every reopen fails): a dead device."""

    modality = "depth"

    def __init__(self, offset_s=0.0):
        super().__init__("cam", offset_s=offset_s, backoff=Backoff(0.01, 0.02), read_timeout_s=0.05)
        self.lose = threading.Event()
        self.stall = threading.Event()
        self.n = 0

    def _open(self):
        if self.lose.is_set():
            raise OSError("no device")

    def _capture(self, timeout_s):
        time.sleep(0.005)
        if self.lose.is_set():
            raise SensorGone("unplugged")
        if self.stall.is_set():
            return None
        self.n += 1
        return np.full(SHAPES["depth"], 1.0 + self.n * 1e-3, np.float32), time.monotonic()

    def _close(self):
        pass


def _present(sync: Synchronizer, now: float | None = None) -> bool:
    return sync.update(time.monotonic() if now is None else now).present[MODALITIES.index("depth")]


@pytest.mark.parametrize("offset_s", [0.0, 2.0])
def test_a_dead_sensor_is_absent_at_once_whatever_its_offset(offset_s):
    cam = _Camera(offset_s)
    sync = Synchronizer(SPECS, {"depth": cam}, {m: 0.1 for m in MODALITIES}, _Buffers())
    cam.connect()
    try:
        assert wait_for(lambda: _present(sync), 3.0)
        cam.lose.set()
        assert wait_for(lambda: cam.state(0.1)[0] is not SensorState.OK, 3.0)
        # The last frame is young by its corrected time (2 s in the future with the offset), but
        # the device is gone: absent on every tick from now on.
        seen = []
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            seen.append((_present(sync), sync.state.states[MODALITIES.index("depth")]))
            time.sleep(0.01)
        assert all(state in (SensorState.FAILED, SensorState.RECONNECTING) for _, state in seen), seen
        assert not any(present for present, _ in seen), seen
        assert cam.counters["device_errors"] == 1 and cam.counters["open_failures"] >= 1
    finally:
        cam.disconnect()


def test_age_is_judged_on_arrival_too():
    """A stalled device stays OK; its last frame, stamped 2 s ahead by the offset, is absent once
    it arrived longer ago than the age limit."""
    cam = _Camera(offset_s=2.0)
    cam.connect()
    try:
        assert wait_for(lambda: cam.read_latest(0.1) is not None, 3.0)
        cam.stall.set()
        time.sleep(0.05)
        last = cam._latest
        assert last.t > last.arrived + 1.9, "the offset moved the capture time, not the arrival"
        assert cam.read_latest(0.1, now=last.arrived + 0.05) is last
        assert cam.read_latest(0.1, now=last.arrived + 0.15) is None
        assert cam.state(0.1, now=last.arrived + 0.15)[0] is SensorState.STALE
    finally:
        cam.disconnect()


def test_a_negative_offset_ages_a_sample_sooner():
    cam = _Camera(offset_s=-0.08)
    cam.connect()
    try:
        assert wait_for(lambda: cam.read_latest(0.1) is not None, 3.0)
        cam.stall.set()
        time.sleep(0.05)
        last = cam._latest
        assert cam.read_latest(0.1, now=last.arrived + 0.03) is None, "captured 80 ms before it arrived"
    finally:
        cam.disconnect()


def test_a_window_overwritten_after_it_was_taken_is_not_intact():
    ring = AudioRing(window=100, margin=40)
    for start in range(0, 100, 20):
        ring.push(np.arange(start, start + 20, dtype=np.float32))
    end = ring.written
    for _ in range(4):
        ring.push(np.zeros(10, np.float32))
        assert ring.intact(end), "the margin's worth of new samples leaves the window whole"
    np.testing.assert_array_equal(ring.latest()[-40:], np.zeros(40))  # the newest window ends in them
    ring.push(np.zeros(1, np.float32))
    assert not ring.intact(end), "one sample more overwrites its oldest"


RAMP = 65536  # the burst's samples count up modulo this, inside the 16-bit range


class _Burst(MicrophoneSensor):
    """A microphone draining a backlog as fast as the thread runs: a ramp in blocks of 160, so
    any window handed out must be one unbroken run of it."""

    def __init__(self):
        super().__init__("burst", sample_rate=16000, window_s=1.0, block=160)
        self.n = 0
        self._t = 0.0

    def _open(self):
        pass

    def _capture(self, timeout_s):
        block = (np.arange(self.n, self.n + 160) % RAMP - RAMP // 2).astype(np.float32)
        self.n += 160
        self._t = max(self._t + 1e-9, time.monotonic())  # a backlog's blocks arrive now, in order
        return block, self._t

    def _close(self):
        pass


class _Preempted(_Burst):
    """The reading thread loses the CPU right after it was handed a window (a busy robot's
    scheduler, or the interpreter's switch interval) for as long as capture, draining its
    backlog, takes to write over that window: at every other poll that hands over a new window
    (counted by window, not by poll, so a loaded machine's polls of an old window cannot fall
    into step with the preempted ones), so the retry of a torn copy may find the CPU again."""

    new_windows = 0
    _last_seq = None

    def poll(self, max_age_s, now=None):
        got = super().poll(max_age_s, now)
        sample = got[0]
        if sample is not None and sample.seq != self._last_seq:
            self._last_seq = sample.seq
            self.new_windows += 1
            if self.new_windows % 2:
                overwritten = self._ring.written + self._ring.size - self._ring.window + 1
                assert wait_for(lambda: self._ring.claimed >= overwritten, 5.0), "capture runs on"
        return got


def test_audio_windows_copied_during_a_capture_burst_are_never_torn():
    mic = _Preempted()
    buffers = _Buffers()
    sync = Synchronizer(SPECS, {"audio": mic}, {m: 1e6 for m in MODALITIES}, buffers)
    audio = MODALITIES.index("audio")
    mic.connect()
    copied = 0
    try:
        end = time.monotonic() + 30.0  # a bound, not a pace: a loaded machine copies fewer per second
        while copied < 10 and time.monotonic() < end:
            st = sync.update(time.monotonic())
            if st.fresh[audio]:
                window = buffers.buffers["audio"][0]
                steps = np.diff(window) % RAMP
                assert (steps == 1).all(), f"a torn window: the ramp breaks at {np.flatnonzero(steps != 1)[:5]}"
                copied += 1
    finally:
        mic.disconnect()
    assert copied >= 10, f"{copied} windows copied while {mic.n} samples were captured"
    assert mic.n > 10 * 16000, "capture ran well ahead of real time"
    assert mic.counters["torn_copies"] > 0, "copies were torn by the burst, and each was caught"


class _BurstOnRead(_Burst):
    """Capture that runs, by the test's script, between the sync's poll and its copy: as if a
    backlog were drained at that moment. The window just handed out is overwritten by then."""

    def __init__(self, bursts: int):
        super().__init__()
        self.bursts = bursts

    def poll(self, max_age_s, now=None):
        got = super().poll(max_age_s, now)
        if self.bursts > 0:
            self.bursts -= 1
            for _ in range(self._ring.size // 160 + 1):
                self._publish(*self._capture(0.0))
        return got


@pytest.mark.parametrize("bursts, fresh", [(1, True), (10, False)])
def test_a_torn_copy_is_retried_on_the_newest_window_or_left_absent(bursts, fresh):
    mic = _BurstOnRead(bursts=0)
    mic._opened()
    for _ in range(120):
        mic._publish(*mic._capture(0.0))
    buffers = _Buffers()
    sync = Synchronizer(SPECS, {"audio": mic}, {m: 1e6 for m in MODALITIES}, buffers)
    audio = MODALITIES.index("audio")
    mic.bursts = bursts
    st = sync.update(time.monotonic())
    assert mic.counters["torn_copies"] >= 1
    assert st.fresh[audio] is fresh and st.present[audio] is fresh
    if fresh:
        assert (np.diff(buffers.buffers["audio"][0]) % RAMP == 1).all(), "the retried copy is whole"
    else:
        assert st.sample_t[audio] is None, "capture outran every try: absent this tick"
        mic.bursts = 0
        st = sync.update(time.monotonic())
        assert st.fresh[audio] and (np.diff(buffers.buffers["audio"][0]) % RAMP == 1).all(), "whole at the next"
