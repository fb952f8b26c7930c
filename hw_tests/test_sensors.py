"""The rig's sensors through the runtime's own drivers, as ``edgefusion run`` opens them: found,
at their mode's frame rate, stamped at capture on the runtime's monotonic clock, depth in metres,
an audio window every hop, and the configured audio-video offset applied.

On ``--rig realsense`` these are the robot's RealSense and microphone (``EDGEFUSION_SERIAL``,
``EDGEFUSION_MIC``; someone should speak near the microphone); on the virtual rig, the software
RealSense fed the simulated scenario and the private PulseAudio. Every sample each driver
publishes is recorded by its tap (``on_sample``), so the figures count what the runtime could read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from edgefusion.config import Config
from edgefusion.sensors.frames import CAMERAS

FIRST_SAMPLE_S = 15.0  # a RealSense's first frame takes ~1 s; a microphone's first window, its window plus ~2 s
RECORD_S = 3.0  # after every stream has delivered: ~90 frames, ~30 audio windows
RATE_TOLERANCE = 0.05  # the issue's: the frame rate within 5 % of the mode
OFFSET_MS = -40.0  # configured on audio for the offset test (negative: stamps stay before their arrival)


@dataclass
class Recording:
    streams: list[str]
    samples: dict[str, list[tuple[float, float]]]  # stream -> (t, arrived) of every sample published
    last: dict[str, np.ndarray]  # stream -> its last sample's data
    first_s: dict[str, float]  # stream -> seconds from the rig's start to its first sample
    sensors: dict = field(default_factory=dict)  # stream -> the driver (disconnected): counters, dropped
    silent: dict[str, int] = field(default_factory=dict)  # stream -> samples marked digital silence

    def times(self, stream: str) -> np.ndarray:
        return np.array([t for t, _ in self.samples[stream]])


def _record(rig, bundle, base: Config | None = None) -> Recording:
    """Every bundle stream's driver on ``rig``, as ``run_loop`` assembles them, until each has
    delivered (or ``FIRST_SAMPLE_S``), then ``RECORD_S`` more."""
    from edgefusion.rigs import make_rig

    reason = rig.unavailable([s.sensor for s in bundle.modalities])  # rig_for's check, once for the module
    if reason:
        pytest.skip(reason)
    plan = rig.plan((), base)
    try:
        parts = make_rig(plan.config, bundle.modalities, bundle.labels)
        sensors = plan.wrap(parts.sensors)
        rec = Recording(list(sensors), {m: [] for m in sensors}, {}, {}, sensors, dict.fromkeys(sensors, 0))
        for m, sensor in sensors.items():
            sensor.on_sample = _tap(rec, m)
        try:
            t0 = parts.start()
            plan.start(t0)
            for sensor in sensors.values():
                sensor.connect()
            deadline = time.monotonic() + FIRST_SAMPLE_S
            while time.monotonic() < deadline and not all(rec.samples.values()):
                time.sleep(0.01)
            time.sleep(RECORD_S)  # the measurement itself: the taps record meanwhile
        finally:
            for sensor in sensors.values():
                sensor.on_sample = None
                sensor.disconnect()
            parts.close()
    finally:
        plan.close()
    rec.first_s = {m: s[0][1] - t0 for m, s in rec.samples.items() if s}
    return rec


def _tap(rec: Recording, stream: str):
    def tap(sample) -> None:  # on the capture thread: quick, and the data copied
        rec.samples[stream].append((sample.t, sample.arrived))
        rec.last[stream] = sample.data.copy()
        rec.silent[stream] += sample.silent

    return tap


@pytest.fixture(scope="module")
def recording(hil_rig, bundle) -> Recording:
    return _record(hil_rig, bundle)


def _cameras(rec: Recording) -> list[str]:
    return [m for m in CAMERAS if m in rec.streams]


def test_the_rigs_devices_are_found_and_deliver(hil_rig, bundle, recording, figures):
    for name, value in hil_rig.facts().items():
        figures.add(name, value)
    for m in recording.streams:
        figures.add(f"{m} first sample", recording.first_s.get(m), "s", f"<= {FIRST_SAMPLE_S:g} s")
        figures.add(f"{m} samples", len(recording.samples[m]), "", "> 0")
    wanted = {s.sensor for s in bundle.modalities}
    assert set(recording.streams) == wanted, "a driver for every stream the bundle uses, and no other"
    assert all(recording.samples.values()), {m: len(s) for m, s in recording.samples.items()}
    facts = hil_rig.facts()
    assert "camera" in facts or not _cameras(recording), "the report names the camera"
    assert "microphone" in facts or "audio" not in wanted, "and the microphone"
    for s in bundle.modalities:
        assert recording.last[s.sensor].shape == s.shape, f"{s.sensor} at the bundle's size"


def test_the_camera_keeps_its_modes_frame_rate(hil_rig, recording, figures):
    """The rate is the median interval between capture times (a frame lost is a gap, counted apart
    from the rate); a real camera loses none, the virtual rig's feeder thread may, descheduled on
    a busy CI machine."""
    cameras = _cameras(recording)
    if not cameras:
        pytest.skip("the bundle uses no camera stream")
    for m in cameras:
        sensor = recording.sensors[m]
        mode = getattr(sensor, "device", sensor).config.fps
        intervals = np.diff(recording.times(m))
        fps = 1 / float(np.median(intervals))
        lost = int(np.sum(np.maximum(np.rint(intervals * mode) - 1, 0)))  # frame periods with no frame
        delivered = len(intervals) / float(intervals.sum())
        figures.add(f"{m} mode", mode, "fps")
        figures.add(f"{m} frame rate", fps, "fps", f"within {RATE_TOLERANCE:.0%} of {mode} fps")
        figures.add(f"{m} frames delivered per second", delivered, "fps")
        figures.add(f"{m} frames lost", lost, "", "0 on a real camera")
        figures.add(f"{m} frames dropped as bad", sum(sensor.dropped.values()), "", "0")
        figures.sample(f"{m} frame interval", intervals * 1000, "ms")
        assert abs(fps / mode - 1) <= RATE_TOLERANCE, f"{m}: {fps:.2f} fps in a {mode} fps mode"
        assert sum(sensor.dropped.values()) == 0, f"{m}: frames dropped as bad {sensor.dropped}"
        if hil_rig.kind != "virtual":
            assert lost <= RATE_TOLERANCE * len(intervals), f"{m}: {lost} frames lost of {len(intervals) + lost}"


def test_samples_are_stamped_at_capture_on_the_runtimes_clock(recording, figures):
    """Increasing capture times, each before its arrival, arrival on ``time.monotonic()``, and
    the typical sample young enough at arrival for the runtime to use it (under the stream's age
    limit; the tail is the machine's scheduling, a figure)."""
    max_age = Config().max_age_s()
    for m in recording.streams:
        t, arrived = (np.array(c) for c in zip(*recording.samples[m]))
        delay_ms = (arrived - t) * 1000
        limit_ms = max_age[m] * 1000
        figures.sample(f"{m} capture to arrival", delay_ms, "ms")
        figures.add(f"{m} capture to arrival p50", float(np.median(delay_ms)), "ms", f"0 .. {limit_ms:g} ms")
        figures.add(f"{m} capture to arrival max", float(delay_ms.max()), "ms")
        assert np.all(np.diff(t) > 0), f"{m}: capture times not increasing"
        assert np.all(delay_ms >= 0), f"{m}: stamped after it arrived ({delay_ms.min():.1f} ms)"
        assert np.median(delay_ms) <= limit_ms, f"{m}: {np.median(delay_ms):.0f} ms from capture to arrival"
        assert 0 <= time.monotonic() - arrived[-1] < 60, f"{m}: arrival not on time.monotonic()'s clock"


def test_depth_is_in_metres(hil_rig, recording, figures):
    if "depth" not in recording.streams:
        pytest.skip("the bundle uses no depth stream")
    d = recording.last["depth"]
    median = float(np.median(d[d > 0]))
    virtual = hil_rig.kind == "virtual"
    lo, hi = _scene_depth_m(d.shape[1:]) if virtual else (0.1, 10.0)  # else: a D4xx's working range
    figures.add("depth median", median, "m", f"{lo:.2f} .. {hi:.2f} m")
    figures.add("depth valid pixels", float(np.mean(d > 0)))
    assert lo <= median <= hi, f"median depth {median:.3f} m: not metres (a wrong depth scale?)"
    if virtual:
        figures.needs_jetson("depth of a real scene through a RealSense's own depth scale")


def _scene_depth_m(size: tuple[int, int]) -> tuple[float, float]:
    """The range of median depths the virtual rig's scene has, as its device delivers them (the
    simulated person before a wall, at ``size`` in Z16), 10 % either side."""
    from edgefusion.sim.simulated import Deliver
    from edgefusion.task import GESTURES
    from edgefusion.task.scenes import render_depth

    rng, deliver = np.random.default_rng(0), Deliver("depth", size)
    frames = [deliver(render_depth(g, rng)) for g in GESTURES for _ in range(5)]
    medians = [float(np.median(f[f > 0])) for f in frames]
    return 0.9 * min(medians), 1.1 * max(medians)


def test_an_audio_window_comes_every_hop(bundle, recording, figures):
    """Windows one hop of audio apart, by their capture stamps. A gap (the driver reopening a device
    that failed, or dropping blocks stamped out of time) restarts the window on a new phase: it is
    counted, and the cadence is the median interval."""
    if "audio" not in recording.streams:
        pytest.skip("the bundle uses no audio stream")
    spec = next(s for s in bundle.modalities if s.sensor == "audio")
    hop = 1 / spec.rate_hz
    times, mic, last = recording.times("audio"), recording.sensors["audio"], recording.last["audio"]
    intervals = np.diff(times)
    expected = (times[-1] - times[0]) / hop + 1
    figures.sample("audio window interval", intervals * 1000, "ms")
    figures.add("audio window interval median", float(np.median(intervals)) * 1000, "ms", f"{hop * 1000:g} ms ± 5 %")
    on_hop = float(np.mean(np.abs(intervals / hop - 1) <= 0.05))
    figures.add("audio windows one hop apart", on_hop, "", "1.0 without gaps")
    figures.add("audio windows", len(times), "", f"{expected:.0f} at one per hop")
    figures.add("audio gaps", int(np.sum(intervals > 1.5 * hop)))
    figures.add("audio silent windows", recording.silent["audio"], "", f"< {len(times)}")
    for kind in ("overflows", "dropped_blocks", "reconnects"):
        figures.add(f"audio {kind}", mic.counters[kind], "", "0" if kind != "reconnects" else "")
    assert abs(np.median(intervals) / hop - 1) <= 0.05, f"a window every {np.median(intervals) * 1000:.1f} ms"
    assert last.shape == (round(spec.sample_rate * spec.window_s),) and np.abs(last).max() > 0, "a window of sound"
    assert recording.silent["audio"] < len(times), "the microphone hears something (not digital silence throughout)"
    assert mic.counters["overflows"] == 0 and mic.counters["dropped_blocks"] == 0, dict(mic.counters)


def _skew_ms(rec: Recording, camera: str) -> float:
    """Where the audio's stamps sit against the camera's, each measured from its arrival on the
    runtime's clock: by the least-delayed sample of each, which a busy machine's late deliveries
    cannot move (the camera driver maps its clock the same way)."""
    audio, video = (max(t - a for t, a in rec.samples[m]) for m in ("audio", camera))
    return (audio - video) * 1000


def test_the_configured_audio_video_offset_moves_the_audio_stamps_by_itself(hil_rig, bundle, recording, figures):
    """``[sensors.audio] offset_ms`` as time-offset calibration writes it (``edgefusion
    calibrate-offset``): a second recording with it set moves the audio stamps by that much
    against the video's, on the runtime's clock."""
    cameras = _cameras(recording)
    if "audio" not in recording.streams or not cameras:
        pytest.skip("the bundle uses no audio and camera streams to offset")
    base = Config()
    base.sensors["audio"].offset_ms = OFFSET_MS
    offset = _record(hil_rig, bundle, base)
    before, after = _skew_ms(recording, cameras[0]), _skew_ms(offset, cameras[0])
    figures.add("audio-video stamp skew, no offset", before, "ms")
    figures.add("audio-video offset configured", OFFSET_MS, "ms")
    figures.add("audio-video offset measured", after - before, "ms", f"{OFFSET_MS:g} ± 10 ms")
    assert offset.sensors["audio"].offset_s == OFFSET_MS / 1000, "the config's offset reached the driver"
    assert abs(after - before - OFFSET_MS) <= 10, f"the audio moved {after - before:.1f} ms, not {OFFSET_MS:g}"
    figures.needs_jetson(
        "the rig's true audio-video offset: claps seen and heard (edgefusion record, then calibrate-offset)"
    )
