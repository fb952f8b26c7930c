"""Format 2: a bundle declares its own modalities, and the runtime (loader, backend, sync, loop,
bench, eval) takes them from it: any 1 to 3, any names, fed by the streams they name, at the
shapes, sample rates and windows the manifest gives. Bundles here are built without torch
(tests/tiny_bundle.py); every bad manifest field is refused in one line naming its key."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest
from collecting_sink import Lines
from tiny_bundle import make_bundle

from edgefusion.backends import make_backend
from edgefusion.backends.onnxruntime.session import open_session
from edgefusion.bench import bench_inputs, run_bench
from edgefusion.bundle import load_bundle
from edgefusion.bundle.loader import sha256_file
from edgefusion.errors import BundleError, EdgefusionError
from edgefusion.evaluate import evaluate, heldout
from edgefusion.loop import Runtime
from edgefusion.modalities import STREAMS, all_patterns, pattern_name
from edgefusion.sensors.base import Sample, SensorState
from edgefusion.service.heartbeat import status_line
from edgefusion.summary import SessionSummary

CASES = {
    "depth+audio, 0.5 s window": [("depth", "depth", (1, 96, 128)), ("mic", "audio", (8000,), 16000, 0.5)],
    "rgb 224x224": [("rgb", "rgb", (3, 224, 224)), ("audio", "audio", (16000,), 16000, 1.0)],
    "names not the streams": [
        ("cam", "rgb", (3, 48, 64)),
        ("range", "depth", (1, 40, 56)),
        ("ear", "audio", (4000,), 8000, 0.5),
    ],
    "one modality": [("mic", "audio", (8000,), 16000, 0.5)],
}


@pytest.fixture(scope="module", params=list(CASES))
def bundle(request, tmp_path_factory):
    return load_bundle(make_bundle(tmp_path_factory.mktemp("b") / "bundle", CASES[request.param]))


def _monolithic(bundle, inputs, present) -> np.ndarray:
    session = open_session(bundle.graph_bytes("fp32", "monolithic"), optimize=False)
    feed = {name: inputs[m][None] for name, m in zip(bundle.manifest["monolithic"]["inputs"], bundle.names)}
    feed["present"] = np.array([present], np.float32)
    return session.run(["logits"], feed)[0][0]


def test_the_manifest_is_the_contract(bundle):
    declared = bundle.manifest["modalities"]
    assert bundle.names == tuple(entry["name"] for entry in declared)
    for entry, spec in zip(declared, bundle.modalities):
        assert spec.sensor == entry["sensor"] and spec.shape == tuple(entry["input"]["shape"][1:])
        assert bundle.modality(spec.name) is spec and bundle.stream(spec.sensor) is spec
        if spec.sensor == "audio":
            assert spec.samples == round(spec.sample_rate * spec.window_s)
    unused = [s for s in STREAMS if s not in {spec.sensor for spec in bundle.modalities}]
    assert all(bundle.stream(s) is None for s in unused)
    with pytest.raises(BundleError, match=f"no modality 'nope'; choose one of {', '.join(bundle.names)}$"):
        bundle.modality("nope")


def test_every_presence_pattern_runs_and_matches_the_monolithic_graph(bundle):
    inputs, _ = bench_inputs(bundle, 1)
    inputs = {m: x[0] for m, x in inputs.items()}
    with make_backend("onnxruntime", bundle, "fp32") as backend:
        for m in bundle.names:
            assert backend.input_buffer(m).shape == (1, *bundle.modality(m).shape)
            np.copyto(backend.input_buffer(m)[0], inputs[m])
        seen = set()
        for present in all_patterns(len(bundle.names)):
            backend.submit([True] * len(present), present)
            logits, probs = backend.wait()
            ref = _monolithic(bundle, inputs, present)
            np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)
            assert abs(float(probs.sum()) - 1) < 1e-5
            seen.add(tuple(np.round(logits, 4)))
        assert len(seen) == len(all_patterns(len(bundle.names))), "each pattern gives its own answer"
        everything = [True] * len(bundle.names)
        backend.submit(everything, everything)
        runs = dict(backend.stats.encoder_runs)
        backend.submit([False] * len(bundle.names), everything)
        assert backend.stats.encoder_runs == runs, "nothing new: every projection cached"
        with pytest.raises(ValueError, match="one fresh and one present flag per modality"):
            backend.submit([True] * 4, [True] * 4)


class _Source:
    """A SampleSource holding one sample, renewed by ``renew`` (no thread)."""

    dropped: dict[str, int] = {}

    def __init__(self, data):
        self.data, self.counters, self.seq, self.t = data, Counter(), 1, 0.0

    def renew(self, t):
        self.seq, self.t = self.seq + 1, t

    def poll(self, max_age_s, now=None):
        return Sample(self.data, self.t, self.seq), SensorState.OK, ""

    def connect(self):
        pass

    def disconnect(self):
        pass


def test_results_key_by_modality_name_and_a_stream_without_a_sensor_is_absent(tmp_path):
    mods = [("cam", "rgb", (3, 32, 32)), ("range", "depth", (1, 32, 32)), ("ear", "audio", (4000,), 8000, 0.5)]
    bundle = load_bundle(make_bundle(tmp_path / "b", mods))
    inputs, _ = bench_inputs(bundle, 1)
    sensors = {"rgb": _Source(inputs["cam"][0]), "audio": _Source(inputs["ear"][0])}  # no depth camera
    lines = Lines()
    backend = make_backend("onnxruntime", bundle, "fp32")
    runtime = Runtime(backend, sensors, dict.fromkeys(STREAMS, 1.0), 30.0, (lines,), flush_s=0.01)
    runtime.start()
    summary = SessionSummary(truth=None)
    try:
        runtime.tick(0.0)
        sensors["rgb"].renew(0.03)
        runtime.tick(0.04)
        runtime.writer.wait_written()
        status = status_line(runtime, lines.lines[-1], 30.0)
    finally:
        runtime.stop()
    first, second = (orjson.loads(line) for line in lines.lines)
    for line in (first, second):
        summary.add(line)
    report = summary.report(runtime)
    assert report["encoder_runs"] == {"cam": 2, "range": 0, "ear": 1} and report["head_runs"] == 2
    assert report["encoder_runs_saved"] == pytest.approx(1 - 3 / 6)
    assert "cam OK, range FAILED, ear OK; intent " in status
    assert first["present"] == {"cam": True, "range": False, "ear": True}
    assert first["sensors"] == {"cam": "OK", "range": "FAILED", "ear": "OK"}
    assert second["fresh"] == {"cam": True, "range": False, "ear": False}
    assert second["sample_t"] == {"cam": 0.03, "range": None, "ear": 0.0}
    ref = _monolithic(bundle, {**{m: x[0] for m, x in inputs.items()}}, (True, False, True))
    probs = np.exp(ref - ref.max()) / np.exp(ref - ref.max()).sum()
    np.testing.assert_allclose(list(second["probs"].values()), probs, rtol=1e-5)
    assert backend.stats.encoder_runs == {"cam": 2, "range": 0, "ear": 1}


def test_a_reload_onto_other_modalities_is_refused_and_the_running_model_goes_on(tmp_path, capfd):
    mods = [("cam", "rgb", (3, 32, 32)), ("ear", "audio", (4000,), 8000, 0.5)]
    running = make_backend("onnxruntime", load_bundle(make_bundle(tmp_path / "a", mods)), "fp32")
    same = load_bundle(make_bundle(tmp_path / "same", mods, seed=1))  # other weights, same modalities
    wider = load_bundle(make_bundle(tmp_path / "wider", [mods[0], ("ear", "audio", (8000,), 8000, 1.0)]))
    runtime = Runtime(running, {}, dict.fromkeys(STREAMS, 1.0), 30.0)
    runtime.start()
    try:
        refused = make_backend("onnxruntime", wider, "fp32")
        refused.activate()
        runtime.swap_backend(refused)
        assert runtime.backend is running and not refused._active
        assert (
            "reload refused: its modalities (cam from rgb [3, 32, 32], ear from audio [8000])" in capfd.readouterr().err
        )
        swapped = make_backend("onnxruntime", same, "fp32")
        swapped.activate()
        runtime.swap_backend(swapped)
        assert runtime.backend is swapped and not running._active
    finally:
        runtime.stop()


def test_bench_runs_on_any_bundle(bundle):
    inputs, source = bench_inputs(bundle, 4)
    assert source == "random values in each stream's range"
    for spec in bundle.modalities:
        x = inputs[spec.name]
        assert x.shape == (4, *spec.shape) and x.dtype == np.float32
        low, high = {"rgb": (0, 255), "depth": (0, 10), "audio": (-32767, 32767)}[spec.sensor]
        assert low <= x.min() and x.max() <= high and x.std() > 0
    report = run_bench(bundle, make_backend("onnxruntime", bundle, "fp32"), ticks=100, alloc_ticks=50)
    assert report["robot_time"]["rate_hz"] == {spec.name: min(spec.rate_hz, 30) for spec in bundle.modalities}
    assert set(report["graph_cpu_ms"]) == {*bundle.names, "head"}
    cpu = report["cpu_s_per_robot_s"]
    assert all(v > 0 for v in cpu.values())
    assert report["caching_ideal_ratio"] == pytest.approx(cpu["monolithic"] / cpu["ideal"])
    # Every modality encoded at its own rate: the 30 Hz cameras every tick, audio windows 10 per second.
    runs = report["encoder_runs"]
    for spec in bundle.modalities:
        assert runs[spec.name] / runs[bundle.names[0]] == pytest.approx(
            min(spec.rate_hz, 30) / min(bundle.modalities[0].rate_hz, 30), rel=0.05
        )


def test_eval_needs_held_out_data_for_a_bundle_that_is_not_the_task(bundle, tmp_path):
    with pytest.raises(EdgefusionError) as err:
        heldout(bundle, 10)
    assert "\n" not in str(err.value) and "not a model of the built-in task" in str(err.value)
    assert all(m in str(err.value) for m in bundle.names) and "--data" in str(err.value)

    inputs, _ = bench_inputs(bundle, 12, seed=5)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, len(bundle.labels), 12)
    path = tmp_path / "heldout.npz"
    np.savez(path, labels=np.array(bundle.labels)[labels], **inputs)  # labels as strings
    data = heldout(bundle, 10, path)
    assert len(data) == 10 and data.labels.tolist() == labels[:10].tolist()
    with make_backend("onnxruntime", bundle, "fp32") as backend:
        report = evaluate(bundle, {"fp32": backend}, data, noise=False)
    full = all_patterns(len(bundle.names))[0]
    preds = [int(np.argmax(_monolithic(bundle, {m: x[i] for m, x in inputs.items()}, full))) for i in range(10)]
    assert report["accuracy"]["fp32"][pattern_name(bundle.names, full)] == np.mean(np.array(preds) == labels[:10])
    assert set(report["accuracy"]["fp32"]) == {pattern_name(bundle.names, p) for p in all_patterns(len(bundle.names))}
    assert set(report["robustness"]) == (set(bundle.names) if len(bundle.names) > 1 else set())


def test_a_model_of_the_built_in_task_on_some_streams_gets_the_tasks_data(tmp_path):
    from edgefusion.task import HEIGHT, INTENTS, SAMPLE_RATE, WIDTH, generate

    mods = [("range", "depth", (1, HEIGHT, WIDTH)), ("mic", "audio", (SAMPLE_RATE,), SAMPLE_RATE, 1.0)]
    heldout_seed = {"heldout": {"task_seed": 2}}
    bundle = load_bundle(make_bundle(tmp_path / "b", mods, labels=INTENTS, accuracy=heldout_seed))
    data, batch = heldout(bundle, 5), generate(2, 5)
    assert data.source == "the built-in task, seed 2" and data.labels.tolist() == batch.intent.tolist()
    np.testing.assert_array_equal(data.inputs["range"], batch.depth)
    np.testing.assert_array_equal(data.inputs["mic"], batch.audio)
    inputs, source = bench_inputs(bundle, 3, seed=7)
    assert source == "the built-in task's data" and set(inputs) == {"range", "mic"}
    np.testing.assert_array_equal(inputs["range"], generate(7, 3).depth)
    # The task's labels at other shapes: not the task's data, so random inputs and no held-out set.
    other = load_bundle(make_bundle(tmp_path / "o", [("range", "depth", (1, 32, 32))], labels=INTENTS))
    assert bench_inputs(other, 2)[1] == "random values in each stream's range"
    with pytest.raises(EdgefusionError, match="not a model of the built-in task"):
        heldout(other, 5)


@pytest.mark.parametrize(
    "breaks, says",
    [
        (lambda a: a.pop(next(iter(a))), "holds arrays"),
        (lambda a: a.update(labels=np.array([[0]])), "labels must be a non-empty 1-D array"),
        (lambda a: a.update(labels=np.full(3, 99)), "class indices 0..2"),
        (lambda a: a.update(labels=np.array(["yes", "no", "perhaps"])), "'perhaps' is not one of"),
        (lambda a: a.update({k: v[:, :1] for k, v in a.items() if k != "labels"}), "has shape"),
    ],
    ids=["missing-array", "labels-2d", "labels-out-of-range", "unknown-label", "wrong-shape"],
)
def test_bad_held_out_data_is_refused_in_one_line(tmp_path, breaks, says):
    bundle = load_bundle(make_bundle(tmp_path / "b", CASES["names not the streams"]))
    inputs, _ = bench_inputs(bundle, 3)
    arrays = {**inputs, "labels": np.array([0, 1, 2])}
    breaks(arrays)
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(EdgefusionError) as err:
        heldout(bundle, 3, tmp_path / "d.npz")
    assert says in str(err.value) and "\n" not in str(err.value) and "--data" in str(err.value)


# -- bad manifests -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    mods = [("cam", "rgb", (3, 32, 32)), ("mic", "audio", (8000,), 16000, 0.5)]
    return make_bundle(tmp_path_factory.mktemp("good") / "bundle", mods)


def _entry(name):
    return lambda doc: next(e for e in doc["modalities"] if e["name"] == name)


def _set(name, key, value):
    return lambda doc: _entry(name)(doc).update({key: value})


def _input_shape(name, shape):
    return lambda doc: _entry(name)(doc)["input"].update(shape=["batch", *shape])


BAD = [
    ("format-1", lambda d: d.update(format_version=1), "format version 1 is not supported"),
    ("modalities-an-object", lambda d: d.update(modalities={"cam": d["modalities"][0]}), "modalities is missing"),
    ("modalities-empty", lambda d: d.update(modalities=[]), "a list of 1 to 3 modalities"),
    ("modalities-4", lambda d: d["modalities"].extend(d["modalities"][:2]), "a list of 1 to 3 modalities"),
    ("duplicate-name", _set("mic", "name", "cam"), "modalities[1].name 'cam' names two modalities"),
    ("duplicate-sensor", _set("mic", "sensor", "rgb"), "modalities[1].sensor 'rgb' feeds both 'cam' and 'mic'"),
    ("unknown-sensor", _set("cam", "sensor", "lidar"), "modalities[0].sensor is missing or is not one of"),
    ("name-head", _set("cam", "name", "head"), "modalities[0].name"),
    ("name-present", _set("mic", "name", "present"), "modalities[1].name"),
    ("name-uppercase", _set("cam", "name", "Cam"), "modalities[0].name"),
    ("name-too-long", _set("cam", "name", "c" * 33), "modalities[0].name"),
    ("samples-not-rate-times-window", _set("mic", "window_s", 0.25), "is [4000] (sample_rate × window_s)"),
    ("sample-rate-low", _set("mic", "sample_rate", 500), "modalities[1].sample_rate"),
    ("sample-rate-float", _set("mic", "sample_rate", 16000.0), "modalities[1].sample_rate"),
    ("window-too-long", _set("mic", "window_s", 11), "modalities[1].window_s"),
    ("window-missing", lambda d: _entry("mic")(d).pop("window_s"), "modalities[1].window_s"),
    ("sample-rate-on-a-camera", _set("cam", "sample_rate", 16000), "modalities[0].sample_rate is set"),
    ("rate-zero", _set("cam", "rate_hz", 0), "modalities[0].rate_hz"),
    ("rate-a-string", _set("cam", "rate_hz", "30"), "modalities[0].rate_hz"),
    ("rate-missing", lambda d: _entry("mic")(d).pop("rate_hz"), "modalities[1].rate_hz"),
    ("rgb-one-channel", _input_shape("cam", (1, 32, 32)), "the rgb stream delivers [3, height, width]"),
    ("image-side-4", _input_shape("cam", (3, 4, 32)), "sides of 8 to 4096"),
    ("image-2d", _input_shape("cam", (32, 32)), "modalities[0].input.shape"),
    ("depth-three-channels", lambda d: _set("cam", "sensor", "depth")(d), "the depth stream delivers [1, height"),
    ("head-inputs-one", lambda d: d["head"].update(inputs=["p_cam"]), "head is missing"),
    ("monolithic-no-presence", lambda d: d["monolithic"].update(inputs=["cam", "mic"]), "monolithic is missing"),
    ("graph-of-no-modality", lambda d: d["variants"]["fp32"]["graphs"].update(rgb="fp32/cam.onnx"), "has 'rgb'"),
    ("graph-missing", lambda d: d["variants"]["fp32"]["graphs"].pop("mic"), "variants.fp32.graphs.mic"),
]


@pytest.mark.parametrize("edit, says", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_a_bad_modality_field_is_refused_in_one_line(good, tmp_path, edit, says):
    root = tmp_path / "bundle"
    shutil.copytree(good, root)
    doc = json.loads((root / "manifest.json").read_text())
    edit(doc)
    (root / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError) as err:
        load_bundle(root)
    message = str(err.value)
    assert says in message and "\n" not in message and str(root) in message


def test_absent_npz_must_hold_exactly_the_modalities(good, tmp_path):
    root = tmp_path / "bundle"
    shutil.copytree(good, root)
    with np.load(root / "fp32/absent.npz") as z:
        arrays = {"camera": z["cam"], "mic": z["mic"]}
    np.savez(root / "fp32/absent.npz", **arrays)
    doc = json.loads((root / "manifest.json").read_text())
    doc["files"]["fp32/absent.npz"] = {"sha256": sha256_file(root / "fp32/absent.npz"), "bytes": 0}
    doc["files"]["fp32/absent.npz"]["bytes"] = (root / "fp32/absent.npz").stat().st_size
    (root / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(
        BundleError, match=r"holds arrays \['camera', 'mic'\], not exactly the modalities \['cam', 'mic'\]"
    ):
        load_bundle(root)
