"""A frozen microphone (one block, or a short cycle of blocks, again and again) is caught on the
capture thread; real audio, a digital tone and digital silence are not taken for frozen.

The microphone here is the real MicrophoneSensor (guard, ring, windows) fed block by block on the
test's thread with capture times in the past, so every case is exact and quick; the simulated
rig's frozen microphone through the whole runtime is in test_fault_matrix.py.
"""

import importlib.util
import itertools
import shutil
import time

import numpy as np
import pytest
from waiting import wait_for

from edgefusion.sensors.base import FROZEN_DEPTH, SensorState
from edgefusion.sensors.microphone import SILENT_AFTER_S, MicrophoneSensor
from edgefusion.sim.simulated import Scenario, scenario_track
from edgefusion.task import SAMPLE_RATE

MAX_AGE_S = 0.25  # [sensors.audio] max_age_ms's default


class _Fed(MicrophoneSensor):
    """A microphone whose blocks the test hands over: ``feed`` runs them through the capture
    thread's path (guard, ring, windows) with capture times 10 ms apart, ending before now."""

    def __init__(self, block: int = 160):
        super().__init__("fed", SAMPLE_RATE, window_s=1.0, block=block)
        self.t = time.monotonic() - 600.0
        self._opened()

    def feed(self, blocks) -> list[int]:
        """Publish each block; the seq of the newest window after each one."""
        seqs = []
        for block in blocks:
            self.t += len(block) / SAMPLE_RATE
            self._publish(np.asarray(block, np.float32), self.t)
            latest = self._latest
            seqs.append(0 if latest is None else latest.seq)
        return seqs

    def _open(self):
        pass

    def _capture(self, timeout_s):
        return None

    def _close(self):
        pass


def _speech(seed: int, seconds: float, block: int) -> list[np.ndarray]:
    """The simulated rig's audio (a word about once a second over room noise, 16-bit steps)."""
    track = np.concatenate([scenario_track(Scenario(seed), k) for k in range(int(np.ceil(seconds / 4)))])
    track = np.rint(track[: int(seconds * SAMPLE_RATE)])
    return [track[i : i + block] for i in range(0, len(track) - block + 1, block)]


@pytest.mark.parametrize("block", [160, 256, 441])
@pytest.mark.parametrize("cycle", range(1, FROZEN_DEPTH + 1))
def test_a_block_or_a_short_cycle_repeated_is_frozen_at_once(block, cycle):
    mic = _Fed(block)
    good = _speech(seed=cycle, seconds=2.0, block=block)
    before = mic.feed(good)[-1]
    assert before > 0 and mic.dropped["frozen"] == 0, "live audio published, nothing dropped"
    stuck = good[-cycle:] * 10  # a stuck ring replays the last `cycle` buffers it delivered
    seqs = mic.feed(stuck)
    assert set(seqs) == {before}, "no window is published once the audio repeats"
    assert mic.dropped["frozen"] == len(stuck), "every repeated block dropped, the first one too"
    state, reason = mic.state(10.0, now=mic.t)  # as the device says it, whatever the age
    assert state is SensorState.OK and "frozen" in reason
    # The last window, from before the freeze, ages out like a stopped microphone's.
    assert mic.read_latest(MAX_AGE_S, now=mic.t + MAX_AGE_S) is None
    # Live audio again: windows again, once a whole window of it has come.
    after = mic.feed(_speech(seed=50 + cycle, seconds=1.2, block=block))
    assert after[-1] > before and mic.state(MAX_AGE_S, now=mic.t)[1] == ""


@pytest.mark.parametrize("seed", range(4))
def test_real_audio_is_never_taken_for_frozen(seed):
    mic = _Fed()
    seqs = mic.feed(_speech(seed, seconds=12.0, block=160))
    assert sum(mic.dropped.values()) == 0
    assert seqs[-1] == 111, "a window every 0.1 s hop once the first second is in"


def test_a_digital_tone_is_not_frozen_unless_it_repeats_within_the_depth():
    """A 440 Hz tone generated at 16 kHz repeats exactly every 400 samples (5 blocks of 160):
    longer than the FROZEN_DEPTH blocks looked back on, so it plays (the pyaudio tests play it)."""
    period_blocks = 5
    assert period_blocks > FROZEN_DEPTH
    n = np.arange(3 * SAMPLE_RATE)
    tone = np.rint(8000 * np.sin(2 * np.pi * 440 * n / SAMPLE_RATE))
    assert np.array_equal(tone[: 160 * period_blocks], tone[160 * period_blocks : 2 * 160 * period_blocks])
    mic = _Fed()
    mic.feed(tone[i : i + 160] for i in range(0, len(tone), 160))
    assert mic.dropped["frozen"] == 0 and mic.read_latest(MAX_AGE_S, now=mic.t) is not None


def test_digital_silence_is_not_frozen_but_absent_to_the_model():
    """A muted input or an idle PulseAudio monitor gives exact zeros: not a fault of the device
    (it stays OK and its windows go on, a recorder keeps them), but once its newest 0.3 s are
    silence a window is marked silent, which the sync treats as absent."""
    mic = _Fed()
    mic.feed(_speech(0, seconds=1.5, block=160))
    assert not mic.read_latest(MAX_AGE_S, now=mic.t).silent
    silent_blocks = int(SILENT_AFTER_S * SAMPLE_RATE / 160)
    seqs = mic.feed([np.zeros(160)] * (silent_blocks - 1))
    assert not mic.read_latest(MAX_AGE_S, now=mic.t).silent, "a short gap of zeros is still sound"
    seqs = mic.feed([np.zeros(160)] * 200)
    window = mic.read_latest(MAX_AGE_S, now=mic.t)
    assert window.silent and not window.data.any() and len(set(seqs)) > 10, "windows go on, marked silent"
    state, reason = mic.state(MAX_AGE_S, now=mic.t)
    assert state is SensorState.OK and "silence" in reason
    assert mic.dropped["frozen"] == 0 and mic.counters["silent_windows"] > 0
    mic.feed(_speech(1, seconds=0.2, block=160))
    window = mic.read_latest(MAX_AGE_S, now=mic.t)
    assert not window.silent and mic.state(MAX_AGE_S, now=mic.t)[1] == "", "sound again: present again"


def test_a_frozen_camera_cycle_is_caught_too():
    """The guard is one for every modality: a camera cycling a few stuck frames is frozen after
    FROZEN_AFTER of them in a row, as one repeated frame is."""
    from edgefusion.sensors.base import FROZEN_AFTER, SampleGuard

    guard = SampleGuard((0.0, 255.0), "rgb")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (3, 48, 64)).astype(np.float32) for _ in range(10)]
    t = time.monotonic() - 100
    verdicts = []
    for i, frame in enumerate(frames + frames[-3:] * 3):
        verdicts.append(guard.check(frame, t + i / 30))
    assert verdicts[:10] == [None] * 10
    repeats = verdicts[10:]
    passed = FROZEN_AFTER - 2  # the original frame and FROZEN_AFTER - 2 repeats pass
    assert repeats[:passed] == [None] * passed and set(repeats[passed:]) == {"frozen"}


# -- through the real libraries: PortAudio capturing a private PulseAudio's null sink --------------

needs_pulse = pytest.mark.skipif(
    importlib.util.find_spec("pyaudio") is None or shutil.which("pulseaudio") is None,
    reason="needs pyaudio and PulseAudio (the sensors extra and pulseaudio pulseaudio-utils libasound2-plugins)",
)


@needs_pulse
@pytest.mark.parametrize("rate, cycle", [(SAMPLE_RATE, 3), (48000, 1)])  # 48 kHz: resampled by soxr
def test_a_stuck_ring_played_into_a_real_capture_path_is_caught(rate, cycle):
    """The speaker plays the scenario's speech, then its last ``cycle`` 10 ms blocks for ever (a
    stuck DMA ring on the far side of a real PortAudio stream): the microphone stays OK, drops
    the repeated blocks and the audio is absent soon after."""
    from edgefusion.sensors.microphone import MicrophoneConfig, PyAudioMicrophone
    from edgefusion.sim.pulse import PulseServer, Speaker

    frozen_at = []

    def feed():
        blocks = _speech(seed=3, seconds=3.0, block=160)
        yield from blocks
        frozen_at.append(time.monotonic())
        yield from itertools.cycle(blocks[-cycle:])

    with PulseServer(sink="edgefusion_frozen") as server, Speaker(server, feed=feed()):
        mic = PyAudioMicrophone(MicrophoneConfig(device="pulse", rate=rate), SAMPLE_RATE, 1.0, read_timeout_s=0.2)
        mic.connect()
        try:
            assert wait_for(lambda: mic.read_latest(MAX_AGE_S) is not None, 10.0), "live speech is present"
            assert wait_for(lambda: frozen_at and mic.read_latest(MAX_AGE_S) is None, 10.0), "frozen: absent"
            absent_after = time.monotonic() - frozen_at[0]
            time.sleep(1.0)
            assert mic.read_latest(MAX_AGE_S) is None, "and absent it stays"
            assert mic.dropped["frozen"] > 50 and mic.state(10.0)[0] is SensorState.OK
        finally:
            mic.disconnect()
    assert absent_after < 2.0, absent_after  # generous: the sink's latency and a busy machine
