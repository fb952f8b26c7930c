"""One conformance suite over every backend present (as ONNX's backend tests do for runtimes): the
same inputs through each backend id (``edgefusion.hil.backends``) at each precision the bundle has.

- agreement with ONNX Runtime fp32 per presence pattern: the reference is the bundle's monolithic
  graph, fp32, in a plain ONNX Runtime session (no split graphs, no caching), so ONNX Runtime's own
  split backend is checked too; fp32 and fp16 agree on >= 99 % of argmax answers, int8's accuracy
  is within 1 point of fp32's (>= 95 % agreement where the inputs have no labels);
- split == monolithic: encoders + head give the monolithic graph's logits;
- absence: an absent modality's input is ignored (its absent projection is used), and it counts
  again, re-encoded, when present again;
- nothing allocated per tick; tick latency (submit + wait);
- the fallback chain (TensorRT int8 -> fp16 -> fp32, then ONNX Runtime at the asked precision).

Inputs: held-out data for a bundle of the built-in task (the demo) or ``--data``; otherwise
generated inputs in each stream's range, where only agreement is scored and accuracy is said to be
unscored. "tensorrt-fake" is the TensorRT backend on the repository's fake TensorRT and CUDA
runtime: it checks the backend's code, not TensorRT's numerics or speed (its graphs run through
ONNX Runtime), and each of its figures says so through its column name.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pytest
from fake_gpu import installed

from edgefusion.backends import BackendError, open_backend
from edgefusion.backends.fallback import LADDER, degraded_mark
from edgefusion.backends.onnxruntime.session import open_session
from edgefusion.backends.tensorrt.options import TensorRTOptions
from edgefusion.bench import allocation_growth, bench_inputs
from edgefusion.config import Config
from edgefusion.errors import EdgefusionError
from edgefusion.evaluate import _predict, heldout
from edgefusion.hil.backends import BACKEND_IDS, FAKE, make, missing
from edgefusion.modalities import all_patterns, pattern_name

SAMPLES = 500  # per agreement check: 1 point of accuracy is 5 samples
SPLIT_SAMPLES = 20  # per split == monolithic check, for every pattern
PRECISIONS = ("fp32", "fp16", "int8")
# max |split - monolithic| / max |monolithic| over samples and patterns. fp32: the same arithmetic;
# fp16: half precision's rounding (0.3 % measured); int8: quantisation (3 % at the median, 22 % at
# worst, measured on the demo bundle), held mainly by its accuracy;
# a projection bound to the wrong buffer or pattern is off by the logits' whole size.
SPLIT_LIMIT = {"fp32": 1e-4, "fp16": 0.02, "int8": 0.35}
AGREEMENT_LIMIT = {"fp32": 0.99, "fp16": 0.99, "int8": 0.95}  # int8's where there are no labels
INT8_ACCURACY_POINTS = 0.01
LATENCY_TICKS = 300
ALLOC_TICKS = 1000


@dataclass(frozen=True)
class Inputs:
    """Samples by modality name, (N, *input shape); ``labels`` None for generated inputs."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))


@pytest.fixture(scope="module")
def data(request, bundle) -> Inputs:
    path = request.config.getoption("--data") or None
    try:
        held = heldout(bundle, SAMPLES, path)
    except EdgefusionError:
        if path:
            raise  # the user's data file is wrong: its one line
        generated, source = bench_inputs(bundle, SAMPLES)
        return Inputs(generated, None, f"{source} (no labels: accuracy unscored; give --data to score it)")
    return Inputs(held.inputs, held.labels, held.source)


@pytest.fixture(scope="module")
def patterns(bundle):
    return all_patterns(len(bundle.names))


@pytest.fixture(scope="module")
def monolithic(bundle):
    """logits of the bundle's monolithic fp32 graph for a batch of inputs at one presence pattern."""
    spec = bundle.manifest["monolithic"]
    *inputs, present = spec["inputs"]
    session = open_session(bundle.graph_bytes("fp32", "monolithic"), 1, ["CPUExecutionProvider"])

    def logits(batch: dict[str, np.ndarray], pattern) -> np.ndarray:
        n = len(batch[bundle.names[0]])
        feed = {name: batch[m] for name, m in zip(inputs, bundle.names)}
        feed[present] = np.tile(np.asarray(pattern, np.float32), (n, 1))
        return session.run([spec["outputs"][0]], feed)[0]

    return logits


@pytest.fixture(scope="module")
def reference(data, patterns, monolithic) -> dict[tuple, np.ndarray]:
    """ONNX Runtime fp32's answer per sample and pattern: the bundle's monolithic graph."""
    return {p: monolithic(data.inputs, p).argmax(axis=1) for p in patterns}


@pytest.fixture(params=[pytest.param((b, p), id=f"{b}-{p}") for b in BACKEND_IDS for p in PRECISIONS])
def case(request, backend_ids, bundle) -> tuple[str, str]:
    backend_id, precision = request.param
    why = missing(backend_id)
    if why:
        pytest.skip(why)
    if backend_id not in backend_ids:
        option = request.config.getoption("--backend")
        pytest.skip(
            f"{backend_id} is not among --backend {option}"
            if option
            else f"{backend_id}: real TensorRT is here and checked instead (name {FAKE} in --backend to check it too)"
        )
    if precision not in bundle.precisions:
        pytest.skip(f"the bundle has no {precision} variant")
    return backend_id, precision


@pytest.fixture
def backend(case, bundle, tmp_path):
    """The case's backend, active; the fake's in a temporary engine cache, real TensorRT's in the
    robot's own (a run on the robot reuses the engines it built, instead of minutes of building)."""
    backend_id, precision = case
    with installed() if backend_id == FAKE else nullcontext():
        options = TensorRTOptions(cache_dir=str(tmp_path / "engines")) if backend_id == FAKE else None
        with make(backend_id, bundle, precision, tensorrt=options) as b:
            yield b


def _column(case) -> str:
    return " ".join(case)


def _load(backend, inputs: dict[str, np.ndarray], i: int) -> None:
    for m in backend.names:
        np.copyto(backend.input_buffer(m)[0], inputs[m][i])


def test_agrees_with_onnxruntime_fp32_on_every_presence_pattern(
    case, backend, bundle, data, patterns, reference, figures
):
    column, precision = _column(case), case[1]
    preds, _ = _predict(backend, data, patterns)
    agreement = {pattern_name(bundle.names, p): float((preds[p] == reference[p]).mean()) for p in patterns}
    for row, value in agreement.items():
        figures.cell("agreement", row, column, value)
    figures.add("samples", len(data))
    figures.add("inputs", data.source)
    if case[0] == FAKE:
        figures.needs_jetson("TensorRT's own numerics at this precision (the fake runs the graphs in ONNX Runtime)")
    drop = {}
    if data.labels is None:
        figures.add("accuracy", "unscored: the inputs have no labels")
    else:
        for p in patterns:
            row = pattern_name(bundle.names, p)
            accuracy = float((preds[p] == data.labels).mean())
            figures.cell("accuracy", row, column, accuracy)
            drop[row] = float((reference[p] == data.labels).mean()) - accuracy
    if drop and precision == "int8":  # quantisation may move answers near a boundary: held by accuracy
        worst = max(drop, key=drop.get)
        figures.add("largest accuracy drop from fp32", drop[worst], limit=f"<= {INT8_ACCURACY_POINTS} ({worst})")
        assert drop[worst] <= INT8_ACCURACY_POINTS + 1e-9, (
            f"{worst}: accuracy {drop[worst]:.3f} below fp32's on {len(data)} samples"
        )
    else:
        low = min(agreement, key=agreement.get)
        limit = AGREEMENT_LIMIT[precision]
        figures.add("lowest agreement", agreement[low], limit=f">= {limit} ({low})")
        assert agreement[low] >= limit, f"{low}: {agreement}"


def test_split_graphs_equal_the_monolithic_graph(case, backend, bundle, data, patterns, monolithic, figures):
    precision = case[1]
    n = min(SPLIT_SAMPLES, len(data))
    worst, where = 0.0, "exact"
    for p in patterns:
        ref = monolithic({m: data.inputs[m][:n] for m in bundle.names}, p)
        for i in range(n):
            _load(backend, data.inputs, i)
            backend.submit([True] * len(p), p)
            logits, probs = backend.wait()
            assert abs(float(probs.sum()) - 1) < 1e-3, "probabilities sum to 1"
            err = float(np.abs(logits - ref[i]).max() / max(np.abs(ref[i]).max(), 1e-6))
            if err > worst:
                worst, where = err, f"{pattern_name(bundle.names, p)}, sample {i}"
    figures.add("max |split - monolithic| / max |logit|", worst, limit=f"<= {SPLIT_LIMIT[precision]} ({where})")
    figures.cell("split vs monolithic", "max relative error", _column(case), worst)
    assert worst <= SPLIT_LIMIT[precision], where


def test_an_absent_modality_uses_its_absent_projection_and_comes_back(case, backend, bundle, data, monolithic, figures):
    """While absent, whatever the modality's buffer holds (here noise, even flagged fresh) does not
    count: the answer is the monolithic graph's with that modality absent. Present again with no
    new sample, it is encoded again from its buffer and the full answer is back."""
    precision = case[1]
    names, n = bundle.names, len(bundle.names)
    rng = np.random.default_rng(0)
    sample = {m: data.inputs[m][:1] for m in names}
    full_ref = monolithic(sample, (True,) * n)[0]
    worst = 0.0
    for k, m in enumerate(names):
        _load(backend, data.inputs, 0)
        backend.submit([True] * n, [True] * n)
        full = backend.wait()[0].copy()
        runs = backend.stats.encoder_runs[m]
        without = tuple(j != k for j in range(n))
        buf = backend.input_buffer(m)
        buf[...] = rng.uniform(-1e3, 1e3, buf.shape)
        backend.submit([j == k for j in range(n)], without)
        absent = backend.wait()[0].copy()
        assert backend.stats.encoder_runs[m] == runs, f"{m} absent: its encoder did not run"
        absent_ref = monolithic(sample, without)[0]
        np.copyto(buf[0], data.inputs[m][0])  # its sample back in the buffer, not announced as new
        backend.submit([False] * n, [True] * n)
        back = backend.wait()[0]
        assert backend.stats.encoder_runs[m] == runs + 1, f"{m} present again: encoded again"
        scale = np.abs(full_ref).max()
        errs = (
            np.abs(back - full).max() / scale,
            np.abs(full - full_ref).max() / scale,
            np.abs(absent - absent_ref).max() / np.abs(absent_ref).max(),
        )
        worst = max(worst, *map(float, errs))
    figures.add("max relative error, absent and back", worst, limit=f"<= {SPLIT_LIMIT[precision]}")
    assert worst <= SPLIT_LIMIT[precision]


def test_steady_state_ticks_allocate_nothing(case, backend, bundle, data, figures):
    n = len(bundle.names)
    _load(backend, data.inputs, 0)
    k = 0

    def tick() -> None:  # new data now and then, a modality absent now and then
        nonlocal k
        backend.submit([k % (j + 2) == 0 for j in range(n)], [k % (7 + j) != 0 for j in range(n)])
        backend.wait()
        k += 1

    growth = allocation_growth(tick, ALLOC_TICKS, warmup=ALLOC_TICKS)
    figures.add(f"bytes allocated over {ALLOC_TICKS} ticks", growth["total"], "B", limit="== 0")
    assert growth == {"total": 0}


def test_tick_latency(case, backend, bundle, data, figures):
    """submit + wait, every encoder and the head (all new), and the head alone (cached projections).
    Held to the default deadline_ms only: a busy CI machine is not a robot."""
    n = len(bundle.names)
    deadline = Config().runtime.deadline_ms
    _load(backend, data.inputs, 0)
    out = {}
    for what, fresh in (("all encoders", [True] * n), ("head only", [False] * n)):
        times = np.empty(LATENCY_TICKS)
        for i in range(LATENCY_TICKS):
            t0 = time.perf_counter()
            backend.submit(fresh, [True] * n)
            backend.wait()
            times[i] = (time.perf_counter() - t0) * 1000
        out[what] = times
        figures.cell("backend latency p50", what, _column(case), float(np.percentile(times, 50)), "ms")
    figures.sample(f"backend latency {_column(case)}", out["all encoders"], "ms")
    p99 = float(np.percentile(out["all encoders"], 99))
    figures.add("p99 submit+wait, all encoders", p99, "ms", limit=f"<= deadline_ms {deadline}")
    if case[0] == "onnxruntime-cuda":
        providers = sorted({p for s in backend._sessions.values() for p in s.get_providers()})
        figures.add("execution providers", ", ".join(providers))
        assert "CUDAExecutionProvider" in providers, "onnxruntime fell back to the CPU"
    if case[0] == FAKE:
        figures.needs_jetson("TensorRT's latency on the GPU (the fake's is ONNX Runtime's on the CPU plus its own)")
    assert p99 <= deadline


def _fallback_config(precision: str, cache_dir: str = "") -> Config:
    cfg = Config()
    cfg.runtime.backend, cfg.runtime.precision = "tensorrt", precision
    cfg.tensorrt.cache_dir = cache_dir
    return cfg


def _first_step(bundle) -> str:
    return next(p for p in LADDER if p in bundle.precisions)


def test_fallback_on_this_machine(bundle, figures):
    """The real chain, real probe: TensorRT where it runs, else ONNX Runtime at the asked precision
    with the degraded mark saying why."""
    precision = _first_step(bundle)
    reason = missing("tensorrt")
    backend = open_backend(_fallback_config(precision), bundle)
    try:
        figures.add("runs", f"{backend.name} {backend.precision}", limit=f"asked for tensorrt {precision}")
        figures.add("degraded", degraded_mark(backend) or "no")
        if reason is None:
            assert backend.name == "tensorrt", backend.degraded
        else:
            figures.needs_jetson(f"the chain on real TensorRT (here: {reason})")
            assert (backend.name, backend.precision) == ("onnxruntime", precision)
            assert backend.degraded == f"asked for tensorrt {precision}, running onnxruntime {precision}: {reason}"
    finally:
        backend.deactivate()


@pytest.mark.parametrize("refused", [1, len(LADDER)], ids=["first-step-refused", "every-step-refused"])
def test_fallback_order_through_the_seams(bundle, refused, tmp_path, figures):
    """Where TensorRT is missing: the chain's order with chosen steps refused through ``make``; the
    steps that run are the TensorRT backend on the fake (probed through the real probe)."""
    if missing("tensorrt") is None:
        pytest.skip("real TensorRT is here: test_fallback_on_this_machine checks its chain")
    if missing(FAKE):
        pytest.skip(missing(FAKE))
    steps = [p for p in LADDER if p in bundle.precisions]
    if refused == 1 and len(steps) < 2:
        pytest.skip(f"the bundle has one TensorRT step ({steps[0]}): nothing to fall back to within TensorRT")
    refuse = steps[:refused]
    calls: list[str] = []

    def step(name, bundle, precision, threads=1, tensorrt=None):
        calls.append(f"{name} {precision}")
        if name == "tensorrt" and precision in refuse:
            raise BackendError(f"refused by the check at {precision}")
        return make(FAKE if name == "tensorrt" else "onnxruntime-cpu", bundle, precision, tensorrt=tensorrt)

    with installed():
        backend = open_backend(_fallback_config(steps[0], str(tmp_path / "engines")), bundle, make=step)
        try:
            runs = f"{backend.name} {backend.precision}"
            backend.submit([True] * len(backend.names), [True] * len(backend.names))
            probs = backend.wait()[1]
        finally:
            backend.deactivate()
    if refused < len(steps):  # the next precision up the ladder runs
        expected, expected_runs = [f"tensorrt {p}" for p in steps[: refused + 1]], f"{FAKE} {steps[refused]}"
    else:
        expected_runs = f"onnxruntime {steps[0]}"
        expected = [*(f"tensorrt {p}" for p in steps), expected_runs]
    figures.add("steps tried", " -> ".join(calls), limit=" -> ".join(expected))
    figures.add("runs", runs, limit=expected_runs)
    assert calls == expected
    assert runs == expected_runs
    assert backend.degraded == f"asked for tensorrt {steps[0]}, running {runs}: refused by the check at {steps[0]}"
    assert abs(float(probs.sum()) - 1) < 1e-3
