"""The virtual rig: the simulated scenario played through the real sensor libraries.

The scenario's frames are fed, at 30 fps and stamped on the device's own clock, into an
``rs.software_device`` that the RealSense driver reads like a USB camera (pipeline, matcher,
align, timestamps, retries); the scenario's speech is played into a private PulseAudio null sink
whose monitor the PortAudio driver captures. Everything downstream of the devices is the real
code path, so this is where the drivers meet the runtime without hardware.

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

import numpy as np

from edgefusion import log
from edgefusion.errors import EdgefusionError
from edgefusion.modalities import MODALITIES
from edgefusion.sensors.faults import JUMP_S, Fault, active_fault, parse_faults
from edgefusion.sensors.frames import depth_z16, rgb8
from edgefusion.sensors.simulated import CAMERA_FPS, RigClock, Scenario, scenario_track
from edgefusion.task import GESTURES, OBJECTS, SAMPLE_RATE
from edgefusion.task.scenes import HEIGHT, WIDTH, render_depth, render_rgb

DEVICE_CLOCK_OFFSET_S = 1234.5  # the software camera's clock is not the host's: the driver must map it
CAMERA_FAULTS = ("stop", "stall", "frozen", "noise", "jump")
MICROPHONE_FAULTS = ("stop", "stall", "noise")


class _CameraFeeder:
    """Renders the scenario and feeds the software camera at its frame rate, on its own thread."""

    def __init__(self, camera, scenario: Scenario, clock: RigClock, faults: tuple[Fault, ...]):
        self.camera, self.scenario, self.clock, self.faults = camera, scenario, clock, faults
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="virtual-camera", daemon=True)
        self._last: tuple[np.ndarray, np.ndarray] | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():  # the rig may be closed without having started
            self._thread.join(timeout=2)

    def _frame(self, t: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        segment = self.scenario.segment(t)
        _, cues = self.scenario.intent_and_cues(segment)
        rng = np.random.default_rng([self.scenario.seed, segment, k, 5])
        rgb = render_rgb(OBJECTS[cues["rgb"]], rng)
        depth = render_depth(GESTURES[cues["depth"]], rng)
        kinds = {m: active_fault(self.faults, m, t) for m in ("rgb", "depth")}
        if kinds["rgb"] == "noise":
            rgb = rgb + rng.standard_normal(rgb.shape).astype(np.float32) * 80
        if kinds["depth"] == "noise":
            depth = depth + rng.standard_normal(depth.shape).astype(np.float32) * 1.5
        return rgb8(np.moveaxis(rgb, 0, -1)), depth_z16(depth[0])

    def _run(self) -> None:
        period = 1.0 / CAMERA_FPS
        next_t = time.monotonic()
        for k in itertools.count():
            if self._stop.wait(max(0.0, next_t - time.monotonic())):
                return
            now = time.monotonic()
            next_t = max(next_t + period, now)  # late: drop the frame, as a camera does
            t = self.clock.elapsed(now)
            # One device, one stream of framesets: a fault on either camera stops both.
            kinds = {active_fault(self.faults, m, t) for m in ("rgb", "depth")}
            if kinds & {"stop", "stall"}:
                continue
            if "frozen" not in kinds or self._last is None:
                self._last = self._frame(t, k)
            jump = (JUMP_S if int(t * 2) % 2 else -JUMP_S) if "jump" in kinds else 0.0
            self.camera.feed(*self._last, (now + DEVICE_CLOCK_OFFSET_S + jump) * 1000.0)


def _speech(scenario: Scenario, clock: RigClock, faults: tuple[Fault, ...]):
    """The scenario's audio from the rig's start, in 10 ms blocks, noise faults mixed in."""
    block = SAMPLE_RATE // 100
    rng = np.random.default_rng([scenario.seed, 11])
    for segment in itertools.count():
        track = scenario_track(scenario, segment)
        for i in range(0, len(track), block):
            chunk = track[i : i + block]
            t = segment * scenario.segment_s + i / SAMPLE_RATE
            if active_fault(faults, "audio", t) == "noise":
                chunk = chunk + rng.standard_normal(len(chunk)).astype(np.float32) * 20000
            yield chunk


class _MicrophoneDevice:
    """Kills or freezes the sound server while the script says so, and brings back one that exited
    on its own (a crash, or killed from outside) as a replugged microphone comes back, from a thread."""

    RELAUNCH_S = 1.0  # between tries to bring back a server that exited on its own

    def __init__(self, server, clock: RigClock, faults: tuple[Fault, ...]):
        self.server, self.clock, self.faults = server, clock, faults
        self.relaunches = 0
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
            self.server.restart()
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
        try:
            self.server.restart()
        except (EdgefusionError, subprocess.SubprocessError, OSError) as err:  # tried again in a moment
            if log.doubled(self.relaunches - 1, self.relaunches):
                log.warning(f"virtual microphone: cannot restart the sound server ({self.relaunches} tries): {err}")
        else:
            log.notice("virtual microphone: sound server restarted")


def virtual_rig(cfg, labels: tuple[str, ...]):
    from edgefusion.rigs import Rig, scenario_truth
    from edgefusion.sensors.pulse import PulseServer, Speaker
    from edgefusion.sensors.pyaudio_mic import MicrophoneConfig, PyAudioMicrophone
    from edgefusion.sensors.realsense import RealSenseCamera, RealSenseConfig, SoftwareCamera

    faults = parse_faults(cfg.source.faults)
    bad = [
        f"{f.modality}:{f.kind}"
        for f in faults
        if f.kind not in (MICROPHONE_FAULTS if f.modality == "audio" else CAMERA_FAULTS)
    ]
    if bad:
        raise EdgefusionError(
            f"the virtual rig's devices cannot do {', '.join(bad)} (8- and 16-bit devices have no NaN); cameras "
            f"can {', '.join(CAMERA_FAULTS)}, the microphone {', '.join(MICROPHONE_FAULTS)}; or use the simulated rig"
        )
    scenario, clock = Scenario(cfg.source.seed), RigClock()
    software = SoftwareCamera(WIDTH, HEIGHT, int(CAMERA_FPS))
    # No align: the software camera's two streams coincide, and align would only punch holes.
    mode = RealSenseConfig(width=WIDTH, height=HEIGHT, fps=int(CAMERA_FPS), align=False)
    camera = RealSenseCamera(mode, device=software.device)
    server = PulseServer().start()
    try:
        mic = PyAudioMicrophone(MicrophoneConfig())  # the server makes its sink's monitor the default input
    except BaseException:
        server.stop()
        raise
    sensors = {"rgb": camera, "depth": camera.depth, "audio": mic}
    for m in MODALITIES:
        sensors[m].offset_s = cfg.sensors[m].offset_ms / 1000
    feeder = _CameraFeeder(software, scenario, clock, faults)
    speaker = Speaker(server, _speech(scenario, clock, faults))
    mic_device = _MicrophoneDevice(server, clock, faults)

    def start() -> float:
        t0 = clock.start()
        feeder.start()
        speaker.start()
        mic_device.start()
        return t0

    def close() -> None:
        try:
            for part in (mic_device, feeder, speaker):
                part.stop()
        finally:  # the sound server is a process of its own: never left behind
            server.stop()

    facts = {"source": "virtual", "seed": cfg.source.seed, "faults": cfg.source.faults}
    return Rig("virtual", sensors, start, scenario_truth(scenario, labels), close, facts=facts)
