"""Where the loop's samples come from: the simulated rig, the virtual rig, real devices, a replay.

Every rig is a dict of sample sources (one per modality) plus what the CLI needs around them:
a clock start, a ground truth where the rig knows what the person meant, and a close. Real
drivers and their libraries are imported only by the rig that uses them.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

from edgefusion.errors import EdgefusionError
from edgefusion.sensors.base import SampleSource

# t (s since the rig started) → (the intent the person means or None, seconds since it began)
Truth = Callable[[float], tuple["str | None", float]]


@dataclass
class Rig:
    kind: str
    sensors: dict[str, SampleSource]
    start: Callable[[], float]  # starts the rig's clock just before the loop; returns t0
    truth: Truth | None = None
    close: Callable[[], None] = lambda: None
    # Replay at max speed: the recorded ticks to re-run, on the recorded clock (else: real time).
    ticks: list[dict] | None = None
    facts: dict = field(default_factory=dict)  # what a recording of this rig should say about it
    duration_s: float | None = None  # a replay ends with its recording


def make_rig(cfg, labels: tuple[str, ...]) -> Rig:
    kind = cfg.source.kind
    if kind == "simulated":
        return _simulated(cfg, labels)
    if kind == "virtual":
        from edgefusion.sensors.virtual import virtual_rig

        return virtual_rig(cfg, labels)
    if kind == "realsense":
        return _devices(cfg)
    if kind == "replay":
        return _replay(cfg)
    raise EdgefusionError(f"unknown source kind {kind!r}")  # config validation keeps this unreachable


def scenario_truth(scenario, labels: tuple[str, ...]) -> Truth | None:
    """What the simulated person asks for, where the bundle's labels are the built-in task's
    intents: a bundle of a user's own task runs on the simulated rigs too, unscored."""
    from edgefusion.task import INTENTS

    if tuple(labels) != tuple(INTENTS):
        return None
    return lambda t: (INTENTS[scenario.intent_at(t)], t % scenario.segment_s)


def _simulated(cfg, labels) -> Rig:
    from edgefusion.sensors.faults import parse_faults
    from edgefusion.sensors.simulated import simulated_rig

    rig = simulated_rig(cfg.source.seed, parse_faults(cfg.source.faults))
    for m, sensor in rig.sensors.items():
        sensor.offset_s = cfg.sensors[m].offset_ms / 1000
    return Rig(
        "simulated",
        rig.sensors,
        rig.clock.start,
        scenario_truth(rig.scenario, labels),
        facts={"source": "simulated", "seed": cfg.source.seed, "faults": cfg.source.faults},
    )


def _devices(cfg) -> Rig:
    """The robot's own sensors: a RealSense for rgb + depth, a microphone through PortAudio."""
    import time

    from edgefusion.sensors.pyaudio_mic import PyAudioMicrophone, check_device, import_pyaudio
    from edgefusion.sensors.realsense import RealSenseCamera, connected_serials, import_realsense

    # A missing library is a set-up error, said at once, and so is a device the config names
    # that is not there. A default device that is missing is not: the robot may boot before its
    # camera enumerates, so the loop starts and the drivers keep trying.
    import_realsense()
    import_pyaudio()
    if cfg.camera.serial:
        serials = connected_serials()
        if cfg.camera.serial not in serials:
            raise EdgefusionError(
                f"[camera] serial {cfg.camera.serial!r}: not connected (connected: {', '.join(serials) or 'none'}); "
                "check it with rs-enumerate-devices, or leave it empty to take the first camera"
            )
    if cfg.microphone.device or cfg.microphone.rate:
        check_device(cfg.microphone)
    camera = RealSenseCamera(cfg.camera, offset_s=cfg.sensors["rgb"].offset_ms / 1000)
    camera.depth.offset_s = cfg.sensors["depth"].offset_ms / 1000
    mic = PyAudioMicrophone(cfg.microphone, offset_s=cfg.sensors["audio"].offset_ms / 1000)
    return Rig(
        "realsense",
        {"rgb": camera, "depth": camera.depth, "audio": mic},
        time.monotonic,
        facts={"source": "realsense", "serial": cfg.camera.serial, "microphone": cfg.microphone.device},
    )


def _replay(cfg) -> Rig:
    """A recorded session, or another tool's recording (shifted by the config's sensor offsets):
    in real time from now, or at max speed on the recorded tick times."""
    import time

    from edgefusion.modalities import MODALITIES
    from edgefusion.session.layout import load_session
    from edgefusion.session.replay import recorded_ticks, replay_sources

    session = load_session(cfg.source.path, offsets_ms={m: cfg.sensors[m].offset_ms for m in MODALITIES})
    sources = replay_sources(session)
    t_rec = session.t_start
    shift = [0.0]

    def start() -> float:
        if cfg.source.realtime:
            shift[0] = time.monotonic() - t_rec
            for s in sources.values():
                s.shift = shift[0]
        return t_rec + shift[0]

    label_times = [t for t, _ in session.labels]

    def truth(t: float) -> tuple[str | None, float]:
        i = bisect.bisect_right(label_times, t_rec + t) - 1
        return (None, 0.0) if i < 0 else (session.labels[i][1], t_rec + t - label_times[i])

    return Rig(
        "replay",
        sources,
        start,
        truth if session.labels else None,
        ticks=None if cfg.source.realtime else recorded_ticks(session, cfg.runtime.tick_hz),
        duration_s=session.t_end - t_rec,
        facts={"source": "replay", "path": str(session.root), "warnings": session.warnings},
    )
