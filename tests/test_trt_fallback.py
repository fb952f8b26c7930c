"""open_backend's chain (tensorrt at the asked precision, then the more precise ones the bundle
has, then ONNX Runtime at the asked precision), the degraded mark it leaves in STATUS, the
summary, the start and exit lines, doctor and a reload, and the real fallback on this machine,
where TensorRT cannot run, through the CLI.

The chain's steps are driven through open_backend's seams: ``make`` is a factory whose TensorRT
backends are ONNX Runtime under TensorRT's name (``StandInTensorRT``) and fail at the steps a test
chooses; ``probe`` stands for TensorRT's library and GPU being there. Everything else is real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import orjson
import pytest
from cli_check import cli
from tiny_bundle import make_bundle
from waiting import wait_for

from edgefusion import doctor, log
from edgefusion.app import _exit_line, _start_line, reloader
from edgefusion.backends import BackendError, open_backend
from edgefusion.backends import fallback as fallback_module
from edgefusion.backends.fallback import cache_problem
from edgefusion.backends.onnxruntime import OnnxRuntimeBackend
from edgefusion.bundle import load_bundle
from edgefusion.config import Config
from edgefusion.loop import Runtime
from edgefusion.service.heartbeat import status_line
from edgefusion.summary import SessionSummary

ALL = ("fp32", "fp16", "int8")


class StandInTensorRT(OnnxRuntimeBackend):
    """Not TensorRT: ONNX Runtime under TensorRT's name, for a chain step that succeeds."""

    name = "tensorrt"


class Factory:
    """``make`` for open_backend: ``fail`` maps (backend name, precision) to the exception that
    step raises, at activation (or at construction for the steps in ``at_make``); every call is
    recorded in ``calls``."""

    def __init__(self, fail: dict | None = None, at_make: tuple = ()):
        self.fail, self.at_make, self.calls = fail or {}, at_make, []

    def __call__(self, name, bundle, precision, threads=1, tensorrt=None):
        self.calls.append((name, precision))
        err = self.fail.get((name, precision))
        if err is not None and (name, precision) in self.at_make:
            raise err
        backend = (StandInTensorRT if name == "tensorrt" else OnnxRuntimeBackend)(bundle, precision, threads=threads)
        if err is not None:

            def refuse():
                raise err

            backend._activate_impl = refuse
        return backend


def usable(options) -> str:
    """The probe where TensorRT's library and a GPU are there."""
    return "stand-in TensorRT on no GPU"


@pytest.fixture
def said(monkeypatch):
    """Every log line as (priority, message)."""
    lines: list[tuple[int, str]] = []
    monkeypatch.setattr(log, "say", lambda priority, message: lines.append((priority, message)))
    return lines


def _bundle(tmp_path, precisions=ALL):
    return load_bundle(make_bundle(tmp_path / "bundle", precisions=precisions))


def _cfg(tmp_path, backend="tensorrt", precision="int8") -> Config:
    cfg = Config()
    cfg.runtime.backend, cfg.runtime.precision = backend, precision
    cfg.tensorrt.cache_dir = str(tmp_path / "engines")  # writable, and not this user's ~/.cache
    return cfg


def _runs(backend) -> np.ndarray:
    """One tick on the backend: it was returned active."""
    backend.submit([True] * len(backend.names), [True] * len(backend.names))
    return backend.wait()[1]


def test_each_failed_step_is_one_warning_and_the_next_precision_is_tried(tmp_path, said):
    bundle = _bundle(tmp_path)
    make = Factory({("tensorrt", "int8"): BackendError("parser refused node q1 (QuantizeLinear)")})
    make.fail[("tensorrt", "fp16")] = BackendError("the fp16 plan does not deserialize")
    backend = open_backend(_cfg(tmp_path), bundle, make=make, probe=usable)
    assert make.calls == [("tensorrt", "int8"), ("tensorrt", "fp16"), ("tensorrt", "fp32")]
    assert (backend.name, backend.precision) == ("tensorrt", "fp32")
    assert said == [
        (log.WARNING, "tensorrt int8: parser refused node q1 (QuantizeLinear); trying tensorrt fp16"),
        (log.WARNING, "tensorrt fp16: the fp16 plan does not deserialize; trying tensorrt fp32"),
    ]
    assert backend.degraded == "asked for tensorrt int8, running tensorrt fp32: parser refused node q1 (QuantizeLinear)"
    assert np.isclose(_runs(backend).sum(), 1.0)
    backend.deactivate()


def test_when_every_tensorrt_step_fails_onnxruntime_runs_at_the_asked_precision(tmp_path, said):
    bundle = _bundle(tmp_path)
    make = Factory({("tensorrt", p): BackendError(f"no {p} engine") for p in ALL})
    make.fail[("tensorrt", "fp16")] = ImportError("No module named 'tensorrt'")  # a library missing mid-way
    backend = open_backend(_cfg(tmp_path), bundle, make=make, probe=usable)
    assert make.calls == [("tensorrt", "int8"), ("tensorrt", "fp16"), ("tensorrt", "fp32"), ("onnxruntime", "int8")]
    assert (backend.name, backend.precision) == ("onnxruntime", "int8")
    assert [m for _, m in said] == [
        "tensorrt int8: no int8 engine; trying tensorrt fp16",
        "tensorrt fp16: TensorRT is not installed here (No module named 'tensorrt'); trying tensorrt fp32",
        "tensorrt fp32: no fp32 engine; trying onnxruntime int8",
    ]
    assert backend.degraded == "asked for tensorrt int8, running onnxruntime int8: no int8 engine"
    assert np.isclose(_runs(backend).sum(), 1.0)
    backend.deactivate()


def test_precisions_the_bundle_lacks_are_skipped_and_one_it_lacks_is_refused(tmp_path, said):
    bundle = _bundle(tmp_path, precisions=("fp32", "int8"))
    make = Factory({("tensorrt", "int8"): BackendError("no int8 engine")}, at_make=(("tensorrt", "int8"),))
    backend = open_backend(_cfg(tmp_path), bundle, make=make, probe=usable)
    assert make.calls == [("tensorrt", "int8"), ("tensorrt", "fp32")], "no fp16 in the bundle: not tried"
    assert said == [(log.WARNING, "tensorrt int8: no int8 engine; trying tensorrt fp32")]
    backend.deactivate()

    make, said[:] = Factory(), []
    with pytest.raises(BackendError, match="has no fp16 variant"):
        open_backend(_cfg(tmp_path, precision="fp16"), bundle, make=make, probe=usable)
    assert make.calls == [("onnxruntime", "fp16")] and said == [], "no TensorRT step for a precision not there"


def test_what_was_asked_runs_undegraded_and_onnxruntime_has_no_chain(tmp_path, said):
    bundle = _bundle(tmp_path)
    make = Factory()
    backend = open_backend(_cfg(tmp_path, precision="fp16"), bundle, make=make, probe=usable)
    assert make.calls == [("tensorrt", "fp16")] and backend.degraded is None and said == []
    backend.deactivate()

    make = Factory({("onnxruntime", "fp16"): BackendError("onnxruntime refuses the graph")})
    with pytest.raises(BackendError, match="onnxruntime refuses the graph"):
        open_backend(_cfg(tmp_path, "onnxruntime", "fp16"), bundle, make=make, probe=usable)
    assert make.calls == [("onnxruntime", "fp16")] and said == [], "onnxruntime asked: nothing else is tried"


def test_without_tensorrt_or_a_gpu_the_chain_is_skipped_in_one_line(tmp_path, said):
    """A missing library or driver fails every precision alike: said once, not three times."""

    def no_driver(options):
        raise BackendError("no CUDA driver or GPU here (cudaErrorNoDevice)")

    make = Factory()
    backend = open_backend(_cfg(tmp_path), _bundle(tmp_path), make=make, probe=no_driver)
    assert make.calls == [("onnxruntime", "int8")]
    assert said == [(log.WARNING, "tensorrt: no CUDA driver or GPU here (cudaErrorNoDevice); trying onnxruntime int8")]
    assert backend.degraded == (
        "asked for tensorrt int8, running onnxruntime int8: no CUDA driver or GPU here (cudaErrorNoDevice)"
    )
    backend.deactivate()


def test_a_bug_in_the_tensorrt_path_is_an_error_line_and_falls_back_one_elsewhere_is_raised(tmp_path, said):
    bundle = _bundle(tmp_path)
    make = Factory({("tensorrt", p): AttributeError("'Builder' object has no attribute 'build_engine'") for p in ALL})
    backend = open_backend(_cfg(tmp_path, precision="fp32"), bundle, make=make, probe=usable)
    assert backend.name == "onnxruntime"
    [(priority, line)] = said
    assert priority == log.ERROR and line.startswith("tensorrt fp32: a bug in the TensorRT backend (AttributeError: ")
    assert "test_trt_fallback.py:" in line and "please report it" in line, "where it was raised, for the report"
    assert "a bug in the TensorRT backend" in backend.degraded
    backend.deactivate()

    make = Factory({("onnxruntime", "fp32"): RuntimeError("a bug outside TensorRT")})
    with pytest.raises(RuntimeError, match="a bug outside TensorRT"):
        open_backend(_cfg(tmp_path, "onnxruntime", "fp32"), bundle, make=make, probe=usable)


def test_an_engine_cache_the_service_cannot_write_is_said_at_start(tmp_path, said):
    (tmp_path / "file").write_text("x")
    cfg = _cfg(tmp_path, precision="fp32")
    cfg.tensorrt.cache_dir = str(tmp_path / "file" / "engines")
    open_backend(cfg, _bundle(tmp_path), make=Factory(), probe=usable).deactivate()
    [(priority, line)] = said
    assert priority == log.WARNING and line.startswith(f"{tmp_path / 'file' / 'engines'}: {tmp_path / 'file'} is not")
    assert "every start builds the TensorRT engines again" in line and "[tensorrt] cache_dir" in line
    assert not (tmp_path / "engines").exists(), "only looked at"

    said[:] = []
    cfg.runtime.backend = "onnxruntime"
    open_backend(cfg, _bundle(tmp_path / "b"), make=Factory(), probe=usable).deactivate()
    assert said == [], "no TensorRT asked: its cache is not its business"


def test_the_engine_caches_own_check_is_asked_where_the_backend_has_one(tmp_path, monkeypatch):
    """Where cache.py is there (EngineCache.writable), its reason is the one said; it is asked
    only of a folder that exists (doctor and a start only look), and a check that raises is a line."""

    class StandInCache:
        def __init__(self, root, max_bytes):
            self.root, self.max_bytes = root, max_bytes

        def writable(self):
            return f"{self.root}: read-only file system (a cache of {self.max_bytes} bytes)"

    module = types.ModuleType("edgefusion.backends.tensorrt.cache")
    module.EngineCache = StandInCache
    monkeypatch.setitem(sys.modules, module.__name__, module)
    folder = tmp_path / "engines"
    folder.mkdir()
    assert cache_problem(folder, 64 << 20) == f"{folder}: read-only file system (a cache of {64 << 20} bytes)"
    assert cache_problem(tmp_path / "new" / "engines", 64 << 20) is None and not (tmp_path / "new").exists()

    def broken(self):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(StandInCache, "writable", broken)
    problem = cache_problem(folder, 64 << 20)
    assert problem.startswith(f"{folder}: the engine cache's check failed: a bug in the TensorRT backend (OSError: ")


def _last_line(names) -> str:
    return orjson.dumps(
        {"label": "yes", "confidence": 0.9, "latency_ms": 1.0, "sensors": dict.fromkeys(names, "OK")}
    ).decode()


def test_status_summary_start_and_exit_lines_say_degraded_until_a_reload_mends_it(tmp_path, said):
    bundle = _bundle(tmp_path)
    cfg = _cfg(tmp_path)
    degraded = open_backend(cfg, bundle, make=Factory({("tensorrt", p): BackendError("x") for p in ALL}), probe=usable)
    runtime = Runtime(degraded, {}, cfg.max_age_s(), 30.0)  # no sensors: only its lines are looked at
    mark = "DEGRADED onnxruntime int8 (asked for tensorrt int8)"
    assert status_line(runtime, _last_line(bundle.names), 30.0).startswith(f"{mark}; 30.0 ticks/s; ")
    assert status_line(runtime, None, 30.0) == f"{mark}; starting: no tick yet"
    report = SessionSummary(None).report(runtime)
    assert (report["backend"], report["precision"]) == ("onnxruntime", "int8")
    assert report["degraded"] == "asked for tensorrt int8, running onnxruntime int8: x"
    start = _start_line(bundle, degraded, cfg, False, None, ())
    assert start.endswith(
        "int8 on onnxruntime, at 30 Hz; source: simulated rig (seed 0, faults: none); "
        "results to: nowhere; degraded: asked for tensorrt int8, running onnxruntime int8: x"
    )
    assert mark in _exit_line(runtime, 1.0, {})

    runtime.swap_backend(open_backend(cfg, bundle, make=Factory(), probe=usable))  # a reload: engines built since
    line = status_line(runtime, _last_line(bundle.names), 30.0)
    assert line.startswith("30.0 ticks/s; ") and "DEGRADED" not in line
    assert SessionSummary(None).report(runtime)["degraded"] is None and "DEGRADED" not in _exit_line(runtime, 1.0, {})
    runtime.stop()


def test_a_reload_that_only_gets_a_fallback_says_so(tmp_path, said):
    """Through the real open_backend: TensorRT cannot run here."""
    root = make_bundle(tmp_path / "bundle")
    bundle = load_bundle(root)
    runtime = types.SimpleNamespace(next_backend=None, labels=bundle.labels)
    reloader(_cfg(tmp_path, precision="fp32"), root, runtime)()
    assert wait_for(lambda: runtime.next_backend is not None, timeout=30)
    assert wait_for(lambda: any("reloaded" in m for _, m in said))
    assert runtime.next_backend.name == "onnxruntime"
    [reloaded] = [(p, m) for p, m in said if "reloaded" in m]
    assert reloaded == (log.WARNING, f"reloaded {root}, degraded: {runtime.next_backend.degraded}")
    assert runtime.next_backend.degraded.startswith("asked for tensorrt fp32, running onnxruntime fp32: ")
    runtime.next_backend.deactivate()


def test_doctor_tries_what_the_config_asks_and_warns_with_the_reason(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, precision="fp16")
    [check] = doctor._backend(cfg)  # the real probe: TensorRT cannot run here
    assert check.status == "warn" and check.detail.startswith("[runtime] backend is tensorrt, but ")
    assert check.detail.endswith("a run goes on with onnxruntime fp16, degraded") and "python3-libnvinfer" in check.fix
    with pytest.raises(BackendError) as err:
        fallback_module.probe_tensorrt(cfg.tensorrt)
    assert str(err.value) in check.detail, "the probe's own reason"

    monkeypatch.setattr(fallback_module, "probe_tensorrt", usable)
    assert doctor._backend(cfg) == [doctor.Check("backend", "ok", "tensorrt fp16: stand-in TensorRT on no GPU")]
    assert doctor._backend(_cfg(tmp_path, "onnxruntime")) == [doctor.Check("backend", "ok", "onnxruntime int8")]


def test_doctor_warns_about_a_running_service_that_is_degraded(tmp_path):
    fake = tmp_path / "bin" / "systemctl"
    fake.parent.mkdir()
    status = "DEGRADED onnxruntime int8 (asked for tensorrt int8); 30.0 ticks/s; rgb OK"
    fake.write_text(f"#!/bin/sh\necho ActiveState=active\necho 'StatusText={status}'\n")
    fake.chmod(0o755)
    r = cli("doctor", "--json", env={**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"})
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert checks["service"]["status"] == "warn" and checks["service"]["detail"] == status
    assert checks["service"]["fix"] and r.returncode == 0, "a degraded service runs: nothing stops it"


# -- the real fallback on this machine, where TensorRT cannot run -----------------------------------


def _consecutive(ticks: list[int]) -> bool:
    return ticks == list(range(ticks[0], ticks[0] + len(ticks)))


def _about_tensorrt(lines: list[str]) -> list[str]:
    return [line for line in lines if "tensorrt" in line.lower()]


def test_demo_asked_for_tensorrt_says_why_not_in_a_line_and_runs_on_onnxruntime():
    r = cli("demo", "--backend", "tensorrt", "--seconds", "3", "--faults", "", "--json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    *lines, summary_line = r.stderr.strip().splitlines()
    summary = json.loads(summary_line)
    assert (summary["backend"], summary["precision"]) == ("onnxruntime", "fp32")
    assert summary["degraded"].startswith("asked for tensorrt fp32, running onnxruntime fp32: ")
    why = summary["degraded"].split(": ", 1)[1]
    assert 1 <= len(_about_tensorrt(lines)) <= 2 and any(why in line for line in lines), r.stderr
    results = [json.loads(line) for line in r.stdout.splitlines()]
    assert results and _consecutive([x["tick"] for x in results]), "results uninterrupted"
    assert summary["ticks"] == len(results) and all(x["label"] is not None for x in results[-10:])


def test_run_asked_for_tensorrt_says_why_not_at_start_and_runs_on_onnxruntime(tmp_path):
    out = tmp_path / "results.jsonl"
    (tmp_path / "file").write_text("x")
    cfg = tmp_path / "robot.toml"
    cfg.write_text(
        f'[runtime]\nbackend = "tensorrt"\n[output]\nstdout = false\nfile = "{out}"\n'
        f'[tensorrt]\ncache_dir = "{tmp_path / "file" / "engines"}"\n'
    )
    r = cli("run", "--config", str(cfg), "--seconds", "2")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    [start] = [i for i, line in enumerate(lines) if line.startswith("edgefusion: running bundle ")]
    assert "fp32 on onnxruntime" in lines[start]
    assert "; degraded: asked for tensorrt fp32, running onnxruntime fp32: " in lines[start]
    assert "engines again" in lines[0] and start == 2, "the cache and why TensorRT cannot run, said before it runs"
    assert len(_about_tensorrt(lines[:start])) == 2
    assert (
        lines[-1].startswith("edgefusion: stopped after ")
        and "DEGRADED onnxruntime fp32 (asked for tensorrt fp32)" in lines[-1]
    )
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert results and _consecutive([x["tick"] for x in results])

    r = cli("run", "--config", str(cfg), "--seconds", "1", "--backend", "onnxruntime")
    assert r.returncode == 0 and len(r.stderr.strip().splitlines()) == 2, r.stderr
    assert "degraded" not in r.stderr.lower(), "--backend overrides [runtime] backend: nothing asked of TensorRT"


def test_bench_and_eval_report_the_backend_they_used():
    r = cli("eval", "--backend", "tensorrt", "--samples", "7", "--no-noise", "--precisions", "fp32,int8", "--json")
    assert r.returncode == 0, r.stderr
    used = json.loads(r.stdout)["backends"]
    assert {p: (u["backend"], u["precision"]) for p, u in used.items()} == {
        "fp32": ("onnxruntime", "fp32"),
        "int8": ("onnxruntime", "int8"),
    }
    assert all(u["degraded"].startswith(f"asked for tensorrt {p}, running onnxruntime {p}: ") for p, u in used.items())

    r = cli("bench", "--backend", "tensorrt", "--ticks", "100", "--alloc-ticks", "1", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["backend"] == "onnxruntime" and report["degraded"].startswith("asked for tensorrt fp32, running ")
    r = cli("bench", "--ticks", "100", "--alloc-ticks", "1", "--json")
    assert json.loads(r.stdout)["degraded"] is None and r.stderr == ""


def test_the_fallback_and_the_config_import_no_gpu_library():
    """``import edgefusion.backends`` (open_backend) and the config's [tensorrt] table load
    neither TensorRT nor a CUDA library: a CPU machine runs them, and `run` installs its signal
    handlers before anything heavy."""
    code = (
        "import sys, edgefusion.backends, edgefusion.config, edgefusion.app, edgefusion.doctor; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'cuda', 'pycuda')))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
