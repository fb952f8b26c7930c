"""open_backend's fallback through the real TensorRT backend on the fake GPU: each step fails the
way it would on a robot (a graph the parser refuses, a plan that never deserializes, a CUDA
error), and the run goes on with the next precision, then ONNX Runtime, one line per step."""

import json
import os
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from cli_check import cli

from edgefusion.backends import open_backend
from edgefusion.backends.tensorrt.options import TensorRTOptions
from edgefusion.bundle import default_bundle_path, load_bundle
from edgefusion.config import Config

pytest_plugins = ["fakes.fixtures"]  # the fake_gpu fixture


@pytest.fixture(scope="module")
def demo():
    return load_bundle(default_bundle_path())


def config(tmp_path, precision: str) -> Config:
    cfg = Config()
    cfg.runtime.backend, cfg.runtime.precision = "tensorrt", precision
    cfg.tensorrt = TensorRTOptions(cache_dir=str(tmp_path / "engines"))
    return cfg


def assert_ticks(backend) -> None:
    """One tick with every modality new gives a probability distribution."""
    backend.submit([True] * 3, [True] * 3)
    assert np.isclose(backend.wait()[1].sum(), 1.0, atol=1e-2)


def steps(err: str) -> list[str]:
    return [line for line in err.splitlines() if "; trying " in line]


def test_nothing_failing_runs_what_was_asked(fake_gpu, demo, tmp_path, capsys):
    backend = open_backend(config(tmp_path, "int8"), demo)
    try:
        assert (backend.name, backend.precision, backend.degraded) == ("tensorrt", "int8", None)
    finally:
        backend.deactivate()
    assert steps(capsys.readouterr().err) == []


def test_int8_refused_by_the_parser_runs_tensorrt_fp16(fake_gpu, demo, tmp_path, capsys):
    fake_gpu.trt.refuse_ops = {"QuantizeLinear"}  # only the int8 encoders hold Q/DQ nodes
    backend = open_backend(config(tmp_path, "int8"), demo)
    try:
        assert (backend.name, backend.precision) == ("tensorrt", "fp16")
        assert_ticks(backend)
    finally:
        backend.deactivate()
    (line,) = steps(capsys.readouterr().err)
    assert "tensorrt int8: TensorRT cannot parse the rgb graph (int8)" in line and "QuantizeLinear" in line
    assert line.endswith("; trying tensorrt fp16")
    assert backend.degraded.startswith("asked for tensorrt int8, running tensorrt fp16: TensorRT cannot parse")


def test_a_plan_that_never_deserializes_is_rebuilt_once_then_the_next_precision(fake_gpu, demo, tmp_path, capsys):
    open_backend(config(tmp_path, "fp16"), demo).deactivate()  # fp16's plans now in the cache
    capsys.readouterr()
    fake_gpu.trt.deserialize_returns_none = 2  # the cached rgb plan, then the plan rebuilt for it
    backend = open_backend(config(tmp_path, "fp16"), demo)
    try:
        assert (backend.name, backend.precision) == ("tensorrt", "fp32")
    finally:
        backend.deactivate()
    err = capsys.readouterr().err
    assert "the cached TensorRT engine for rgb (fp16) does not load; building it again" in err
    (line,) = steps(err)
    assert line.startswith("edgefusion: tensorrt fp16: ") and line.endswith("; trying tensorrt fp32")


def test_a_cuda_error_at_every_precision_ends_on_onnxruntime(fake_gpu, demo, tmp_path, capsys, monkeypatch):
    def no_stream(flags):  # every activation (not the probe) fails where it makes its stream
        return (fake_gpu.cudart.cudaError_t.cudaErrorLaunchOutOfResources, None)

    monkeypatch.setattr(fake_gpu.cudart, "cudaStreamCreateWithFlags", no_stream)
    backend = open_backend(config(tmp_path, "int8"), demo)
    try:
        assert (backend.name, backend.precision) == ("onnxruntime", "int8")
        assert_ticks(backend)
    finally:
        backend.deactivate()
    lines = steps(capsys.readouterr().err)
    assert [line.split(":")[1].strip() for line in lines] == ["tensorrt int8", "tensorrt fp16", "tensorrt fp32"]
    assert all("cudaErrorLaunchOutOfResources" in line for line in lines)
    assert lines[-1].endswith("; trying onnxruntime int8")
    assert set(fake_gpu.cudart.live().values()) == {0}, "each failed step freed what it allocated"
    assert backend.degraded.startswith("asked for tensorrt int8, running onnxruntime int8: CUDA cudaStreamCreate")


def test_with_tensorrt_but_no_cuda_driver_the_demo_says_so_and_runs_on_onnxruntime(no_cuda_device, tmp_path):
    """The real cuda-bindings on this machine (no driver) under a TensorRT that imports (the fake,
    as ``tensorrt`` on PYTHONPATH): the reason is the missing driver, said in one line."""
    shim = tmp_path / "path" / "tensorrt"
    shim.mkdir(parents=True)
    tests = Path(__file__).parent
    (shim / "__init__.py").write_text(
        f"import sys\nsys.path.insert(0, {str(tests)!r})\n"
        "from fakes.fake_tensorrt import *  # noqa: F403\nfrom fakes.fake_tensorrt import __version__  # noqa: F401\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim.parent), os.environ.get("PYTHONPATH", "")])}
    r = cli("demo", "--backend", "tensorrt", "--seconds", "2", "--faults", "", "--json", env=env)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    *lines, summary_line = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgefusion: tensorrt: no CUDA driver or GPU here ("), r.stderr
    assert lines[0].endswith("; trying onnxruntime fp32")
    summary = json.loads(summary_line)
    assert summary["backend"] == "onnxruntime"
    assert summary["degraded"].startswith("asked for tensorrt fp32, running onnxruntime fp32: no CUDA driver or GPU")
    ticks = [json.loads(line)["tick"] for line in r.stdout.splitlines()]
    assert ticks and ticks == list(range(ticks[0], ticks[0] + len(ticks))), "results uninterrupted"


def test_bench_runs_the_loop_on_tensorrt_and_compares_caching_only_on_like_terms(fake_gpu, demo, tmp_path, monkeypatch):
    """The runtime's own loop (sync, submit, wait, result) over the TensorRT backend; the caching
    ratios are left out, since their reference graphs run on ONNX Runtime's CPU."""
    from edgefusion.bench import render, run_bench

    monkeypatch.setattr(fake_gpu.cudart, "log", deque(maxlen=0))  # the fake's own log is not the backend's
    backend = open_backend(config(tmp_path, "fp32"), demo)
    try:
        report = run_bench(demo, backend, ticks=200, alloc_ticks=50)
    finally:
        backend.deactivate()
    assert (report["backend"], report["degraded"]) == ("tensorrt", None)
    assert report["alloc_growth_bytes"] == 0, report["alloc_growth_by_file"]
    assert report["overhead_ratio"] > 0 and report["encoder_runs"]["audio"] < report["encoder_runs"]["rgb"]
    assert report["caching_compute_ratio"] is None and report["caching_efficiency"] is None
    assert "caching: not compared (the monolithic and bare graphs run on onnxruntime, the ticks on tensorrt)" in (
        render(report)
    )
