"""The virtual rig: the runtime on the real RealSense and PortAudio libraries, no hardware.

The camera is an ``rs.software_device`` read by the RealSense driver; the microphone is a private
PulseAudio's null-sink monitor captured through PortAudio. Each run starts and stops its own
sound server.
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pyrealsense2")
pytest.importorskip("pyaudio")
if shutil.which("pulseaudio") is None or shutil.which("pacat") is None:
    pytest.skip("needs pulseaudio and pulseaudio-utils", allow_module_level=True)


def _cli(*args, timeout=120):
    r = subprocess.run([sys.executable, "-m", "edgefusion.cli", *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_the_virtual_rig_runs_the_loop_through_faults_of_real_devices():
    seconds = 12.0
    r = _cli("demo", "--rig", "virtual", "--seconds", str(seconds), "--json", "--faults", "rgb:stop@3-5,audio:stop@4-6")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) >= 0.95 * 30 * (seconds - 0.2), "ticks kept their rate"
    t0 = lines[0]["t"]

    def during(a, b):
        return [x for x in lines if a <= x["t"] - t0 < b]

    assert all(x["present"] == {"rgb": True, "depth": True, "audio": True} for x in during(2.0, 2.9)), "all up"
    assert not any(x["present"]["rgb"] or x["present"]["depth"] for x in during(3.3, 5.0)), "camera stopped"
    assert all(x["present"]["audio"] is False for x in during(4.3, 6.0)), "sound server killed"
    assert {x["sensors"]["audio"] for x in during(4.3, 6.0)} & {"FAILED", "RECONNECTING"}
    back = during(10.0, seconds)
    assert back and all(x["present"]["rgb"] and x["present"]["audio"] for x in back), "both came back by themselves"
    summary = json.loads(r.stderr.strip().splitlines()[-1])
    assert summary["accuracy_by_pattern"]["rgb+depth+audio"]["accuracy"] >= 0.6


def test_a_session_recorded_on_the_virtual_rig_replays_to_the_same_results(tmp_path):
    from edgefusion.backends import make_backend
    from edgefusion.bundle import default_bundle_path, load_bundle
    from edgefusion.loop import Runtime
    from edgefusion.session.layout import load_session
    from edgefusion.session.replay import replay_sources, replay_tick

    out = tmp_path / "virtual"
    _cli("record", "--source", "virtual", "--out", str(out), "--seconds", "5")
    session = load_session(out)
    assert session.complete and len(session.windows) >= 20 and len(session.frames["rgb"]) >= 100
    with make_backend("onnxruntime", load_bundle(default_bundle_path()), "fp32") as backend:
        sources = replay_sources(session)
        runtime = Runtime(backend, sources, {"rgb": 0.1, "depth": 0.1, "audio": 0.25})
        runtime.start()
        got = [replay_tick(runtime, sources, tick) for tick in session.ticks]
        runtime.stop()
    full = [(g, w) for g, w in zip(got, session.ticks) if all(w["present"].values())]
    assert len(full) >= 60, "the real devices delivered every modality for most of the run"
    assert all((g.probs is None) == (w["probs"] is None) for g, w in zip(got, session.ticks))
    pairs = [(g, w) for g, w in zip(got, session.ticks) if g.probs is not None]  # ticks with an answer
    diffs = [np.abs(np.array(g.probs) - list(w["probs"].values())).max() for g, w in pairs]
    worst = float(max(diffs))
    assert worst <= 1e-5, f"replayed probabilities differ by {worst}"


def test_the_virtual_rig_makes_only_the_devices_a_bundle_uses_at_its_sizes_and_rate(capsys):
    """A depth + audio bundle (160x120, 0.5 s at 8 kHz): a software camera with no colour stream,
    a sound server at 8 kHz; a fault on the colour stream is ignored with one warning."""
    from stream_specs import DEPTH_AUDIO
    from waiting import wait_for

    from edgefusion.config import Config
    from edgefusion.rigs import make_rig

    cfg = Config()
    cfg.source.kind, cfg.source.faults = "virtual", "rgb:stop@0-9,depth:stall@1.5-3"
    rig = make_rig(cfg, DEPTH_AUDIO, ("left", "right"))
    assert "faults on rgb ignored: the bundle uses no rgb stream" in capsys.readouterr().err
    assert set(rig.sensors) == {"depth", "audio"} and rig.truth is None, "a user's labels: unscored"
    try:
        rig.start()
        for s in rig.sensors.values():
            s.connect()
        depth, audio = rig.sensors["depth"], rig.sensors["audio"]
        assert wait_for(lambda: depth.read_latest(0.2) is not None and audio.read_latest(0.3) is not None, 15.0)
        frame, window = depth.read_latest(0.2).data, audio.read_latest(0.3).data
        assert frame.shape == (1, 120, 160) and frame.max() > 0
        assert window.shape == (4000,) and np.abs(window).max() > 0
        assert wait_for(lambda: depth.read_latest(0.2) is None, 5.0), "the stall stops the frames"
        assert wait_for(lambda: depth.read_latest(0.2) is not None, 10.0), "and they come back"
    finally:
        for s in rig.sensors.values():
            s.disconnect()
        rig.close()
