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

import queue
import time

import numpy as np

from edgefusion import log
from edgefusion.errors import EdgefusionError
from edgefusion.sensors.base import SensorGone
from edgefusion.sensors.microphone.clock import BlockClock
from edgefusion.sensors.microphone.config import MicrophoneConfig
from edgefusion.sensors.microphone.devices import INSTALL_HINT, import_pyaudio, library_output, resolve_device
from edgefusion.sensors.microphone.sensor import MicrophoneSensor

QUEUE_S = 2.0  # audio the callback may queue for the capture thread before it drops blocks


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
