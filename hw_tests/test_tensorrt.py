"""TensorRT on the robot: the bundle's engines built here, run through the backend, against ONNX
Runtime fp32 on every presence pattern of held-out data.

What CI cannot show (it has no TensorRT, no GPU): that the plans TensorRT builds from the
bundle's graphs compute what ONNX Runtime computes (fp16 >= 99 % argmax agreement per pattern;
INT8 accuracy within 1 point of fp32's), what a tick costs (submit + wait, p50/p99, with and
without CUDA graphs), that a second start loads every engine from the cache and that another
TensorRT rebuilds them, and the pycuda adapter. Skipped without TensorRT (JetPack's
python3-libnvinfer) or without a CUDA GPU.

Environment: EDGEFUSION_BUNDLE (default: the demo bundle), EDGEFUSION_HW_DATA (an .npz of held-out
data, as ``edgefusion eval --data``, for a bundle not of the built-in task), EDGEFUSION_HW_SAMPLES
(default 1000), EDGEFUSION_HW_REPORT (default hw_report.json: every figure measured, as JSON to
paste into an issue; written even when an assertion fails).
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt", reason="needs TensorRT (on a Jetson: JetPack's python3-libnvinfer)")

from edgefusion.atomic import atomic_write  # noqa: E402
from edgefusion.backends import make_backend  # noqa: E402
from edgefusion.backends.base import BackendError  # noqa: E402
from edgefusion.backends.tensorrt import TensorRTBackend, engines  # noqa: E402
from edgefusion.backends.tensorrt.cuda import open_cuda  # noqa: E402
from edgefusion.backends.tensorrt.options import TensorRTOptions  # noqa: E402
from edgefusion.bundle import default_bundle_path, load_bundle  # noqa: E402
from edgefusion.evaluate import Heldout, _predict, heldout  # noqa: E402
from edgefusion.modalities import all_patterns, pattern_name  # noqa: E402

SAMPLES = int(os.environ.get("EDGEFUSION_HW_SAMPLES", "1000"))
REPORT = Path(os.environ.get("EDGEFUSION_HW_REPORT", "hw_report.json"))
TICKS = 300  # per latency figure
SIDECAR = re.compile(r"[0-9a-f]{64}\.json")  # <plan key>.json beside <plan key>'s plan


@pytest.fixture(scope="module")
def gpu():
    try:
        cuda = open_cuda("cuda-python")
        try:
            return cuda.gpu()
        finally:
            cuda.close()
    except BackendError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(os.environ.get("EDGEFUSION_BUNDLE") or default_bundle_path())


@pytest.fixture(scope="module")
def data(bundle):
    return heldout(bundle, SAMPLES, os.environ.get("EDGEFUSION_HW_DATA"))


@pytest.fixture(scope="module")
def patterns(bundle):
    return all_patterns(len(bundle.names))


@pytest.fixture(scope="module")
def reference(bundle, data, patterns):
    """ONNX Runtime fp32's predicted class per sample and pattern: the bundle as exported."""
    with make_backend("onnxruntime", bundle, "fp32") as ort:
        return _predict(ort, data, patterns)[0]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="module")
def report(gpu, bundle, data):
    out: dict = {
        "tensorrt": trt.__version__,
        "gpu": asdict(gpu),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "bundle": {"name": bundle.manifest.get("name"), "root": str(bundle.root)},
        "samples": len(data),
        "data": data.source,
    }
    yield out
    with atomic_write(REPORT) as f:
        f.write(json.dumps(out, indent=1).encode() + b"\n")
    print(f"\nTensorRT hardware report: {REPORT.resolve()}")


def run(backend: TensorRTBackend, data, patterns) -> tuple[dict, dict, dict, float]:
    """Activate (timed: a first build takes minutes), predict every pattern, time ticks; always deactivate."""
    start = time.monotonic()
    backend.activate()
    try:
        activate_s = time.monotonic() - start
        preds, conf = _predict(backend, data, patterns)
        return preds, conf, {"latency_us": tick_latency(backend), "facts": dict(backend.facts)}, activate_s
    finally:
        backend.deactivate()


def tick_latency(backend: TensorRTBackend) -> dict:
    """submit + wait per tick, in µs: every encoder and the head (all sensors fresh), and the head
    alone (nothing new: the cached projections), every modality present."""
    n = len(backend.names)
    out = {}
    for what, fresh in (("all_encoders", [True] * n), ("head_only", [False] * n)):
        times = np.empty(TICKS)
        for i in range(TICKS):
            start = time.perf_counter_ns()
            backend.submit(fresh, [True] * n)
            backend.wait()
            times[i] = (time.perf_counter_ns() - start) / 1e3
        out[what] = {"p50": round(float(np.percentile(times, 50)), 1), "p99": round(float(np.percentile(times, 99)), 1)}
    return out


def by_pattern(bundle, data, patterns, preds, reference) -> dict:
    return {
        pattern_name(bundle.names, p): {
            "agreement": float((preds[p] == reference[p]).mean()),
            "accuracy": float((preds[p] == data.labels).mean()),
            "fp32_accuracy": float((reference[p] == data.labels).mean()),
        }
        for p in patterns
    }


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_each_precision_agrees_with_onnxruntime_fp32_on_every_pattern(
    report, precision, bundle, data, patterns, reference, cache_dir
):
    if precision not in bundle.precisions:
        pytest.skip(f"the bundle has no {precision} variant")
    backend = TensorRTBackend(bundle, precision, TensorRTOptions(cache_dir=str(cache_dir)))
    preds, _, measured, activate_s = run(backend, data, patterns)
    rows = by_pattern(bundle, data, patterns, preds, reference)
    report.setdefault("precisions", {})[precision] = {"activate_s": round(activate_s, 1), **measured, "patterns": rows}
    for name, r in rows.items():
        if precision == "int8":  # quantized on purpose: held to fp32's accuracy, not to its every answer
            assert r["accuracy"] >= r["fp32_accuracy"] - 0.01, (precision, name, r)
        else:
            assert r["agreement"] >= 0.99, (precision, name, r)


@pytest.mark.parametrize("adapter", ["cuda-python", "pycuda"])
def test_eager_ticks_give_the_graph_replayed_answers(report, adapter, bundle, data, patterns, cache_dir):
    """fp32 without CUDA graphs (the cuda-python adapter with ``cuda_graphs = false``, and pycuda,
    which has none) against the default, graph-replayed backend: the same engines, so the same
    answers, on a subset of the data."""
    if adapter == "pycuda":
        pytest.importorskip("pycuda.driver", reason="pycuda is not installed (it compiles against the CUDA toolkit)")
    subset = Heldout({m: x[:200] for m, x in data.inputs.items()}, data.labels[:200], data.source)
    graphs = TensorRTBackend(bundle, "fp32", TensorRTOptions(cache_dir=str(cache_dir)))
    eager = TensorRTBackend(bundle, "fp32", TensorRTOptions(cache_dir=str(cache_dir), cuda=adapter, cuda_graphs=False))
    want_preds, want_conf, _, _ = run(graphs, subset, patterns)
    preds, conf, measured, _ = run(eager, subset, patterns)
    report.setdefault("eager", {})[adapter] = measured
    for p in patterns:
        assert (preds[p] == want_preds[p]).all(), pattern_name(bundle.names, p)
        np.testing.assert_allclose(conf[p], want_conf[p], rtol=0, atol=1e-5, err_msg=pattern_name(bundle.names, p))


def test_a_second_start_loads_every_engine_from_the_cache_and_another_tensorrt_rebuilds(
    report, bundle, gpu, tmp_path, monkeypatch
):
    options = TensorRTOptions(cache_dir=str(tmp_path))
    roles = sorted([*bundle.names, "head"])
    steps = report["cache"] = {}

    def load(step: str) -> None:
        loaded = engines.load_engines(trt, bundle, "fp32", options, gpu)
        steps[step] = {"built": sorted(loaded.built), "cached": sorted(loaded.cached)}

    load("first")
    load("second")
    assert steps["first"] == {"built": roles, "cached": []}
    assert steps["second"] == {"built": [], "cached": roles}

    # A JetPack upgrade: the running TensorRT's version, as the cache key reads it, changes.
    with monkeypatch.context() as m:
        m.setattr(trt, "__version__", trt.__version__ + "-upgraded")
        load("tensorrt_upgraded")
    assert steps["tensorrt_upgraded"] == {"built": roles, "cached": []}

    # The sidecars of this TensorRT's plans say another one built them: not to be trusted either.
    edited = []
    for sidecar in (p for p in tmp_path.iterdir() if SIDECAR.fullmatch(p.name)):
        meta = json.loads(sidecar.read_text())
        if replace(meta, trt.__version__, "8.5.0.0-edited"):
            sidecar.write_text(json.dumps(meta))
            edited.append(sidecar.name)
    assert len(edited) == len(roles), f"sidecars recording TensorRT {trt.__version__}: {edited}"
    load("sidecars_edited")
    assert steps["sidecars_edited"] == {"built": roles, "cached": []}


def replace(doc, old: str, new: str) -> bool:
    """Every string ``old`` in the JSON document ``doc`` set to ``new``, in place; whether any was."""
    found = False
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        if v == old:
            doc[k] = new
            found = True
        elif isinstance(v, (dict, list)):
            found = replace(v, old, new) or found
    return found
