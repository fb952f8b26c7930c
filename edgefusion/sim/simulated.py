"""The simulated rig: the built-in task played live, each stream on its own thread and clock.

A scenario changes the person's intent every few seconds (cues drawn as in the training data);
the camera streams render it and the microphone streams the spoken word, repeated about once a
second as a person repeating a command would, in 10 ms blocks. The scenes are the built-in
task's (48x64, 16 kHz); each stream delivers them as the bundle's modality asks: frames resized
as a camera's are (``frames.Resample``), audio resampled with numpy, at the modality's rate and
window. Faults from a script (faults.py) act on the streams the way real devices misbehave. No
hardware, system packages or torch are needed: this is the README's demo and the runtime's test rig.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from edgefusion.modalities import STREAMS, ModalitySpec
from edgefusion.sensors.base import Sensor, SensorGone
from edgefusion.sensors.faults import JUMP_S, Fault, active_fault
from edgefusion.sensors.frames import DEPTH_SCALE, Resample, depth_z16, pcm16, rgb8
from edgefusion.sensors.microphone import MicrophoneSensor
from edgefusion.task import GESTURES, N_SYMBOLS, OBJECTS, SAMPLE_RATE, WORDS, encode, style_probabilities
from edgefusion.task.scenes import HEIGHT, WIDTH, render_depth, render_rgb
from edgefusion.task.speech import background_noise, synthesize_word

BLOCK_S = 0.01  # audio per capture block, as a microphone's callback hands it over


@dataclass(frozen=True)
class Scenario:
    """What the person does, as a pure function of time: every stream asks it independently."""

    seed: int = 0
    segment_s: float = 4.0

    def segment(self, t_s: float) -> int:
        return int(max(t_s, 0.0) // self.segment_s)

    def intent_and_cues(self, segment: int) -> tuple[int, dict[str, int]]:
        rng = np.random.default_rng([self.seed, segment, 99])
        intent = int(rng.integers(N_SYMBOLS))
        word, gesture, obj = encode(intent, int(rng.choice(N_SYMBOLS, p=style_probabilities())))
        return intent, {"rgb": obj, "depth": gesture, "audio": word}

    def intent_at(self, t_s: float) -> int:
        return self.intent_and_cues(self.segment(t_s))[0]


class RigClock:
    """The rig's time zero, shared by its streams so their scenario time agrees. Started just
    before the sensors connect, so fault times count from when the loop starts."""

    def __init__(self):
        self.t0: float | None = None

    def start(self) -> float:
        self.t0 = time.monotonic()
        return self.t0

    def elapsed(self, t: float | None = None) -> float:
        if self.t0 is None:
            raise RuntimeError("the rig clock was not started")
        return (time.monotonic() if t is None else t) - self.t0


class _Stream:
    """Real-time pacing and scripted faults, shared by the simulated devices.

    A camera drops frames it is late for (a new frame is always "now"); a microphone never
    drops samples, so it catches up block by block with exact timestamps.
    """

    def __init__(self, modality: str, clock: RigClock, faults: tuple[Fault, ...], period: float, catch_up: bool):
        self.modality, self.clock, self.faults, self.period, self.catch_up = modality, clock, faults, period, catch_up
        self._next = 0.0

    def open(self) -> None:
        if active_fault(self.faults, self.modality, self.clock.elapsed()) == "stop":
            raise SensorGone("no device")
        self._next = time.monotonic()

    def next_slot(self, timeout_s: float) -> tuple[float, str | None] | None:
        """Sleep until the next sample is due: (its time, the active fault kind), or None for a
        timeout or a stall. Raises SensorGone while a "stop" fault is active. A block of audio is
        stamped with its last sample's time, as a capture callback would."""
        # An audio block is ready when its last sample has been captured; a frame when due.
        ready = self._next + (self.period if self.catch_up else 0.0)
        wait = ready - time.monotonic()
        if wait > timeout_s:
            time.sleep(timeout_s)
            return None
        if wait > 0:
            time.sleep(wait)
        if self.catch_up:
            start = self._next
            self._next += self.period
            t = start + self.period
        else:
            start = t = time.monotonic()
            self._next = max(self._next + self.period, t + self.period)  # late: drop, don't burst
        kind = active_fault(self.faults, self.modality, self.clock.elapsed(start))
        if kind == "stop":
            raise SensorGone("device lost")
        return None if kind == "stall" else (t, kind)


class Deliver:
    """A rendered scene (task size, float) as a device of the bundle's size delivers it: its
    8-bit RGB or Z16 pixels resized as a camera's frames are (the driver's own resize)."""

    def __init__(self, stream: str, size: tuple[int, int]):
        self.stream, self.shape = stream, (3 if stream == "rgb" else 1, *size)
        self._resample = Resample((HEIGHT, WIDTH), size)

    def __call__(self, scene: np.ndarray) -> np.ndarray:
        if self.stream == "rgb":
            return self._resample.rgb(rgb8(np.moveaxis(scene, 0, -1)))
        return self._resample.depth(depth_z16(scene[0]), np.float32(DEPTH_SCALE))

    def pixels(self, scene: np.ndarray) -> np.ndarray:
        """The device's own pixels at the bundle's size: RGB8 (H, W, 3) or Z16 (H, W)."""
        frame = self(scene)
        return rgb8(np.moveaxis(frame, 0, -1)) if self.stream == "rgb" else depth_z16(frame[0])


def _apply(kind: str | None, data: np.ndarray, rng: np.random.Generator, scale: float, deliver) -> np.ndarray:
    """The fault on a new sample, then the device's quantization and size (see frames.py): a
    NaN fault stands for a broken driver, so it alone delivers values no device could."""
    if kind == "noise":
        data = data + rng.standard_normal(data.shape).astype(np.float32) * scale
    out = deliver(data)
    return np.full_like(out, np.nan) if kind == "nan" else out


def _audio(samples: np.ndarray) -> np.ndarray:
    return pcm16(samples).astype(np.float32)


class _SimulatedDevice(ABC):
    """open/capture/close of a simulated device: pacing and faults come from its stream, a
    "frozen" fault repeats the last sample, and the class makes each new one in ``_make``."""

    _stream: _Stream
    _last: np.ndarray | None = None

    @abstractmethod
    def _make(self, t: float, kind: str | None) -> np.ndarray:
        """A new sample for time ``t`` with the fault ``kind`` (None, "nan" or "noise") applied."""

    def _open(self) -> None:
        self._stream.open()

    def _capture(self, timeout_s: float):
        slot = self._stream.next_slot(timeout_s)
        if slot is None:
            return None
        t, kind = slot
        if kind != "frozen" or self._last is None:
            self._last = self._make(t, kind)
        if kind == "jump":  # the device's clock, not the data: back, then ahead, by turns
            t += JUMP_S if int(self._stream.clock.elapsed(t) * 2) % 2 else -JUMP_S
        return self._last, t

    def _close(self) -> None:
        self._last = None


class SimulatedCamera(_SimulatedDevice, Sensor):
    """One camera stream (rgb or depth) of the scenario at ``fps``, frames of ``size`` (h, w)."""

    def __init__(
        self,
        modality: str,
        scenario: Scenario,
        clock: RigClock,
        faults: tuple[Fault, ...] = (),
        fps: float = 30.0,
        size: tuple[int, int] = (HEIGHT, WIDTH),
    ):
        self.modality = modality  # before the base class's init, which reads it
        super().__init__(f"sim-{modality}")
        self.scenario, self.clock = scenario, clock
        self._stream = _Stream(modality, clock, faults, 1.0 / fps, catch_up=False)
        self._render = render_rgb if modality == "rgb" else render_depth
        self._names = OBJECTS if modality == "rgb" else GESTURES
        self._deliver = Deliver(modality, size)
        self._frame = 0

    def _make(self, t: float, kind: str | None) -> np.ndarray:
        self._frame += 1
        segment = self.scenario.segment(self.clock.elapsed(t))
        _, cues = self.scenario.intent_and_cues(segment)
        rng = np.random.default_rng([self.scenario.seed, segment, self._frame, STREAMS.index(self.modality)])
        data = self._render(self._names[cues[self.modality]], rng)
        return _apply(kind, data, rng, 80.0 if self.modality == "rgb" else 1.5, self._deliver)


def resample(track: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """A whole track at another sample rate, band-limited (its spectrum cut or zero-padded):
    numpy only, so the simulated rig needs no resampling package. The track is taken as periodic,
    which its segments (noise and words, faded at their ends) tolerate."""
    if rate_in == rate_out:
        return track
    n_out = round(len(track) * rate_out / rate_in)
    spectrum = np.fft.rfft(track)[: n_out // 2 + 1]
    return (np.fft.irfft(spectrum, n_out) * (n_out / len(track))).astype(np.float32)


def scenario_track(scenario: Scenario, segment: int, rate: int = SAMPLE_RATE) -> np.ndarray:
    """What the microphone hears during one segment: its word about once a second over room
    noise, at a level drawn per segment (float32, 16-bit steps before quantization), rendered at
    the task's 16 kHz and delivered at ``rate``."""
    _, cues = scenario.intent_and_cues(segment)
    rng = np.random.default_rng([scenario.seed, segment, 7])
    n = int(scenario.segment_s * SAMPLE_RATE)
    track = background_noise(rng, n) * 0.01
    pos = int(rng.integers(0, SAMPLE_RATE // 4))
    while pos < n:
        word = synthesize_word(WORDS[cues["audio"]], rng) * 0.3
        track[pos : pos + len(word)] += word[: n - pos]
        pos += len(word) + int(rng.uniform(0.45, 0.75) * SAMPLE_RATE)
    level = 10 ** (rng.uniform(-30, -3) / 20) * 32767 / (np.abs(track).max() + 1e-9)
    return resample((track * level).astype(np.float32), SAMPLE_RATE, rate)


class SimulatedMicrophone(_SimulatedDevice, MicrophoneSensor):
    """The scenario's speech: its word about once a second over room noise, in real time, at
    ``sample_rate``, a window of ``window_s`` every ``hop_s``."""

    def __init__(
        self,
        scenario: Scenario,
        clock: RigClock,
        faults: tuple[Fault, ...] = (),
        sample_rate: int = SAMPLE_RATE,
        window_s: float = 1.0,
        hop_s: float = 0.1,
    ):
        super().__init__("sim-audio", sample_rate, window_s, hop_s, block=max(1, round(BLOCK_S * sample_rate)))
        self.scenario, self.clock = scenario, clock
        self._stream = _Stream("audio", clock, faults, self.block / sample_rate, catch_up=True)
        self._tracks: dict[int, np.ndarray] = {}

    def _track(self, segment: int) -> np.ndarray:
        if segment not in self._tracks:  # keep one segment only
            self._tracks = {segment: scenario_track(self.scenario, segment, self.sample_rate)}
        return self._tracks[segment]

    def _make(self, t_end: float, kind: str | None) -> np.ndarray:
        rel = self.clock.elapsed(t_end) - self._stream.period  # the block's first sample
        segment = self.scenario.segment(rel)
        start = int((rel - segment * self.scenario.segment_s) * self.sample_rate)
        block = self._track(segment)[start : start + self.block]
        if len(block) < self.block:
            block = np.pad(block, (0, self.block - len(block)))
        rng = np.random.default_rng([self.scenario.seed, int(t_end * 1000)])
        return _apply(kind, block, rng, 20000.0, _audio)


@dataclass(frozen=True)
class SimulatedRig:
    scenario: Scenario
    clock: RigClock
    sensors: dict[str, Sensor]  # by stream: only those the bundle's modalities use


def simulated_rig(specs: tuple[ModalitySpec, ...], seed: int = 0, faults: tuple[Fault, ...] = ()) -> SimulatedRig:
    """The streams ``specs`` use, each at its modality's size, rate and window."""
    scenario, clock = Scenario(seed), RigClock()
    sensors: dict[str, Sensor] = {}
    for spec in specs:
        if spec.sensor == "audio":
            assert spec.sample_rate is not None and spec.window_s is not None  # the manifest's check
            sensors["audio"] = SimulatedMicrophone(
                scenario, clock, faults, spec.sample_rate, spec.window_s, 1.0 / spec.rate_hz
            )
        else:
            size = (spec.height, spec.width)
            sensors[spec.sensor] = SimulatedCamera(spec.sensor, scenario, clock, faults, spec.rate_hz, size)
    return SimulatedRig(scenario, clock, sensors)
