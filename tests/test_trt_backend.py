"""The TensorRT backend end to end on the fake GPU: engines run the bundle's graphs through ONNX
Runtime on fake device memory, so every output is checked against the ONNX Runtime backend."""

from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest
from fakes import fake_cudart
from fakes.fake_trt_context import FakeExecutionContext
from tiny_bundle import make_bundle

from edgefusion.backends import BackendError, make_backend
from edgefusion.backends.tensorrt import TensorRTBackend, runner
from edgefusion.backends.tensorrt.options import TensorRTOptions
from edgefusion.bench import allocation_growth
from edgefusion.bundle import default_bundle_path, load_bundle
from edgefusion.modalities import all_patterns

pytest_plugins = ["fakes.fixtures"]  # the fake_gpu fixture
E = fake_cudart.cudaError_t


@pytest.fixture
def gpu(fake_gpu, tmp_path):
    """The fake GPU and the fake TensorRT, with an engine cache of the test's own."""
    fake_gpu.cache_dir = str(tmp_path / "engines")
    return fake_gpu


def options(gpu, **kw) -> TensorRTOptions:
    return TensorRTOptions(cache_dir=gpu.cache_dir, **kw)


@pytest.fixture(scope="module")
def demo():
    return load_bundle(default_bundle_path())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    modalities = [("depth", "depth", (1, 12, 16)), ("mic", "audio", (800,), 16000, 0.05)]
    return load_bundle(make_bundle(tmp_path_factory.mktemp("tiny") / "b", modalities, labels=["a", "b", "c", "d"]))


def _ran(log) -> list[str]:
    return [what for op, _, what in log if op == "run"]


def _calls(log, name) -> int:
    return sum(1 for op, _, _ in log if op == name)


def _script(names, seed=0):
    """Ticks of (fresh, present) over every presence pattern, with stale and fresh data mixed:
    absent -> present with and without new data, cached projections, repeats (graph replays)."""
    rng = np.random.default_rng(seed)
    ticks = []
    for _ in range(2):
        for present in all_patterns(len(names)):
            for _ in range(2):
                ticks.append(([bool(f) for f in rng.integers(0, 2, len(names))], present))
    ticks.append(([False] * len(names), (False,) * len(names)))  # nothing present: the absent factors only
    return ticks


def _feed(backends, bundle, fresh, rng):
    for m, is_fresh in zip(bundle.names, fresh):
        if is_fresh:
            scale = {"rgb": 255.0, "depth": 10.0, "audio": 32767.0}[bundle.modality(m).sensor]
            data = (rng.random(backends[0].input_buffer(m).shape) * scale).astype(np.float32)
            for b in backends:
                np.copyto(b.input_buffer(m), data)


@pytest.mark.parametrize("graphs", [True, False], ids=["cuda-graphs", "no-graphs"])
@pytest.mark.parametrize(
    ("which", "precision"), [("demo", "fp32"), ("demo", "fp16"), ("demo", "int8"), ("tiny", "fp32")]
)
def test_outputs_equal_onnxruntime_on_every_presence_pattern(gpu, request, which, precision, graphs):
    bundle = request.getfixturevalue(which)
    rng = np.random.default_rng(1)
    with (
        TensorRTBackend(bundle, precision, options(gpu, cuda_graphs=graphs)) as trt,
        make_backend("onnxruntime", bundle, precision) as ort,
    ):
        seen = set()
        for fresh, present in _script(bundle.names):
            _feed((trt, ort), bundle, fresh, rng)
            trt.submit(fresh, present)
            ort.submit(fresh, present)
            (logits, probs), (ref_logits, ref_probs) = trt.wait(), ort.wait()
            np.testing.assert_allclose(logits, ref_logits, rtol=1e-6, atol=1e-6, err_msg=f"{fresh} {present}")
            np.testing.assert_allclose(probs, ref_probs, rtol=1e-6, atol=1e-6)
            seen.add(tuple(present))
        assert trt.stats == ort.stats
        assert len(seen) == 2 ** len(bundle.names)
        assert (trt._graphs is not None) == graphs


@pytest.mark.parametrize("graphs", [True, False], ids=["cuda-graphs", "no-graphs"])
def test_one_tick_is_copies_in_encoders_head_copy_out_and_one_synchronize(gpu, demo, graphs):
    with TensorRTBackend(demo, "fp32", options(gpu, cuda_graphs=graphs)) as trt:
        for present in ([True] * 3, [True, True, False]):  # a graph captured, then replayed below
            trt.submit([True, False, True], present)
            trt.wait()
        gpu.cudart.log.clear()
        trt.submit([True, False, True], [True, True, False])  # rgb fresh, depth cached, audio absent
        logits, _ = trt.wait()
        trt.submit([False, False, False], [True, True, False])
        trt.wait()
        host = {m: f"htod {address:#x}" for m, address in _input_addresses(trt, demo).items()}
    out = f"dtoh {logits.ctypes.data:#x}"
    head = "execute " + ",".join(demo.manifest["head"]["inputs"])
    ran = _ran(gpu.cudart.log)
    assert ran == [host["rgb"], "execute rgb", head, out, head, out]
    streams = {s for op, s, _ in gpu.cudart.log if s is not None}
    assert len(streams) == 1, "everything on one stream"
    syncs = [i for i, (op, _, _) in enumerate(gpu.cudart.log) if op == "cudaStreamSynchronize"]
    assert len(syncs) == 2 + 1, "one synchronize per tick (and one at deactivation)"


def _input_addresses(trt, bundle):
    return {m: trt.input_buffer(m).ctypes.data for m in bundle.names}


def test_an_output_read_before_wait_is_not_yet_there(gpu, tiny):
    with TensorRTBackend(tiny, "fp32", options(gpu)) as trt:
        trt.input_buffer("depth").fill(5.0)
        trt.submit([True, True], [True, True])
        before = trt.wait()[0].copy()
        trt.input_buffer("depth").fill(1.0)
        trt.submit([True, False], [True, True])
        logits = trt._outputs[0]
        np.testing.assert_array_equal(logits, before)  # the copy out has not run yet
        after = trt.wait()[0]
        assert after is logits and not np.array_equal(after, before)


def test_absent_projections_are_uploaded_once_and_absence_copies_nothing(gpu, demo):
    with TensorRTBackend(demo, "fp32", options(gpu)) as trt:
        assert _calls(gpu.cudart.log, "cudaMemcpy") == len(demo.names)
        gpu.cudart.log.clear()
        for k in range(12):
            present = [k % 2 == 0, k % 3 == 0, True]
            trt.submit([False, False, k % 4 == 0], present)
            trt.wait()
        addresses = _input_addresses(trt, demo)
    ran = _ran(gpu.cudart.log)
    assert _calls(gpu.cudart.log, "cudaMemcpy") == 0
    htod = {m: sum(1 for r in ran if r == f"htod {addresses[m]:#x}") for m in demo.names}
    # rgb and depth come back 6 and 4 times without new data: encoded again each time (from the
    # buffer), never for going away; audio only on its fresh ticks.
    assert htod == {"rgb": 6, "depth": 4, "audio": 3}


def test_each_combination_is_captured_once_and_replayed(gpu, tiny):
    ticks = [([True, True], (True, True)), ([False, True], (True, True)), ([False, False], (True, False))] * 5
    with TensorRTBackend(tiny, "fp32", options(gpu)) as trt:
        gpu.cudart.log.clear()
        for fresh, present in ticks:
            trt.submit(fresh, present)
            trt.wait()
        assert (trt._graphs.captures, trt._graphs.launches) == (3, len(ticks))
        assert trt.facts["cuda_graphs"] == "on"
    log = gpu.cudart.log
    assert _calls(log, "cudaStreamBeginCapture") == 3 and _calls(log, "cudaGraphLaunch") == len(ticks)
    assert _calls(log, "cudaMemcpyAsync") == 3 * 2, "copies are enqueued only while capturing"


def test_cuda_graphs_off_enqueues_every_tick(gpu, tiny):
    with TensorRTBackend(tiny, "fp32", options(gpu, cuda_graphs=False)) as trt:
        trt.submit([True, True], [True, True])  # after activation every modality is absent
        trt.wait()
        gpu.cudart.log.clear()
        for _ in range(4):
            trt.submit([True, False], [True, True])
            trt.wait()
        assert trt._graphs is None and trt.facts["cuda_graphs"] == "off ([tensorrt] cuda_graphs = false)"
    log = gpu.cudart.log
    assert _calls(log, "cudaStreamBeginCapture") == _calls(log, "cudaGraphLaunch") == 0
    assert _calls(log, "cudaMemcpyAsync") == 4 * 2


def test_the_warm_tick_runs_every_engine_uncaptured_and_capture_starts_after(gpu, tiny):
    """TensorRT defers work to a context's first enqueue: that one must not be inside a capture."""
    with TensorRTBackend(tiny, "fp32", options(gpu)) as trt:
        activation = list(gpu.cudart.log)
        trt.submit([True, True], [True, True])
        trt.wait()
        tick = list(gpu.cudart.log)[len(activation) :]
    assert _calls(activation, "cudaStreamBeginCapture") == 0
    executes = [what for what in _ran(activation) if what.startswith("execute")]
    assert executes == ["execute depth", "execute mic", "execute p_depth,p_mic"]
    assert _calls(tick, "cudaStreamBeginCapture") == 1


@pytest.mark.parametrize("graphs", [True, False], ids=["cuda-graphs", "no-graphs"])
def test_a_cuda_error_is_one_backend_error_line_and_the_backend_goes_on(gpu, tiny, graphs):
    with TensorRTBackend(tiny, "fp32", options(gpu, cuda_graphs=graphs)) as trt:
        trt.submit([True, True], [True, True])
        good = trt.wait()[0].copy()
        gpu.cudart.fail_next = ("cudaMemcpyAsync", E.cudaErrorInvalidValue)
        with pytest.raises(BackendError) as err:
            trt.submit([True, False], [True, True])  # a combination not captured yet: copies enqueued
        assert str(err.value) == "CUDA cudaMemcpyAsync failed: cudaErrorInvalidValue"
        trt.wait()  # whatever was enqueued before the failure
        trt.submit([True, False], [True, True])  # depth encoded again from the same buffer
        np.testing.assert_array_equal(trt.wait()[0], good)
        gpu.cudart.fail_next = ("cudaStreamSynchronize", E.cudaErrorIllegalAddress)
        trt.submit([False, False], [True, True])
        with pytest.raises(BackendError, match=r"^CUDA cudaStreamSynchronize failed: cudaErrorIllegalAddress$"):
            trt.wait()


def test_execute_returning_false_is_a_backend_error(gpu, tiny, monkeypatch):
    with TensorRTBackend(tiny, "fp32", options(gpu, cuda_graphs=False)) as trt:
        monkeypatch.setattr(FakeExecutionContext, "execute_async_v3", lambda self, stream: False)
        with pytest.raises(
            BackendError, match=r"\(fp32 depth\) on TensorRT: TensorRT could not enqueue the engine"
        ) as e:
            trt.submit([True, True], [True, True])
        assert "\n" not in str(e.value)
    assert set(gpu.cudart.live().values()) == {0}
    with pytest.raises(BackendError, match=r"warm-up tick failed: .*could not enqueue the engine"):
        TensorRTBackend(tiny, "fp32", options(gpu)).activate()
    assert set(gpu.cudart.live().values()) == {0}, "a failed activation frees what it allocated"


def test_a_cuda_error_while_releasing_is_said_and_the_rest_still_freed(gpu, tiny, capsys):
    trt = TensorRTBackend(tiny, "fp32", options(gpu))
    trt.activate()
    capsys.readouterr()  # the engines' build lines
    gpu.cudart.fail_next = ("cudaStreamSynchronize", E.cudaErrorIllegalAddress)
    trt.deactivate()
    assert set(gpu.cudart.live().values()) == {0}
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "edgefusion: tensorrt: while releasing the backend: CUDA cudaStreamSynchronize failed: cudaErrorIllegalAddress"
    ]


def test_deactivate_frees_everything(gpu, demo):
    trt = TensorRTBackend(demo, "fp32", options(gpu))
    with trt:
        for present in all_patterns(3):
            trt.submit([True] * 3, present)
            trt.wait()
        live = gpu.cudart.live()
        assert live["device"] == 3 * 3 + 1 and live["host"] == 3 + 1 and live["streams"] == 1
        assert live["graph_execs"] == len(all_patterns(3))
    assert set(gpu.cudart.live().values()) == {0}
    with trt:  # and it activates again
        trt.submit([True] * 3, [True] * 3)
        trt.wait()
    assert set(gpu.cudart.live().values()) == {0}


@pytest.mark.parametrize("call", ["cudaMalloc", "cudaHostAlloc", "cudaStreamCreateWithFlags", "cudaMemcpy"])
def test_a_failure_during_activation_is_one_line_and_frees_what_was_allocated(gpu, tiny, call):
    gpu.cudart.fail_next = (call, E.cudaErrorMemoryAllocation)
    with pytest.raises(BackendError) as err:
        TensorRTBackend(tiny, "fp32", options(gpu)).activate()
    assert str(err.value) == f"CUDA {call} failed: cudaErrorMemoryAllocation"
    assert set(gpu.cudart.live().values()) == {0}


def _altered_engines(monkeypatch, alter):
    """The engines as the fake TensorRT loads them, with ``alter(engines)`` applied."""
    load = runner.load_engines

    def altered(*args, **kw):
        loaded = load(*args, **kw)
        alter(loaded.engines)
        return loaded

    monkeypatch.setattr(runner, "load_engines", altered)


def test_an_engine_without_the_bundles_tensors_is_refused(gpu, tiny, monkeypatch):
    _altered_engines(monkeypatch, lambda engines: engines["mic"].header["io"][0].__setitem__(0, "microphone"))
    with pytest.raises(BackendError, match=r"\(fp32 mic\) on TensorRT: the engine refused input 'mic'"):
        TensorRTBackend(tiny, "fp32", options(gpu)).activate()
    assert set(gpu.cudart.live().values()) == {0}


def test_a_context_tensorrt_cannot_create_is_one_line_and_frees_everything(gpu, tiny, monkeypatch):
    def no_context(engines):
        engines["mic"].create_execution_context = lambda: None  # TensorRT's answer when out of memory

    _altered_engines(monkeypatch, no_context)
    with pytest.raises(BackendError, match=r"\(fp32 mic\) on TensorRT: TensorRT could not create an execution"):
        TensorRTBackend(tiny, "fp32", options(gpu)).activate()
    assert set(gpu.cudart.live().values()) == {0}


@pytest.mark.parametrize("graphs", [True, False], ids=["cuda-graphs", "no-graphs"])
def test_steady_state_ticks_allocate_nothing(gpu, tiny, graphs, monkeypatch):
    monkeypatch.setattr(gpu.cudart, "log", deque(maxlen=0))  # the fake's log keeps entries, not the backend
    with TensorRTBackend(tiny, "fp32", options(gpu, cuda_graphs=graphs)) as trt:
        k = 0

        def tick():
            nonlocal k
            trt.submit([True, k % 3 == 0], [True, k % 5 != 0])
            trt.wait()
            k += 1

        assert allocation_growth(tick, 2000, warmup=1000) == {"total": 0}


def test_facts_say_what_runs(gpu, tiny):
    with TensorRTBackend(tiny, "fp32", options(gpu)) as trt:
        facts = trt.facts
    assert facts["cuda"] == "cuda-python" and facts["gpu"] == "Fake GPU (tests/fakes/fake_cudart.py)"
    assert facts["cuda_graphs"] == "on" and facts["tensorrt"]
    assert sorted(facts["engines_built"] + facts["engines_cached"]) == sorted([*tiny.names, "head"])
    assert TensorRTBackend.name == "tensorrt"


def test_without_a_cuda_driver_activation_says_so(no_cuda_device, tiny, monkeypatch):
    """The real cuda-bindings on this machine (no driver): one line, nothing else."""
    monkeypatch.setattr(runner, "import_tensorrt", lambda: SimpleNamespace(__version__="stand-in"))
    with pytest.raises(BackendError, match=r"^no CUDA driver or GPU here \(") as e:
        TensorRTBackend(tiny, "fp32").activate()
    assert "\n" not in str(e.value)
