"""Recording and replay on the real RealSense library: a recorded run replays to the same results."""

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("pyrealsense2")

from stream_specs import DEMO  # noqa: E402

from edgefusion.backends import make_backend  # noqa: E402
from edgefusion.bundle import default_bundle_path, load_bundle  # noqa: E402
from edgefusion.errors import EdgefusionError  # noqa: E402
from edgefusion.loop import Runtime  # noqa: E402
from edgefusion.session.layout import EVENTS_FILE, load_session  # noqa: E402
from edgefusion.session.replay import replay_sources, replay_tick  # noqa: E402

RECORD_S = 4.0


def _cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "edgefusion.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A run of the simulated rig, recorded with its results (a camera outage included)."""
    root = tmp_path_factory.mktemp("rec")
    cfg = root / "rig.toml"
    cfg.write_text('[source]\nfaults = "rgb:stop@1.5-2.2"\n')
    out = root / "session"
    r = _cli("record", "--out", str(out), "--config", str(cfg), "--seconds", str(RECORD_S), "--json")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout.strip().splitlines()[-1])


def test_a_recorded_session_holds_what_the_sensors_delivered(recorded):
    out, report = recorded
    session = load_session(out)
    assert session.complete and not session.warnings
    assert {p.name for p in out.iterdir()} >= {"audio.wav", "events.jsonl", "session.json"}
    n_rgb, n_depth = len(session.frames["rgb"]), len(session.frames["depth"])
    assert n_depth >= 0.8 * 30 * RECORD_S, "depth at ~30 fps"
    assert n_rgb < n_depth - 10, "the camera outage left a gap in rgb"
    assert len(session.windows) >= 0.6 * 10 * (RECORD_S - 1), "audio windows at 10 Hz after the first second"
    assert report["recording"]["samples"] == {"rgb": n_rgb, "depth": n_depth, "audio": len(session.windows)}
    assert session.frames["rgb"][0][1].shape == (3, 48, 64) and session.frames["depth"][0][1].shape == (1, 48, 64)
    times = [t for t, _ in session.frames["depth"]]
    assert times == sorted(times) and session.t_start <= times[0]
    assert session.labels and session.ticks, "ground truth and results are in the event log"
    assert any(state in ("FAILED", "RECONNECTING") for _, state in session.states["rgb"])


def test_replay_reproduces_the_recorded_results(recorded):
    out, _ = recorded
    session = load_session(out)
    bundle = load_bundle(default_bundle_path())
    with make_backend("onnxruntime", bundle, "fp32") as backend:
        sources = replay_sources(session)
        runtime = Runtime(backend, sources, {"rgb": 0.1, "depth": 0.1, "audio": 0.25})
        runtime.start()
        results = [replay_tick(runtime, sources, tick) for tick in session.ticks]
        runtime.stop()
    assert len(results) == len(session.ticks) > 60
    worst, present_patterns = 0.0, set()
    for got, want in zip(results, session.ticks):
        assert got.label == want["label"]
        assert dict(zip(("rgb", "depth", "audio"), got.present)) == want["present"]
        assert (got.probs is None) == (want["probs"] is None), "a tick without an answer replays as one"
        if got.probs is not None:
            worst = max(worst, float(np.max(np.abs(np.array(got.probs) - list(want["probs"].values())))))
        present_patterns.add(got.present)
    assert worst <= 1e-5, f"replayed probabilities differ by {worst}"
    assert len(present_patterns) >= 2, "the outage is replayed too"


def test_replay_from_the_cli_at_max_speed_and_in_real_time(recorded, tmp_path):
    out, _ = recorded
    r = _cli("demo", "--source", f"replay:{out}", "--max-speed", "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == len(load_session(out).ticks)
    summary = json.loads(r.stderr.strip().splitlines()[-1])
    assert summary["accuracy_by_pattern"], "scored against the recorded labels"

    t0 = time.monotonic()
    r = _cli("demo", "--source", f"replay:{out}", "--seconds", "1.5", "--json")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 >= 1.5, "real time waits for the recorded pace"
    assert sum(json.loads(x)["present"]["depth"] for x in r.stdout.splitlines()) >= 30


def test_a_session_without_the_camera_replays_it_as_absent(recorded, tmp_path):
    out, _ = recorded
    partial = tmp_path / "audio-only"
    shutil.copytree(out, partial)
    for f in partial.glob("camera.*"):
        f.unlink()
    sources = replay_sources(load_session(partial))
    t = load_session(partial).ticks[-1]["t"]
    assert sources["rgb"].poll(0.1, t) == (None, "FAILED", "not in this recording")
    assert sources["audio"].poll(0.25, t)[0] is not None


def test_a_killed_recorder_leaves_a_readable_partial_session(tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefusion.cli", "record", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        events = out / EVENTS_FILE
        if events.exists() and events.read_bytes().count(b'"window"') >= 5:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    session = load_session(out)
    assert not session.complete and session.warnings and "incomplete" in session.warnings[0]
    assert len(session.windows) >= 5 and len(session.frames["depth"]) > 10


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "events.jsonl").unlink(), "events.jsonl: missing, though session.json is there"),
        (lambda d: (d / "events.jsonl").write_bytes(b'{"t": 1, "kind": "start"}\n'), "session format"),
        (lambda d: _insert_garbage(d / "events.jsonl"), "not a JSON line"),
        (lambda d: next(d.glob("camera.*")).write_bytes(b"not a recording"), "not a RealSense recording"),
        (lambda d: _truncate(next(d.glob("camera.*"))), "truncated recording"),
        (lambda d: _truncate(d / "audio.wav"), "audio.wav"),
    ],
)
def test_a_damaged_session_is_refused_in_one_line(recorded, tmp_path, damage, message):
    out, _ = recorded
    copy = tmp_path / "damaged"
    shutil.copytree(out, copy)
    damage(copy)
    with pytest.raises(EdgefusionError, match=message):
        load_session(copy)
    r = _cli("demo", "--source", f"replay:{copy}", "--max-speed")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _insert_garbage(path):
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([*lines[:3], b"{garbage", *lines[3:]]))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_missing_session_folder_is_a_clear_error(tmp_path):
    r = _cli("run", "--config", "/dev/null", "--source", f"replay:{tmp_path / 'nope'}")
    assert r.returncode == 2 and "no such session folder" in r.stderr


def test_sessions_become_labelled_training_examples(recorded):
    from edgefusion.session.examples import session_batch
    from edgefusion.task import INTENTS

    out, _ = recorded
    session = load_session(out)
    batch = session_batch([out], INTENTS)
    assert 5 <= len(batch) <= len(session.windows)
    assert batch.rgb.shape[1:] == (3, 48, 64) and batch.audio.shape[1:] == (16000,)
    assert (batch.cues == -1).all(), "a recording does not know what each cue said"
    # Each example's label is the one recorded for its window's time.
    labelled = {session.label_at(t) for t, _ in session.windows}
    assert {INTENTS[i] for i in batch.intent} <= labelled
    spread = session_batch([out, out], INTENTS, max_examples=7)
    assert len(spread) == 7


def test_int8_calibrates_on_recorded_sessions(recorded, tmp_path):
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort
    from edgefusion.calibration.int8_set import CalibrationSet
    from edgefusion.export.quantize import quantize_graph

    from edgefusion.modalities import MODALITIES, all_patterns
    from edgefusion.session.examples import session_batch
    from edgefusion.task import INTENTS

    out, _ = recorded
    calib = CalibrationSet.from_batch(session_batch([out], INTENTS), f"session {out}")
    assert {tuple(p) for p in calib.present.tolist()} == {tuple(map(float, p)) for p in all_patterns(len(MODALITIES))}
    graph = quantize_graph(default_bundle_path() / "fp32" / "rgb.onnx", tmp_path / "rgb.onnx", calib)
    sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(graph)).graph.node)
    assert np.isfinite(sess.run(None, {sess.get_inputs()[0].name: calib.inputs["rgb"][:2]})[0]).all()


def test_training_takes_recorded_sessions(recorded):
    pytest.importorskip("torch")
    from edgefusion.export import task_data
    from edgefusion.export.models.model import FusionModel, ModelConfig
    from edgefusion.export.train import TrainConfig, train

    from edgefusion.session.examples import session_batch
    from edgefusion.task import INTENTS, generate

    out, _ = recorded
    data = task_data.concat([generate(5, 32), session_batch([out], INTENTS)])
    model = FusionModel(ModelConfig(fusion="lmf"))
    result = train(model, data, TrainConfig(epochs=1, batch_size=16), log=lambda m: None)
    assert np.isfinite(result["history"][0]["loss"])


def test_a_failing_writer_is_one_error_at_close_not_a_hang(tmp_path, monkeypatch):
    """The writer thread dies on its first frame (a full disk): the taps go on filling the queue,
    and close() must still return, with the error in one line."""
    import threading
    import types

    from edgefusion.sensors.base import Sample
    from edgefusion.session import recorder as recorder_module

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recorder_module, "CameraFileWriter", broken)
    camera = types.SimpleNamespace(modality="rgb", on_sample=None)
    rec = recorder_module.SessionRecorder(tmp_path / "s", {"rgb": camera}, DEMO, {})
    rec.start(0.0)
    frame = np.zeros((3, 48, 64), np.float32)
    for i in range(3000):  # well past the queue's bound
        camera.on_sample(Sample(frame, i / 30, i + 1))
    errors = []
    closing = threading.Thread(target=lambda: errors.append(pytest.raises(EdgefusionError, rec.close)))
    closing.start()
    closing.join(timeout=20)
    assert not closing.is_alive(), "close() hung on the dead writer's full queue"
    assert errors and "No space left" in str(errors[0].value)


def test_recording_into_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_text("")
    r = _cli("record", "--out", str(tmp_path / "f"), "--seconds", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "not an empty folder" in r.stderr
