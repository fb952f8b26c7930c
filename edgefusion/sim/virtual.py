"""The virtual rig: the simulated scenario played through the real sensor libraries.

The scenario's frames are fed, at the bundle's camera rate and size and stamped on the device's
own clock, into an ``rs.software_device`` that the RealSense driver reads like a USB camera
(pipeline, matcher, align, timestamps, retries); the scenario's speech is played, at the
bundle's sample rate, into a private PulseAudio null sink whose monitor the PortAudio driver
captures. Only the devices of the streams the bundle uses are made. Everything downstream of
the devices is the real code path, so this is where the drivers meet the runtime without hardware.

Faults act on the devices the way real ones fail: a camera ``stop`` or ``stall`` stops the frames
(a USB camera that stops streaming), ``frozen`` repeats one frame, ``noise`` adds sensor noise,
``jump`` moves the camera's hardware clock;
a microphone ``stop`` kills the sound server (the device vanishes, then comes back), ``stall``
freezes it, ``noise`` is played into the room. NaN cannot come out of an 8- or 16-bit device.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgefusion import log
from edgefusion.errors import EdgefusionError
from edgefusion.modalities import ModalitySpec
from edgefusion.sensors.base import SampleSource
from edgefusion.sensors.faults import JUMP_S, Fault, active_fault
from edgefusion.sensors.frames import CAMERAS
from edgefusion.sim.simulated import BLOCK_S, Deliver, RigClock, Scenario, scenario_track
from edgefusion.task import GESTURES, OBJECTS
from edgefusion.task.scenes import render_depth, render_rgb

DEVICE_CLOCK_OFFSET_S = 1234.5  # the software camera's clock is not the host's: the driver must map it
CAMERA_FAULTS = ("stop", "stall", "frozen", "noise", "jump")
MICROPHONE_FAULTS = ("stop", "stall", "noise")


class _CameraFeeder:
    """Renders the scenario and feeds the software camera its streams at ``fps``, on its own thread."""

    def __init__(self, camera, scenario: Scenario, clock: RigClock, faults: tuple[Fault, ...], fps: float):
        self.camera, self.scenario, self.clock, self.faults, self.fps = camera, scenario, clock, faults, fps
        self._deliver = {m: Deliver(m, size) for m, size in camera.sizes.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="virtual-camera", daemon=True)
        self._last: dict[str, np.ndarray] | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():  # the rig may be closed without having started
            self._thread.join(timeout=2)

    def _frame(self, t: float, k: int) -> dict[str, np.ndarray]:
        segment = self.scenario.segment(t)
        _, cues = self.scenario.intent_and_cues(segment)
        rng = np.random.default_rng([self.scenario.seed, segment, k, 5])
        scenes = {"rgb": render_rgb(OBJECTS[cues["rgb"]], rng), "depth": render_depth(GESTURES[cues["depth"]], rng)}
        out = {}
        for m, deliver in self._deliver.items():
            scene = scenes[m]
            if active_fault(self.faults, m, t) == "noise":
                scene = scene + rng.standard_normal(scene.shape).astype(np.float32) * (80 if m == "rgb" else 1.5)
            out[m] = deliver.pixels(scene)
        return out

    def _run(self) -> None:
        period = 1.0 / self.fps
        next_t = time.monotonic()
        for k in itertools.count():
            if self._stop.wait(max(0.0, next_t - time.monotonic())):
                return
            now = time.monotonic()
            next_t = max(next_t + period, now)  # late: drop the frame, as a camera does
            t = self.clock.elapsed(now)
            # One device, one stream of framesets: a fault on either camera stops both.
            kinds = {active_fault(self.faults, m, t) for m in self._deliver}
            if kinds & {"stop", "stall"}:
                continue
            if "frozen" not in kinds or self._last is None:
                self._last = self._frame(t, k)
            jump = (JUMP_S if int(t * 2) % 2 else -JUMP_S) if "jump" in kinds else 0.0
            self.camera.feed(self._last, (now + DEVICE_CLOCK_OFFSET_S + jump) * 1000.0)


def _speech(scenario: Scenario, faults: tuple[Fault, ...], rate: int):
    """The scenario's audio at ``rate`` from the rig's start, in 10 ms blocks, noise faults mixed in."""
    block = max(1, round(BLOCK_S * rate))
    rng = np.random.default_rng([scenario.seed, 11])
    for segment in itertools.count():
        track = scenario_track(scenario, segment, rate)
        for i in range(0, len(track), block):
            chunk = track[i : i + block]
            t = segment * scenario.segment_s + i / rate
            if active_fault(faults, "audio", t) == "noise":
                chunk = chunk + rng.standard_normal(len(chunk)).astype(np.float32) * 20000
            yield chunk


class _MicrophoneDevice:
    """Kills or freezes the sound server while the script says so, and brings back one that exited
    on its own (a crash, or killed from outside) as a replugged microphone comes back, from a thread."""

    RELAUNCH_S = 1.0  # between tries to bring back a server that exited on its own

    def __init__(self, server, clock: RigClock, faults: tuple[Fault, ...]):
        self.server, self.clock, self.faults = server, clock, faults
        self.relaunches = 0  # servers that exited on their own, brought back
        self.failed_restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="virtual-mic-device", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def _run(self) -> None:
        current = None
        while not self._stop.wait(0.05):
            kind = active_fault(self.faults, "audio", self.clock.elapsed())
            kind = kind if kind in ("stop", "stall") else None
            if kind != current:
                self._enter(current, kind)
                current = kind
            elif current != "stop" and self.server.exited is not None:
                self._relaunch()
        if current == "stall":
            self.server.thaw()

    def _enter(self, current: str | None, kind: str | None) -> None:
        if current == "stop":
            self._restart()  # a failure is tried again: the server has exited, so _run relaunches it
        elif current == "stall":
            self.server.thaw()
        if kind == "stop":
            self.server.kill()
        elif kind == "stall":
            self.server.freeze()

    def _relaunch(self) -> None:
        if self._stop.wait(self.RELAUNCH_S):
            return
        self.relaunches += 1
        if self._restart():
            log.notice("virtual microphone: sound server restarted")

    def _restart(self) -> bool:
        try:
            self.server.restart()
        except (EdgefusionError, subprocess.SubprocessError, OSError) as err:  # tried again in a moment
            n = self.failed_restarts = self.failed_restarts + 1
            if log.doubled(n - 1, n):
                log.warning(f"virtual microphone: cannot restart the sound server ({n} tries): {err}")
            return False
        return True


def check_faults(faults: tuple[Fault, ...]) -> None:
    """The faults the virtual rig's devices can act out; the others are refused in one line."""
    bad = [
        f"{f.stream}:{f.kind}"
        for f in faults
        if f.kind not in (MICROPHONE_FAULTS if f.stream == "audio" else CAMERA_FAULTS)
    ]
    if bad:
        raise EdgefusionError(
            f"the virtual rig's devices cannot do {', '.join(bad)} (8- and 16-bit devices have no NaN); cameras "
            f"can {', '.join(CAMERA_FAULTS)}, the microphone {', '.join(MICROPHONE_FAULTS)}; or use the simulated rig"
        )


@dataclass(frozen=True)
class VirtualRig:
    """The parts ``rigs`` assembles into its ``Rig``: this module imports nothing from ``rigs``."""

    scenario: Scenario
    sensors: dict[str, SampleSource]  # by stream: only those the bundle's modalities use
    start: Callable[[], float]  # starts the clock and the devices' feeders; returns t0
    close: Callable[[], None]


def virtual_rig(cfg, specs: tuple[ModalitySpec, ...], faults: tuple[Fault, ...]) -> VirtualRig:
    """The devices of the streams ``specs`` use: a software RealSense with those camera streams
    (at their sizes, fed at the first camera modality's rate), a sound server at the audio
    modality's rate. ``faults`` are those of the streams used (``rigs.stream_faults``)."""
    check_faults(faults)
    scenario, clock = Scenario(cfg.source.seed), RigClock()
    by_stream = {s.sensor: s for s in specs}
    sensors: dict[str, SampleSource] = {}
    parts: list = []  # started in this order, stopped in the reverse
    server = None
    cameras = [by_stream[m] for m in CAMERAS if m in by_stream]
    if cameras:
        from edgefusion.sensors.realsense import RealSenseCamera, RealSenseConfig, SoftwareCamera

        sizes = {s.sensor: (s.height, s.width) for s in cameras}
        fps = cameras[0].rate_hz
        software = SoftwareCamera(sizes, max(1, round(fps)))
        # No align: the software camera's two streams coincide, and align would only punch holes.
        # The mode is the first stream's; the driver resizes the other's frames to its own size.
        height, width = sizes[cameras[0].sensor]
        mode = RealSenseConfig(width=width, height=height, fps=max(1, round(fps)), align=False)
        camera = RealSenseCamera(mode, sizes, device=software.device)
        sensors.update(camera.sources)
        parts.append(_CameraFeeder(software, scenario, clock, faults, fps))
    if "audio" in by_stream:
        from edgefusion.sensors.microphone import MicrophoneConfig, PyAudioMicrophone
        from edgefusion.sim.pulse import PulseServer, Speaker

        audio = by_stream["audio"]
        assert audio.sample_rate is not None and audio.window_s is not None  # the manifest's check
        server = PulseServer(rate=audio.sample_rate).start()
        try:  # the server makes its sink's monitor the default input, at its rate
            sensors["audio"] = PyAudioMicrophone(
                MicrophoneConfig(), audio.sample_rate, audio.window_s, 1.0 / audio.rate_hz
            )
        except BaseException:
            server.stop()
            raise
        parts.append(Speaker(server, _speech(scenario, faults, audio.sample_rate)))
        parts.append(_MicrophoneDevice(server, clock, faults))
    for m, sensor in sensors.items():
        sensor.offset_s = cfg.sensors[m].offset_ms / 1000

    def start() -> float:
        t0 = clock.start()
        for part in parts:
            part.start()
        return t0

    def close() -> None:
        try:
            for part in reversed(parts):
                part.stop()
        finally:  # the sound server is a process of its own: never left behind
            if server is not None:
                server.stop()

    return VirtualRig(scenario, sensors, start, close)
