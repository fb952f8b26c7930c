"""The PortAudio microphone driver on the real libraries: pyaudio capturing from a user-space
PulseAudio null sink that a Speaker plays into (no sound card needed, no mocks).

The rig tests skip where pyaudio or the PulseAudio binaries are missing; the pure parts (time
stamps, the libraries' chatter, the install hint) run everywhere.
"""

import importlib.util
import os
import shutil
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest

from edgefusion.errors import ConfigError, EdgefusionError
from edgefusion.sensors.base import Backoff, SensorState
from edgefusion.sensors.microphone import (
    BlockClock,
    MicrophoneConfig,
    PyAudioMicrophone,
    import_pyaudio,
    library_output,
    select_input_device,
)
from edgefusion.sim.pulse import PulseServer, Speaker
from edgefusion.task import SAMPLE_RATE
from edgefusion.task.speech import synthesize_word

rig = pytest.mark.skipif(
    importlib.util.find_spec("pyaudio") is None or shutil.which("pulseaudio") is None,
    reason="needs pyaudio and PulseAudio (apt-get install portaudio19-dev pulseaudio pulseaudio-utils "
    "libasound2-plugins; pip install 'edgefusion[sensors]')",
)


# -- pure parts ------------------------------------------------------------------------------------


def test_block_clock_uses_adc_time_only_where_believable():
    rate, n = 16000, 160
    clock = BlockClock(rate, offset_s=1000.0, max_wait_s=0.08)
    block = n / rate
    # Steady: ADC times one block apart, the stream's "now" consistent with arrival.
    for k in range(3):
        adc = 5.0 + k * block
        arrival = adc + 1000.0 + block + 0.004
        t = clock.first_sample(n, adc, now=adc + block + 0.003, arrival=arrival)
        if k:  # the first block has no predecessor to check its ADC time against
            assert t == pytest.approx(adc + 1000.0)
    # Unset ADC time (0): arrival less the block's duration.
    arrival += block
    assert clock.first_sample(n, 0.0, now=0.0, arrival=arrival) == pytest.approx(arrival - block)
    # PulseAudio's start-up report: 0.6 s of delay that could not have fitted in the buffer.
    for k in range(3):
        adc, arrival = 6.0 + k * block, 1006.6 + k * block
        assert clock.first_sample(n, adc, now=adc + 0.6, arrival=arrival) == pytest.approx(arrival - block)
    # Then an ADC time advancing by two blocks per block: not a sample clock either.
    for k in range(3):
        adc, arrival = 6.6 + 2 * k * block - 0.02, 1006.66 + k * block
        assert clock.first_sample(n, adc, now=arrival - 1000.0, arrival=arrival) == pytest.approx(arrival - block)
    # The stream's clock (wall time on Linux) steps by 100 s: the offset is taken again.
    for k in range(3):
        adc = 106.0 + k * block
        arrival = adc - 100.0 + 1000.0 + block + 0.004
        t = clock.first_sample(n, adc, now=adc + block + 0.003, arrival=arrival)
    assert t == pytest.approx(arrival - block - 0.003, abs=1e-6)  # the ADC time again, by the new offset


def test_library_chatter_is_kept_out_of_stderr_and_other_output_is_not(capfd):
    with library_output() as out:
        os.write(2, b"ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) Unknown PCM cards.pcm.rear\n")
        os.write(2, b"jack server is not running or cannot be started\n")
        print("a message from another thread", file=sys.stderr)
        os.write(2, b"Expression 'ret' failed in 'src/hostapi/alsa/pa_linux_alsa.c', line: 1736\n")
    err = capfd.readouterr().err
    assert err == "a message from another thread\n"
    assert len(out.lines) == 3
    assert out.why() == f" (PortAudio: {out.lines[0]} | {out.lines[2]})"  # JACK's line says nothing of why


def test_missing_pyaudio_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyaudio", None)  # what an absent package looks like to import
    with pytest.raises(EdgefusionError, match=r"pip install 'edgefusion\[sensors\]'.*apt-get install portaudio19-dev"):
        import_pyaudio()


def test_config_is_checked():
    with pytest.raises(ConfigError, match="microphone: block_ms"):
        PyAudioMicrophone(MicrophoneConfig(block_ms=0), SAMPLE_RATE, 1.0)


# -- on the virtual rig ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pulse():
    """One PulseAudio for the module (starting one takes ~2 s). The tests capture from ALSA's
    "pulse" device, which reaches this server (through PULSE_SERVER) also on a machine with a sound
    card and a desktop sound server of its own."""
    with PulseServer(sink="edgefusion_test") as server:
        yield server


def _wait_for(predicate, timeout_s: float, what: str):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        time.sleep(0.01)
    pytest.fail(f"not within {timeout_s} s: {what}")


@contextmanager
def _microphone(
    config: MicrophoneConfig | None = None, window_s: float = 1.0, sample_rate: int = SAMPLE_RATE, hop_s: float = 0.1
):
    config = config or MicrophoneConfig(device="pulse")
    mic = PyAudioMicrophone(config, sample_rate, window_s, hop_s, backoff=Backoff(0.1, 0.5), read_timeout_s=0.2)
    mic.connect()
    try:
        yield mic
    finally:
        mic.disconnect()


def _sample_after(mic, t: float, timeout_s: float, what: str):
    """The first window whose last sample is later than ``t``."""

    def newer():
        sample = mic.read_latest(max_age_s=1.0)
        return sample if sample is not None and sample.t > t else None

    return _wait_for(newer, timeout_s, what)


def _tone(freq: float, amplitude: float = 8000.0, block: int = 160):
    """An endless tone in blocks, as a Speaker feed."""
    start = 0
    while True:
        n = np.arange(start, start + block)
        yield (amplitude * np.sin(2 * np.pi * freq * n / SAMPLE_RATE)).astype(np.float32)
        start += block


def _dominant_hz(x: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


@rig
def test_speech_played_into_the_sink_is_captured(pulse):
    word = (synthesize_word("come", np.random.default_rng(5)) * 8000).astype(np.float32)
    with Speaker(pulse) as speaker, _microphone(window_s=2.0) as mic:
        _sample_after(mic, 0.0, 10.0, "first window")
        assert mic.device_rate != SAMPLE_RATE  # rate 0: the device's default (44.1 kHz), so resampled
        assert mic.state(1.0)[0] is SensorState.OK
        due = speaker.play(word)
        got = _sample_after(mic, due + len(word) / SAMPLE_RATE + 0.3, 5.0, "the word captured")
        window = got.data.copy()
    corr = np.correlate(window, word, mode="valid")
    lag = int(np.argmax(corr))
    seg = window[lag : lag + len(word)]
    ncc = float(seg @ word / np.sqrt((seg @ seg) * (word @ word)))
    assert ncc >= 0.99, ncc
    # The word's first sample, by the window's time stamp, was heard when the speaker said it was due
    # (plus the sink's latency): the time stamps are on time.monotonic()'s clock, and not early.
    heard = got.t - (len(window) - lag) / SAMPLE_RATE
    assert -0.01 <= heard - due <= 0.15, heard - due


@rig
@pytest.mark.parametrize(
    "rate, model_rate, window_s, hop_s",
    [(SAMPLE_RATE, SAMPLE_RATE, 1.0, 0.1), (48000, SAMPLE_RATE, 1.0, 0.1), (48000, 8000, 0.5, 0.25)],
)
def test_delivered_at_the_models_rate_with_the_right_pitch_at_any_device_rate(pulse, rate, model_rate, window_s, hop_s):
    config = MicrophoneConfig(device="pulse", rate=rate)
    with Speaker(pulse, feed=_tone(440.0)), _microphone(config, window_s, model_rate, hop_s) as mic:
        first = _sample_after(mic, time.monotonic() + 0.5, 10.0, "a window of the tone")
        last = _sample_after(mic, first.t + 1.5, 5.0, "later windows")
        assert mic.device_rate == rate
        window = last.data.copy()
    assert len(window) == round(model_rate * window_s)
    assert abs(_dominant_hz(window, model_rate) - 440.0) <= 2.0 / window_s
    # One window per hop of audio at the model's rate, stamped a hop apart.
    assert (last.t - first.t) / (last.seq - first.seq) == pytest.approx(hop_s, abs=0.005)
    assert mic.counters["overflows"] == 0 and mic.counters["dropped_blocks"] == 0


@rig
def test_a_device_that_is_not_there_is_an_error_listing_the_devices(pulse):
    pyaudio = import_pyaudio()
    with library_output():
        pa = pyaudio.PyAudio()
    try:
        with pytest.raises(EdgefusionError, match=r"no input device matches 'no-such-mic'; available .*'pulse'"):
            select_input_device(pa, "no-such-mic")
        with pytest.raises(EdgefusionError, match=r"several input devices match 'u'"):
            select_input_device(pa, "u")  # pUlse, defaUlt
        index, info = select_input_device(pa, "PULSE")
        assert info["name"] == "pulse" and select_input_device(pa, str(index))[0] == index
    finally:
        pa.terminate()
    with _microphone(MicrophoneConfig(device="no-such-mic")) as mic:
        state, reason = _wait_for(
            lambda: mic.state(1.0)[1].startswith("open failed") and mic.state(1.0), 5.0, "an open"
        )
        assert state is SensorState.RECONNECTING and "available input devices: " in reason and "'pulse'" in reason
    with _microphone(MicrophoneConfig(device="pulse", rate=1_000_000)) as mic:
        state, reason = _wait_for(
            lambda: mic.state(1.0)[1].startswith("open failed") and mic.state(1.0), 5.0, "an open"
        )
        assert "cannot capture 1 ch of 16-bit audio at 1000000 Hz" in reason and "set rate = 0" in reason


@rig
def test_opening_keeps_the_libraries_chatter_out_of_stderr(pulse, capfd):
    with _microphone(MicrophoneConfig()) as mic:  # device "": the default input (here the server's)
        _sample_after(mic, 0.0, 10.0, "first window")
    err = capfd.readouterr().err
    assert "ALSA lib" not in err and "jack" not in err.lower(), err[:500]


@rig
def test_a_device_that_hangs_is_failed_and_reopened_when_it_runs_again(pulse):
    with _microphone(MicrophoneConfig(device="pulse", stall_ms=1000)) as mic:
        _sample_after(mic, 0.0, 10.0, "first window")
        pulse.freeze()
        try:
            _, reason = _wait_for(
                lambda: (s := mic.state(1.0))[0] is SensorState.FAILED and s, 3.0, "the stall being noticed"
            )
            assert reason.startswith("SensorGone: no audio from 'pulse' for")
        finally:
            pulse.thaw()
        thawed = time.monotonic()
        _sample_after(mic, thawed + 0.5, 10.0, "capture resuming after the thaw")
        assert mic.state(1.0)[0] is SensorState.OK


@rig
def test_capture_fails_when_the_server_dies_and_resumes_when_it_is_back(pulse):
    """Last in the module: it kills the module's server (and brings it back)."""
    with Speaker(pulse, feed=_tone(440.0)), _microphone() as mic:
        _sample_after(mic, 0.0, 10.0, "first window")
        pulse.kill()
        _wait_for(
            lambda: mic.state(1.0)[0] in (SensorState.FAILED, SensorState.RECONNECTING),
            3.0,
            "the sensor noticing the device is gone",
        )
        pulse.restart()
        back = time.monotonic()
        # A full window captured after the restart, with the tone in it: the speaker is back too.
        got = _wait_for(
            lambda: (
                (s := mic.read_latest(1.0)) is not None
                and s.t > back + 1.0
                and np.sqrt(np.mean(s.data[-4000:] ** 2)) > 1000
                and s
            ),
            10.0,
            "capture resuming after the restart",
        )
        assert mic.state(1.0)[0] is SensorState.OK
    assert abs(_dominant_hz(got.data) - 440.0) <= 2.0


def test_audio_losses_are_counted_and_said_the_1st_2nd_4th_8th_time(capsys):
    mic = PyAudioMicrophone(MicrophoneConfig(), SAMPLE_RATE, 1.0, name="mic")
    mic.device_name = "USB Audio"
    for _ in range(9):  # PortAudio's thread counts; the capture thread says it
        mic.counters["overflows"] += 1
        mic._say_losses()
    lines = capsys.readouterr().err.splitlines()
    assert [line.rsplit("(", 1)[1] for line in lines] == ["1 so far)", "2 so far)", "4 so far)", "8 so far)"]
    assert all("microphone mic ('USB Audio'): input overflow, audio lost" in line for line in lines)
    mic.counters["dropped_blocks"] += 3  # several between two looks: one line, with the count
    mic._say_losses()
    assert capsys.readouterr().err.splitlines() == [
        "edgefusion: microphone mic ('USB Audio'): blocks dropped, capture too slow, audio lost (3 so far)"
    ]


@rig
def test_blocks_the_capture_thread_is_too_slow_for_are_dropped_counted_and_said(pulse, capsys):
    """A capture thread held up (here: not run at all) for longer than the callback's queue holds:
    PortAudio's thread goes on, drops what does not fit, and the next capture says so."""
    from edgefusion.sensors.microphone import QUEUE_S

    mic = PyAudioMicrophone(MicrophoneConfig(device="pulse"), SAMPLE_RATE, 1.0, name="mic")
    mic._open()  # the stream runs; no capture thread takes its blocks
    try:
        _wait_for(lambda: mic.counters["dropped_blocks"] > 0, QUEUE_S + 5.0, "a full queue dropping blocks")
        assert mic._capture(1.0) is not None, "the queued audio is still delivered"
    finally:
        mic._close()
    err = capsys.readouterr().err
    assert "microphone mic ('pulse'): blocks dropped, capture too slow, audio lost (" in err, err
