"""No result lies: a backend output that is not a probability distribution never becomes a label.

The backend here is the real ONNX Runtime one on the shipped bundle, its probability buffer
overwritten after chosen runs (what a GPU fault or an overflowing fp16 head hands the loop); the
loop must judge what it is given, mark the line, count it, say it, and fail a backend that keeps
at it while the lines go on.
"""

import json
import time

import numpy as np
import orjson
import pytest
from cli_check import cli
from collecting_sink import Lines as _Lines

from edgefusion.backends.onnxruntime.runner import OnnxRuntimeBackend
from edgefusion.bench import _Replay, bench_inputs
from edgefusion.bundle import default_bundle_path, load_bundle
from edgefusion.bundle.loader import sha256_file
from edgefusion.loop import (
    BACKEND_ERROR,
    BACKEND_FAILED,
    BACKEND_RESTARTING,
    FAIL_AFTER_TICKS,
    NO_MODALITY,
    NON_FINITE,
    NOT_A_DISTRIBUTION,
    Runtime,
)
from edgefusion.modalities import STREAMS
from edgefusion.service.heartbeat import status_line


def _negative_but_summing_to_one(p):
    p[:] = 0.0
    p[0], p[1] = 1.25, -0.25


BAD_OUTPUTS = {
    "all NaN": (lambda p: p.fill(np.nan), NON_FINITE),
    "one NaN": (lambda p: p.__setitem__(2, np.nan), NON_FINITE),
    "+inf": (lambda p: p.__setitem__(0, np.inf), NON_FINITE),
    "-inf": (lambda p: p.__setitem__(1, -np.inf), NON_FINITE),
    "all zero": (lambda p: p.fill(0.0), NOT_A_DISTRIBUTION),
    "negative, summing to 1": (_negative_but_summing_to_one, NOT_A_DISTRIBUTION),
    "halved (sums to 0.5)": (lambda p: p.__imul__(0.5), NOT_A_DISTRIBUTION),
    "logits, not probabilities": (
        lambda p: p.__setitem__(slice(None), np.arange(len(p)) - 3.0),
        NOT_A_DISTRIBUTION,
    ),
}


class _Corrupted(OnnxRuntimeBackend):
    """The real backend; ``corrupt(run, activation, probs)`` may overwrite its probabilities
    after each run (``activation`` counts activations, so a fault can end with a reactivation)."""

    def __init__(self, bundle, corrupt, precision="fp32", fail_activation=None):
        super().__init__(bundle, precision)
        self.corrupt, self.fail_activation = corrupt, fail_activation
        self.runs = self.activations = 0

    def _activate_impl(self):
        self.activations += 1
        if self.activations == self.fail_activation:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        super()._activate_impl()

    def wait(self):
        logits, probs = super().wait()
        if not self._active:  # activation's warm-up tick: not one of the loop's runs
            return logits, probs
        self.runs += 1
        self.corrupt(self.runs, self.activations, probs)
        return logits, probs


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path())


def _runtime(backend, sink=None, sensors=None):
    if sensors is None:
        data, _ = bench_inputs(backend.bundle, 6)
        sensors = {spec.sensor: _Replay(data[spec.name], spec.rate_hz) for spec in backend.bundle.modalities}
    runtime = Runtime(backend, sensors, dict.fromkeys(STREAMS, 1.0), 30.0, (sink,) if sink else (), flush_s=0.01)
    runtime.start()
    return runtime


def _ticks(runtime, n):
    """``n`` more ticks on the robot clock; a new camera frame every tick, audio every third."""
    out = []
    for k in range(runtime.ticks, runtime.ticks + n):
        for s in runtime.sensors.values():
            s.advance(k, k / 30)
        out.append(runtime.tick(k / 30))
        time.sleep(0.0005)  # a reactivation's thread gets the GIL as it would between real ticks
    return out


def _strict_json(line):
    """The line parsed with NaN/Infinity refused: JSON that a strict consumer can read."""
    return json.loads(line, parse_constant=lambda token: pytest.fail(f"{token} in a result line"))


@pytest.mark.parametrize("kind", list(BAD_OUTPUTS))
def test_a_bad_output_is_never_a_label(bundle, kind, capfd):
    corrupt, reason = BAD_OUTPUTS[kind]
    sink = _Lines()
    backend = _Corrupted(bundle, lambda run, _, p: corrupt(p) if run in (4, 9) else None)
    runtime = _runtime(backend, sink)
    results = _ticks(runtime, 12)
    runtime.stop()
    for r in results:
        if r.tick in (4, 9):
            assert (r.label, r.confidence, r.probs, r.reason) == (None, None, None, reason)
        else:
            assert r.reason is None and r.label in bundle.labels and 0 < r.confidence <= 1
            assert r.confidence == max(r.probs) and r.label == bundle.labels[r.probs.index(r.confidence)]
    assert runtime.invalid == 2 and not runtime.backend_failed
    lines = [_strict_json(line) for line in sink.lines]
    assert [r["tick"] for r in lines] == list(range(1, 13))
    for line in (lines[3], lines[8]):
        assert line["label"] is None and line["confidence"] is None and line["probs"] is None
        assert line["reason"] == reason
    assert all(line["reason"] is None and abs(sum(line["probs"].values()) - 1) < 1e-3 for line in lines[:3])
    err = capfd.readouterr().err
    assert err.count(f"a result has no label: {reason} [") == 2, err  # the 1st and 2nd are said


def _raise(message):
    raise RuntimeError(message)


def test_a_backend_that_raises_mid_run_gives_a_line_without_a_label(bundle, capfd):
    backend = _Corrupted(bundle, lambda run, *_: _raise("CUDA error: unspecified launch failure") if run == 3 else None)
    runtime = _runtime(backend)
    results = _ticks(runtime, 6)
    runtime.stop()
    assert [r.reason for r in results] == [None, None, BACKEND_ERROR, None, None, None]
    assert results[2].label is None and results[2].probs is None and runtime.invalid == 1
    err = capfd.readouterr().err
    assert f"a result has no label: {BACKEND_ERROR} (RuntimeError: CUDA error: unspecified launch failure)" in err


def test_a_backend_that_keeps_raising_is_failed_like_one_that_gives_nan(bundle):
    backend = _Corrupted(bundle, lambda *_: _raise("CUDA error: an illegal memory access was encountered"))
    runtime = _runtime(backend)
    results = _until(runtime, lambda: runtime.backend_failed)
    runtime.stop()
    assert {r.reason for r in results} == {BACKEND_ERROR, BACKEND_RESTARTING, BACKEND_FAILED}
    assert runtime.backend_restarts == 1 and all(r.label is None for r in results)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_every_real_precision_passes_the_check(bundle, precision):
    """The check's tolerance must never reject what a real head gives (fp16 sums to 1 within ~1e-3)."""
    backend = _Corrupted(bundle, lambda *_: None, precision)
    runtime = _runtime(backend)
    results = _ticks(runtime, 60)
    runtime.stop()
    assert all(r.reason is None and r.label is not None for r in results)
    assert runtime.invalid == 0


def test_no_modality_present_has_the_same_no_label_shape(bundle):
    backend = _Corrupted(bundle, lambda *_: None)
    sink = _Lines()
    runtime = _runtime(backend, sink, sensors={})
    runtime.tick(0.0)
    runtime.stop()
    line = _strict_json(sink.lines[0])
    assert (line["label"], line["confidence"], line["probs"], line["reason"]) == (None, None, None, NO_MODALITY)
    assert backend.runs == 0 and runtime.invalid == 0, "nothing was run, so nothing was judged"


def _until(runtime, done, bound=20_000):
    results = []
    while not done() and len(results) < bound:
        results += _ticks(runtime, 1)
    assert done(), "the condition never came"
    return results


def test_a_backend_that_keeps_giving_nan_is_reactivated_once_then_failed_and_comes_back(bundle, capfd):
    healthy = False
    backend = _Corrupted(bundle, lambda run, _, p: None if healthy else p.fill(np.nan))
    runtime = _runtime(backend)
    results = _until(runtime, lambda: runtime.backend_failed)
    reasons = [r.reason for r in results]
    n = FAIL_AFTER_TICKS
    # How many ticks see the reactivation in progress is the machine's: none where the tick thread
    # was descheduled for as long as the reactivation took (a loaded 2-core CI machine).
    restarting = reasons.count(BACKEND_RESTARTING)
    assert reasons == [NON_FINITE] * n + [BACKEND_RESTARTING] * restarting + [NON_FINITE] * (n - 1) + [BACKEND_FAILED]
    assert backend.activations == 2 and runtime.backend_restarts == 1
    assert all(r.label is None and r.probs is None for r in results)
    results = _ticks(runtime, 10)  # failed: the lines go on, each marked
    assert all(r.reason == BACKEND_FAILED and r.label is None for r in results)
    healthy = True  # the fault clears (an input that overflowed has passed)
    start = backend.runs
    results = _until(runtime, lambda: not runtime.backend_failed)
    assert [r.reason for r in results] == [BACKEND_FAILED] * (n - 1) + [None]
    assert results[-1].label in bundle.labels and backend.runs - start == n
    runtime.stop()
    err = capfd.readouterr().err
    assert "reactivating the backend" in err and "backend failed" in err and "valid results again" in err


def test_a_fault_that_a_reactivation_clears_never_fails_the_backend(bundle):
    backend = _Corrupted(bundle, lambda run, activation, p: p.fill(np.inf) if activation == 1 else None)
    runtime = _runtime(backend)
    results = _until(runtime, lambda: backend.activations == 2 and runtime.ticks > 0 and not runtime.backend_restarting)
    results += _ticks(runtime, 20)
    runtime.stop()
    assert [r.reason for r in results[:FAIL_AFTER_TICKS]] == [NON_FINITE] * FAIL_AFTER_TICKS
    assert all(r.reason is None and r.label is not None for r in results[-20:])
    assert not runtime.backend_failed and runtime.backend_restarts == 1


def test_a_reactivation_that_raises_fails_the_backend_and_the_loop_goes_on(bundle, capfd):
    backend = _Corrupted(bundle, lambda run, _, p: p.fill(np.nan), fail_activation=2)
    runtime = _runtime(backend)
    _until(runtime, lambda: runtime.backend_failed and not runtime.backend_restarting)
    runs = backend.runs
    results = _ticks(runtime, 10)
    assert all(r.reason == BACKEND_FAILED for r in results) and backend.runs == runs, "not run once failed"
    good = _Corrupted(bundle, lambda *_: None)
    good.activate()
    runtime.swap_backend(good)  # a reload (SIGHUP) replaces it
    results = _ticks(runtime, 5)
    runtime.stop()
    assert all(r.reason is None and r.label is not None for r in results) and not runtime.backend_failed
    assert "reactivating it raised RuntimeError: CUDA error" in capfd.readouterr().err


def test_the_status_line_shows_the_reason_of_a_line_without_a_label(bundle):
    backend = _Corrupted(bundle, lambda run, _, p: p.fill(np.nan))
    sink = _Lines()
    runtime = _runtime(backend, sink)
    _ticks(runtime, 1)
    runtime.writer.wait_written()
    line = status_line(runtime, sink.lines[-1], 30.0)
    runtime.stop()
    assert f"intent - ({NON_FINITE})" in line


def _nan_on_live_input_bundle(tmp_path):
    """The shipped bundle with its fp32 colour encoder given x + sqrt(-x) at the door (hashes
    updated): zeros pass unchanged, so the bundle loads, verifies and warms up, but every real
    frame (values > 0) makes the projection, and so every output, NaN."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    root = tmp_path / "nan_bundle"
    src = default_bundle_path()
    for f in src.rglob("*"):
        if f.is_file():
            (root / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (root / f.relative_to(src)).write_bytes(f.read_bytes())
    rel = "fp32/rgb.onnx"
    graph_file = root / rel
    model = onnx.load(graph_file)
    x = model.graph.input[0].name
    for node in model.graph.node:
        node.input[:] = ["x_poisoned" if name == x else name for name in node.input]
    door = [
        helper.make_node("Neg", [x], ["x_neg"]),
        helper.make_node("Sqrt", ["x_neg"], ["x_sqrt"]),
        helper.make_node("Add", [x, "x_sqrt"], ["x_poisoned"]),
    ]
    nodes = door + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, graph_file)
    doc = json.loads((root / "manifest.json").read_text())
    doc["files"][rel] = {"sha256": sha256_file(graph_file), "bytes": graph_file.stat().st_size}
    (root / "manifest.json").write_text(json.dumps(doc))
    return root


def test_run_with_a_model_that_gives_nan_on_live_input_marks_every_line_and_says_so(tmp_path):
    bundle = _nan_on_live_input_bundle(tmp_path)
    out = tmp_path / "results.jsonl"
    cfg = tmp_path / "robot.toml"
    cfg.write_text(f'[output]\nstdout = false\nfile = "{out}"\n[source]\nfaults = ""\n')
    r = cli("run", "--config", str(cfg), "--bundle", str(bundle), "--seconds", "5")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    text = out.read_text()
    assert "NaN" not in text and text.endswith("\n")
    lines = [_strict_json(line) for line in text.splitlines()]
    assert [line["tick"] for line in lines] == list(range(1, len(lines) + 1)), "a line every tick"
    assert all(line["label"] is None and line["confidence"] is None and line["probs"] is None for line in lines)
    reasons = {line["reason"] for line in lines}
    assert NON_FINITE in reasons
    assert reasons <= {NO_MODALITY, NON_FINITE, BACKEND_RESTARTING, BACKEND_FAILED}
    assert f"a result has no label: {NON_FINITE}" in r.stderr and "reactivating the backend" in r.stderr
    assert BACKEND_FAILED in reasons and "backend failed" in r.stderr, "5 s is ample for two runs of bad ticks"


def test_demo_summary_counts_the_bad_ticks(tmp_path):
    bundle = _nan_on_live_input_bundle(tmp_path)
    r = cli("demo", "--json", "--faults", "", "--bundle", str(bundle), "--seconds", "4")
    assert r.returncode == 0, r.stderr
    summary = orjson.loads(r.stderr.strip().splitlines()[-1])
    assert summary["invalid_ticks"] > 2 * FAIL_AFTER_TICKS - 2 and summary["backend_failed"] is True
    assert summary["backend_restarts"] == 1 and summary["accuracy_by_pattern"] == {}
    assert summary["results_lost"] == 0 and summary["sinks"][0]["sink"] == "stdout"
