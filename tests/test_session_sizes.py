"""Sessions of a bundle that is not the demo's: recorded at its modalities' sizes and rate, and
replayed at another bundle's (frames resized, audio resampled, a missing stream absent)."""

import json

import numpy as np
import pytest
from stream_specs import DEPTH_AUDIO, audio, camera
from waiting import wait_for

pytest.importorskip("pyrealsense2")
soxr = pytest.importorskip("soxr")

from edgefusion.sensors.base import SensorState  # noqa: E402
from edgefusion.session.layout import EVENTS_FILE, load_session  # noqa: E402
from edgefusion.session.recorder import SessionRecorder  # noqa: E402
from edgefusion.session.replay import replay_sources, replay_tick  # noqa: E402
from edgefusion.sim.simulated import simulated_rig  # noqa: E402


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """1.5 s of the simulated rig for a depth (160x120) + audio (0.5 s at 8 kHz) bundle whose
    modalities are named "range" and "speech", with one result line as the loop writes it."""
    out = tmp_path_factory.mktemp("sizes") / "session"
    rig = simulated_rig(DEPTH_AUDIO, seed=3)
    recorder = SessionRecorder(out, rig.sensors, DEPTH_AUDIO, {"source": "simulated"})
    t0 = rig.clock.start()
    recorder.start(t0)
    for sensor in rig.sensors.values():
        sensor.connect()
    try:
        assert wait_for(lambda: recorder.written["audio"] >= 8, 20.0), recorder.written
        depth, speech = rig.sensors["depth"].read_latest(1.0), rig.sensors["audio"].read_latest(1.0)
        line = {
            "t": max(depth.t, speech.t) + 0.01,
            "label": "stop",
            "probs": {"stop": 1.0},
            "present": {"range": True, "speech": True},
            "sensors": {"range": "OK", "speech": "OK"},
            "sample_t": {"range": depth.t, "speech": speech.t},
        }
        sink = recorder.sink()
        sink.write(json.dumps(line))
    finally:
        for sensor in rig.sensors.values():
            sensor.disconnect()
    recorder.close()
    return out, line


def test_a_session_is_recorded_at_its_modalities_sizes_keyed_by_stream(recorded):
    out, line = recorded
    session = load_session(out)
    assert session.complete and not session.warnings
    assert any(out.glob("camera.*")) and set(session.frames) == {"depth"}, "depth only: no colour stream"
    start = json.loads((out / EVENTS_FILE).read_text().splitlines()[0])
    assert start["streams"] == ["depth", "audio"] and start["sample_rate"] == 8000 and start["window_s"] == 0.5
    assert [m["name"] for m in start["modalities"]] == ["range", "speech"]
    assert all(f.shape == (1, 120, 160) for _, f in session.frames["depth"])
    assert session.windows and all(len(w) == 4000 for _, w in session.windows)
    tick = session.ticks[-1]
    assert tick["sample_t"] == {"depth": line["sample_t"]["range"], "audio": line["sample_t"]["speech"]}
    assert session.states == {"depth": [(line["t"], "OK")], "audio": [(line["t"], "OK")]}


def test_a_session_replays_at_another_bundles_sizes_and_rate(recorded):
    out, line = recorded
    as_recorded = load_session(out)
    other = (camera("colour", "rgb", 48, 64), camera("d", "depth", 60, 80), audio("a", 16000, 0.25))
    session = load_session(out, other)
    assert session.warnings == [f"{out}: no rgb stream was recorded; modality 'colour' replays as absent"]
    # Depth by nearest from the recorded 160x120 (which halves exactly): the same metres.
    for (t, got), (t_rec, rec) in zip(session.frames["depth"], as_recorded.frames["depth"]):
        assert t == t_rec and got.shape == (1, 60, 80)
        np.testing.assert_array_equal(got[0], rec[0][1::2, 1::2])
    # Audio at 16 kHz, windows of 0.25 s ending where the recorded ones end.
    upsampled = np.clip(np.rint(soxr.resample(as_recorded.audio, 8000, 16000, quality="HQ")), -32768, 32767)
    assert session.facts["sample_rate"] == 16000 and session.facts["recorded_sample_rate"] == 8000
    assert len(session.windows) == len(as_recorded.windows)
    for (t, w), end, (t_rec, _), end_rec in zip(
        session.windows, session.window_ends, as_recorded.windows, as_recorded.window_ends
    ):
        assert t == t_rec and end == 2 * end_rec and len(w) == 4000
        np.testing.assert_array_equal(w, upsampled[end - 4000 : end])
    sources = replay_sources(session, other)
    assert set(sources) == {"rgb", "depth", "audio"}
    assert sources["rgb"].poll(1.0, line["t"]) == (None, SensorState.FAILED, "not in this recording")


def test_a_recorded_tick_pins_the_samples_it_used_by_stream(recorded):
    out, line = recorded
    session = load_session(out)
    sources = replay_sources(session, DEPTH_AUDIO)

    class Ticks:
        """What replay_tick needs of a runtime: a tick that polls the sources."""

        def tick(self, t):
            return {m: s.poll(10.0, t)[0] for m, s in sources.items()}

    got = replay_tick(Ticks(), sources, session.ticks[-1])
    assert got["depth"].t == pytest.approx(line["sample_t"]["range"], abs=1e-6)
    assert got["audio"].t == pytest.approx(line["sample_t"]["speech"], abs=1e-6)
