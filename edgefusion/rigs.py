"""Where the loop's samples come from: the simulated rig, the virtual rig, real devices, a replay.

Every rig is a dict of sample sources (one per sensor stream the bundle's modalities use, keyed
by stream) plus what the CLI needs around them: a clock start, a ground truth where the rig knows
what the person meant, and a close. Each source delivers its stream at the size, rate and window
of the modality it feeds (the bundle's ``ModalitySpec``); a stream no modality uses is not opened.
Real drivers and their libraries are imported only by the rig that uses them.

Faults and config sections are keyed by stream (they describe hardware): one for a stream the
bundle does not use is accepted and ignored, with one warning line.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

from edgefusion import log
from edgefusion.errors import EdgefusionError
from edgefusion.modalities import STREAMS, ModalitySpec
from edgefusion.sensors.base import SampleSource
from edgefusion.sensors.faults import Fault
from edgefusion.sensors.frames import CAMERAS

# t (s since the rig started) → (the intent the person means or None, seconds since it began)
Truth = Callable[[float], tuple["str | None", float]]


@dataclass
class Rig:
    kind: str
    sensors: dict[str, SampleSource]  # by stream
    start: Callable[[], float]  # starts the rig's clock just before the loop; returns t0
    truth: Truth | None = None
    close: Callable[[], None] = lambda: None
    # Replay at max speed: the recorded ticks to re-run, on the recorded clock (else: real time).
    ticks: list[dict] | None = None
    facts: dict = field(default_factory=dict)  # what a recording of this rig should say about it
    duration_s: float | None = None  # a replay ends with its recording


def make_rig(cfg, specs: tuple[ModalitySpec, ...], labels: tuple[str, ...]) -> Rig:
    """The configured source, delivering the streams of ``specs`` (a bundle's ``modalities``)."""
    kind = cfg.source.kind
    _warn_unused(cfg, {s.sensor for s in specs})
    if kind == "simulated":
        return _simulated(cfg, specs, labels)
    if kind == "virtual":
        return _virtual(cfg, specs, labels)
    if kind == "realsense":
        return _devices(cfg, specs)
    if kind == "replay":
        return _replay(cfg, specs)
    raise EdgefusionError(f"unknown source kind {kind!r}")  # config validation keeps this unreachable


def stream_faults(spec: str, specs: tuple[ModalitySpec, ...]) -> tuple[Fault, ...]:
    """The fault script's faults on the streams ``specs`` use; the others are said once, and dropped."""
    from edgefusion.sensors.faults import parse_faults

    used = {s.sensor for s in specs}
    faults = parse_faults(spec)
    unused = sorted({f.stream for f in faults} - used)
    if unused:
        log.warning(
            f"faults on {', '.join(unused)} ignored: the bundle uses no {' or '.join(unused)} stream "
            f"(it uses {', '.join(s for s in STREAMS if s in used)})"
        )
    return tuple(f for f in faults if f.stream in used)


def _warn_unused(cfg, used: set[str]) -> None:
    """One line per config section for a stream (or device) the bundle does not use."""
    needs = {"camera": CAMERAS, "microphone": ("audio",), **{f"sensors.{m}": (m,) for m in STREAMS}}
    for section in sorted(cfg.given & needs.keys()):
        if not used.intersection(needs[section]):
            log.warning(f"config [{section}] ignored: the bundle uses no {' or '.join(needs[section])} stream")


def scenario_truth(scenario, labels: tuple[str, ...]) -> Truth | None:
    """What the simulated person asks for, where the bundle's labels are the built-in task's
    intents: a bundle of a user's own task runs on the simulated rigs too, unscored."""
    from edgefusion.task import INTENTS

    if tuple(labels) != tuple(INTENTS):
        return None
    return lambda t: (INTENTS[scenario.intent_at(t)], t % scenario.segment_s)


def _simulated(cfg, specs: tuple[ModalitySpec, ...], labels) -> Rig:
    from edgefusion.sim.simulated import simulated_rig

    rig = simulated_rig(specs, cfg.source.seed, stream_faults(cfg.source.faults, specs))
    for m, sensor in rig.sensors.items():
        sensor.offset_s = cfg.sensors[m].offset_ms / 1000
    return Rig(
        "simulated",
        rig.sensors,
        rig.clock.start,
        scenario_truth(rig.scenario, labels),
        facts={"source": "simulated", "seed": cfg.source.seed, "faults": cfg.source.faults},
    )


def _virtual(cfg, specs: tuple[ModalitySpec, ...], labels) -> Rig:
    from edgefusion.sim.virtual import virtual_rig

    rig = virtual_rig(cfg, specs, stream_faults(cfg.source.faults, specs))
    facts = {"source": "virtual", "seed": cfg.source.seed, "faults": cfg.source.faults}
    return Rig("virtual", rig.sensors, rig.start, scenario_truth(rig.scenario, labels), rig.close, facts=facts)


def _devices(cfg, specs: tuple[ModalitySpec, ...]) -> Rig:
    """The robot's own sensors, those the bundle uses: a RealSense for rgb and/or depth, a
    microphone through PortAudio."""
    import time

    by_stream = {s.sensor: s for s in specs}
    sizes = {m: (by_stream[m].height, by_stream[m].width) for m in CAMERAS if m in by_stream}
    sensors: dict[str, SampleSource] = {}
    # A missing library is a set-up error, said at once, and so is a device the config names
    # that is not there. A default device that is missing is not: the robot may boot before its
    # camera enumerates, so the loop starts and the drivers keep trying.
    if sizes:
        from edgefusion.sensors.realsense import RealSenseCamera, connected_serials, import_realsense

        import_realsense()
        if cfg.camera.serial:
            serials = connected_serials()
            if cfg.camera.serial not in serials:
                raise EdgefusionError(
                    f"[camera] serial {cfg.camera.serial!r}: not connected (connected: "
                    f"{', '.join(serials) or 'none'}); check it with rs-enumerate-devices, or leave it empty to "
                    "take the first camera"
                )
        sensors.update(RealSenseCamera(cfg.camera, sizes).sources)
    audio = by_stream.get("audio")
    if audio is not None:
        from edgefusion.sensors.microphone import PyAudioMicrophone, check_device, import_pyaudio

        import_pyaudio()
        if cfg.microphone.device or cfg.microphone.rate:
            check_device(cfg.microphone)
        assert audio.sample_rate is not None and audio.window_s is not None  # the manifest's check
        sensors["audio"] = PyAudioMicrophone(cfg.microphone, audio.sample_rate, audio.window_s, 1.0 / audio.rate_hz)
    for m, sensor in sensors.items():
        sensor.offset_s = cfg.sensors[m].offset_ms / 1000
    return Rig(
        "realsense",
        sensors,
        time.monotonic,
        facts={"source": "realsense", "serial": cfg.camera.serial, "microphone": cfg.microphone.device},
    )


def _replay(cfg, specs: tuple[ModalitySpec, ...]) -> Rig:
    """A recorded session, or another tool's recording (shifted by the config's sensor offsets),
    at the bundle's sizes and rate: in real time from now, or at max speed on the recorded tick times."""
    import time

    from edgefusion.session.layout import load_session
    from edgefusion.session.replay import recorded_ticks, replay_sources

    offsets = {m: section.offset_ms for m, section in cfg.sensors.items()}
    session = load_session(cfg.source.path, specs, offsets_ms=offsets)
    sources = replay_sources(session, specs)
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
