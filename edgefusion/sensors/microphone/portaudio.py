"""A real microphone through PortAudio (pyaudio), delivering mono blocks at the model's rate to MicrophoneSensor.

Capture runs in PortAudio's callback mode: its thread copies each block into a bounded queue and
returns, so a lost device shows up as a stream that stops (or stops delivering) rather than a
``read()`` that never returns (a dead jackd makes a blocking read hang forever). The sensor's
capture thread pops blocks with a deadline, resamples them to the model's rate and stamps them on
``time.monotonic()``'s clock. Every open makes a new ``PyAudio()``: PortAudio scans devices only
when it is initialised, so a device that came back is seen only by a fresh instance.

pyaudio (and soxr, when the device's rate is not the model's) are imported on the first open, so this
module imports without them.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from edgefusion import log
from edgefusion.errors import ConfigError, EdgefusionError
from edgefusion.sensors.base import SensorGone
from edgefusion.sensors.microphone.sensor import MicrophoneSensor

INSTALL_HINT = "pip install 'edgefusion[sensors]' (pyaudio builds against PortAudio: apt-get install portaudio19-dev)"
QUEUE_S = 2.0  # audio the callback may queue for the capture thread before it drops blocks


@dataclass
class MicrophoneConfig:
    device: str = ""  # "": the default input; else a name substring or an index (as PyAudio lists them)
    rate: int = 0  # 0: the device's default rate; resampled to the model's when it differs (as the device can)
    channels: int = 1  # channels to open (some devices capture stereo only): mixed down to mono
    block_ms: float = 10.0  # audio per callback
    stall_ms: float = 5000.0  # no audio for this long: the device counts as lost (PulseAudio starts in ~2 s)

    def check(self, at: str) -> None:
        def require(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"{at}: {key} must be {what}")

        require(self.rate == 0 or self.rate >= 1000, "rate", "0 (the device's default) or >= 1000")
        require(1 <= self.channels <= 32, "channels", "between 1 and 32")
        require(1 <= self.block_ms <= 100, "block_ms", "between 1 and 100")
        require(self.stall_ms >= 500, "stall_ms", ">= 500")


# -- the C libraries' chatter ------------------------------------------------------------------

# Lines that ALSA, JACK and PortAudio print straight to fd 2 while PortAudio probes devices (about
# 80 on a machine without a sound card, all harmless) or fails to open one (then they say why).
_LIBRARY_LINE = re.compile(r"ALSA lib |Expression '.*' failed in |jack server |Jack\w*::|Cannot connect to server ")
_NOT_A_CAUSE = re.compile(r"ALSA lib conf|jack server |Jack\w*::|Cannot connect to server ")
_FD2_LOCK = threading.Lock()


class LibraryOutput:
    """What the C libraries wrote to fd 2 during a ``library_output()`` block."""

    def __init__(self):
        self.lines: list[str] = []

    def why(self) -> str:
        """The last library lines, for an error's reason: after a failed open they name the cause
        (JACK's complaints that no jackd runs, and ALSA's about its configuration, never do)."""
        last = [line for line in self.lines if not _NOT_A_CAUSE.match(line)][-2:]
        return f" (PortAudio: {' | '.join(last)})" if last else ""


@contextlib.contextmanager
def library_output():
    """Route fd 2 through a pipe for the block: the libraries' lines are kept (for the reason when
    an open fails, ``LibraryOutput.why``) and stay out of the user's terminal; anything else is
    passed on to stderr as it comes.

    fd 2 is redirected rather than ALSA's error handler replaced because JACK and PortAudio print
    too, each by its own path. The redirect is process-wide, hence the live pass-through: another
    thread's message is neither lost nor held back, even while a call into a hung device keeps the
    redirect in place (``PyAudio()`` blocks for as long as a PulseAudio server is stopped).
    """
    out = LibraryOutput()
    with _FD2_LOCK:
        sys.stderr.flush()
        read_fd, write_fd = os.pipe()
        saved = os.dup(2)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        sorter = threading.Thread(target=_sort_lines, args=(read_fd, os.dup(saved), out), daemon=True)
        sorter.start()
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)  # the pipe's last writer goes: the sorter reads to its end and stops
            os.close(saved)
            sorter.join(timeout=1.0)  # longer only if a child process inherited the pipe


def _sort_lines(read_fd: int, stderr_fd: int, out: LibraryOutput) -> None:
    with os.fdopen(read_fd, "rb") as pipe:
        for raw in pipe:
            line = raw.decode(errors="replace").rstrip("\n")
            if _LIBRARY_LINE.match(line):
                out.lines.append(line)
            elif line.strip():
                os.write(stderr_fd, raw)
    os.close(stderr_fd)


def import_pyaudio():
    try:
        import pyaudio
    except ImportError as err:  # also a built pyaudio whose libportaudio.so.2 is gone
        raise EdgefusionError(f"the microphone driver needs pyaudio ({err}): {INSTALL_HINT}") from err
    return pyaudio


# -- devices ---------------------------------------------------------------------------------------


def input_devices(pa) -> list[tuple[int, dict]]:
    """(index, info) of every device with input channels, as this PyAudio instance sees them."""
    infos = (pa.get_device_info_by_index(i) for i in range(pa.get_device_count()))
    return [(int(info["index"]), info) for info in infos if info["maxInputChannels"] > 0]


def _describe(devices: list[tuple[int, dict]]) -> str:
    listed = ", ".join(
        f"{i}: {info['name']!r} ({info['maxInputChannels']} ch, {info['defaultSampleRate']:.0f} Hz)"
        for i, info in devices
    )
    return f"available input devices: {listed or 'none'}"


def select_input_device(pa, device: str) -> tuple[int, dict]:
    """The input device ``device`` names: "" the default, digits an index, else a case-insensitive
    name (an exact name first, then a substring that must match only one device: picking the first
    of several would open whichever enumerates first, which can change from boot to boot)."""
    devices = input_devices(pa)
    spec = device.strip()
    if not spec:
        try:
            info = pa.get_default_input_device_info()
        except OSError:
            raise EdgefusionError(f"no default input device; {_describe(devices)}") from None
        return int(info["index"]), info
    if spec.isdigit():
        found = [(i, info) for i, info in devices if i == int(spec)]
    else:
        found = [(i, info) for i, info in devices if info["name"].lower() == spec.lower()]
        found = found or [(i, info) for i, info in devices if spec.lower() in info["name"].lower()]
    if len(found) == 1:
        return found[0]
    what = "several input devices match" if found else "no input device matches"
    raise EdgefusionError(f"{what} {device!r}; {_describe(devices)}")


# -- time stamps -----------------------------------------------------------------------------------


def resolve_device(pyaudio, pa, cfg: MicrophoneConfig) -> tuple[int, dict, int]:
    """(index, info, rate) of the configured input, or an EdgefusionError saying what is wrong:
    no such device (with the list), too few channels, a rate it cannot give."""
    index, info = select_input_device(pa, cfg.device)
    rate = cfg.rate or int(info["defaultSampleRate"])
    name = f"input device {index} {info['name']!r}"
    if cfg.channels > info["maxInputChannels"]:
        raise EdgefusionError(f"{name} has {info['maxInputChannels']} input channels, not {cfg.channels}")
    with library_output() as out:
        try:
            pa.is_format_supported(rate, input_device=index, input_channels=cfg.channels, input_format=pyaudio.paInt16)
        except ValueError as err:
            raise EdgefusionError(
                f"{name} cannot capture {cfg.channels} ch of 16-bit audio at {rate} Hz ({err.args[0]}; its default"
                f" rate is {info['defaultSampleRate']:.0f} Hz: set rate = 0 to use it){out.why()}"
            ) from None
    return index, info, rate


def check_device(cfg: MicrophoneConfig) -> None:
    """Before a run: the device the config names (or its rate) must be there and able."""
    pyaudio = import_pyaudio()
    with library_output():
        pa = pyaudio.PyAudio()
    try:
        resolve_device(pyaudio, pa, cfg)
    finally:
        pa.terminate()


class BlockClock:
    """When a callback block's first sample was captured, on time.monotonic()'s clock.

    PortAudio gives the ADC time of the block's first sample on the stream's clock; the offset
    from that clock to time.monotonic() is measured around the open. On Linux the stream's clock
    is the wall clock (CLOCK_REALTIME), which an NTP step moves: the callback's "current time"
    then disagrees with its arrival by more than any scheduling delay, and the offset is measured
    again from the two.

    The ADC time is used only where it is believable, else the block's arrival less its duration
    (late by the callback's latency, a few ms, never early). Not believable: 0 (some host APIs and
    PulseAudio setups leave it unset); a block that waited longer than the stream's buffer could
    hold it; or an ADC time that does not advance by the previous block's duration. Measured
    through ALSA's pulse plugin: for the first ~1.3 s of a stream it reports 0.6 s of delay that
    then shrinks twice as fast as time passes, and afterwards single blocks 10-30 ms early.
    """

    STEP_S = 0.5  # a disagreement between the stream's clock and arrival larger than jitter can be
    TOLERANCE_S = 0.003

    def __init__(self, rate: float, offset_s: float, max_wait_s: float):
        self.rate, self.offset_s, self.max_wait_s = rate, offset_s, max_wait_s
        self._next_adc: float | None = None

    def first_sample(self, frames: int, adc: float, now: float, arrival: float) -> float:
        if now > 0 and abs(now + self.offset_s - arrival) > self.STEP_S:
            self.offset_s = arrival - now
        duration = frames / self.rate
        expected, self._next_adc = self._next_adc, adc + duration
        by_arrival = arrival - duration
        t = adc + self.offset_s
        steady = expected is not None and abs(adc - expected) <= self.TOLERANCE_S
        if adc > 0 and steady and -self.TOLERANCE_S <= by_arrival - t <= self.max_wait_s:
            return t
        return by_arrival


class _ToModelRate:
    """Streaming resampling to the model's rate with soxr (libsoxr: band-limited, keeps its filter
    state across blocks). Its output lags its input by ``delay()`` output samples, so the time of
    the newest output sample is the input's less that delay."""

    def __init__(self, rate: int, model_rate: int):
        try:
            import soxr
        except ImportError as err:
            raise EdgefusionError(f"resampling {rate} Hz to {model_rate} Hz needs soxr: {INSTALL_HINT}") from err
        self.model_rate = model_rate
        self._stream = soxr.ResampleStream(rate, model_rate, 1, dtype="float32", quality="HQ")

    def __call__(self, block: np.ndarray, t_end: float) -> tuple[np.ndarray, float]:
        out = self._stream.resample_chunk(block)
        return out, t_end - self._stream.delay() / self.model_rate


# -- the sensor ------------------------------------------------------------------------------------


class PyAudioMicrophone(MicrophoneSensor):
    """A PortAudio input device as the audio sensor: windows of ``window_s`` at ``sample_rate`` (the
    bundle's), a new one every ``hop_s``, mono, float32 in int16 units, each stamped with its last
    sample's capture time.

    ``counters["overflows"]`` counts blocks PortAudio flagged as overflowed (samples lost before
    they reached us), ``counters["dropped_blocks"]`` those the capture thread was too slow to take
    and ``counters["device_errors"]`` stream errors taken as a lost device: gaps in the audio,
    counted and logged (the 1st, 2nd, 4th... time) rather than raised, as a loop that must keep
    running needs. PortAudio's thread only counts; the capture thread says it.
    """

    def __init__(
        self,
        config: MicrophoneConfig,
        sample_rate: int,
        window_s: float,
        hop_s: float = 0.1,
        name: str = "mic",
        **kw,
    ):
        self.config = config
        self.config.check("microphone")
        block = max(1, round(self.config.block_ms * sample_rate / 1000))
        super().__init__(name, sample_rate, window_s, hop_s, block=block, **kw)
        self._said: dict[str, int] = {}  # counts of the losses as last logged
        self.device_name = ""  # of the device opened last
        self.device_rate = 0
        self._pa = self._pa_stream = None
        self._overflow_flag = 0
        self._queue: queue.Queue | None = None
        self._clock: BlockClock | None = None
        self._resample: _ToModelRate | None = None
        self._pending = np.zeros(0, np.float32)  # audio at the model's rate captured but not yet handed out
        self._pending_end = 0.0  # when its last sample was captured
        self._last_audio = 0.0

    def _open(self) -> None:
        pyaudio = import_pyaudio()
        self._overflow_flag = pyaudio.paInputOverflow
        with library_output():
            self._pa = pyaudio.PyAudio()
        try:
            self._open_stream(pyaudio)
        except BaseException:
            self._close()
            raise

    def _open_stream(self, pyaudio) -> None:
        cfg = self.config
        index, info, rate = resolve_device(pyaudio, self._pa, cfg)
        name = f"input device {index} {info['name']!r}"
        self._resample = _ToModelRate(rate, self.sample_rate) if rate != self.sample_rate else None
        self._pending, self._pending_end = np.zeros(0, np.float32), 0.0
        frames = max(1, round(cfg.block_ms * rate / 1000))
        self._queue = queue.Queue(maxsize=max(4, int(QUEUE_S * 1000 / cfg.block_ms)))
        with library_output() as out:
            try:
                stream = self._pa.open(
                    format=pyaudio.paInt16,
                    channels=cfg.channels,
                    rate=rate,
                    input=True,
                    input_device_index=index,
                    frames_per_buffer=frames,
                    start=False,
                    stream_callback=self._on_audio,
                )
            except OSError as err:
                raise EdgefusionError(f"cannot open {name} at {rate} Hz: {err}{out.why()}") from None
        self._pa_stream = stream
        before = time.monotonic()
        stream_now = stream.get_time()
        offset = (before + time.monotonic()) / 2 - stream_now
        self._clock = BlockClock(rate, offset, max_wait_s=stream.get_input_latency() + 2 * frames / rate + 0.05)
        self.device_name, self.device_rate = info["name"], rate
        self._last_audio = time.monotonic()
        stream.start_stream()

    def _on_audio(self, data: bytes, frames: int, time_info: dict, status: int):
        """PortAudio's thread: stamp, queue, return. Never blocks and never raises (pyaudio would
        abort the stream on an exception)."""
        arrival = time.monotonic()
        if status & self._overflow_flag:
            self.counters["overflows"] += 1
        t_first = self._clock.first_sample(
            frames, time_info["input_buffer_adc_time"], time_info["current_time"], arrival
        )
        try:
            self._queue.put_nowait((data, t_first + frames / self._clock.rate))
        except queue.Full:
            self.counters["dropped_blocks"] += 1
        return None, 0  # paContinue

    def _capture(self, timeout_s: float) -> tuple[np.ndarray, float] | None:
        """One block of exactly ``self.block`` samples at the model's rate. The resampler's output comes in
        uneven bursts (hundreds of samples, then none); evened out, a window is published every hop
        of audio rather than every hop plus part of a burst."""
        self._say_losses()
        deadline = time.monotonic() + timeout_s
        while len(self._pending) < self.block:
            try:
                data, t_end = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._check_alive()
                return None
            self._last_audio = time.monotonic()
            block = np.frombuffer(data, "<i2").astype(np.float32)
            if self.config.channels > 1:
                block = block.reshape(-1, self.config.channels).mean(axis=1, dtype=np.float32)
            if self._resample is not None:
                block, t_end = self._resample(block, t_end)
            if self.config.channels > 1 or self._resample is not None:
                block = np.clip(np.rint(block), -32768, 32767)  # whole 16-bit steps (frames.py)
            self._pending, self._pending_end = np.concatenate([self._pending, block]), t_end
        out, self._pending = self._pending[: self.block], self._pending[self.block :]
        return out, self._pending_end - len(self._pending) / self.sample_rate

    def _say_losses(self) -> None:
        for kind, what in (("overflows", "input overflow"), ("dropped_blocks", "blocks dropped, capture too slow")):
            count, before = self.counters[kind], self._said.get(kind, 0)
            if log.doubled(before, count):
                log.warning(f"microphone {self.name} ({self.device_name!r}): {what}, audio lost ({count} so far)")
            self._said[kind] = count

    def _check_alive(self) -> None:
        """A device that vanished either stops the stream (a host error ends PortAudio's callback
        thread) or just stops calling back: both are SensorGone, so the base reopens."""
        try:
            active = self._pa_stream.is_active()
        except OSError as err:  # -9988 "Stream closed" and kin
            self.counters["device_errors"] += 1
            raise SensorGone(f"audio stream error: {err}") from None
        if not active:
            raise SensorGone(f"audio stream of {self.device_name!r} stopped (device lost or host error)")
        silent = time.monotonic() - self._last_audio
        if silent > self.config.stall_ms / 1000:
            raise SensorGone(f"no audio from {self.device_name!r} for {silent:.1f} s")

    def _close(self) -> None:
        stream, pa, self._pa_stream, self._pa = self._pa_stream, self._pa, None, None
        try:
            if stream is not None:
                stream.close()  # aborts a running stream first; blocks while the device hangs
        finally:
            if pa is not None:
                pa.terminate()
