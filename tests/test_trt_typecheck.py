"""The checks that stand in for TensorRT and a GPU here can fail, and those that need them run
their own code here.

``.ci/typecheck-tensorrt`` (mypy against tensorrt-stubs) flags code that misuses TensorRT 10's
API, passes code that uses it rightly, and holds "TensorRT 8.6 only" markers to being needed;
``hw_tests/test_tensorrt.py`` (the Jetson's) runs whole on the fake TensorRT and CUDA runtime;
``bench/cuda_graphs.py`` says in one line why it cannot run on a machine without CUDA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "typecheck-tensorrt"
FAKES = ROOT / "tests" / "fakes"
# The hardware test's process, with the fakes where the backend imports TensorRT and CUDA from.
ON_FAKES = """
import sys
sys.path.insert(0, sys.argv[1])
from fakes import fake_cudart, fake_tensorrt
sys.modules["cuda.bindings.runtime"] = fake_cudart
sys.modules["tensorrt"] = fake_tensorrt
import pytest
sys.exit(pytest.main(sys.argv[2:]))
"""

HEADER = """\
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorrt as trt
"""

WRONG = """
def run(ctx: trt.IExecutionContext, stream: int) -> bool:
    ctx.set_tensor_address("probs", "0x7f00")  # an address is an int
    ctx.execute_async_v2([], stream)  # gone in TensorRT 10
    return ctx.execute_async_v3(stream)


def configure(config: trt.IBuilderConfig) -> None:
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)  # type: ignore[attr-defined]  # TensorRT 8.6
"""

RIGHT = """
def run(ctx: trt.IExecutionContext, stream: int, ptr: int) -> bool:
    ctx.set_tensor_address("probs", ptr)
    return ctx.execute_async_v3(stream)


def configure(config: trt.IBuilderConfig, major: int) -> None:
    if major < 10:
        config.max_workspace_size = 1 << 30  # type: ignore[attr-defined]  # TensorRT 8.6
    else:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
"""


def typecheck(*paths: Path) -> subprocess.CompletedProcess:
    """The CI script itself, so the test runs the very code CI runs; skip where its prerequisites
    (mypy, the stubs wheel from the package index) are not to be had (exit status 2)."""
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, paths)], capture_output=True, text=True, timeout=300)
    if done.returncode == 2:
        pytest.skip(done.stderr.strip())
    return done


def write(path: Path, body: str) -> Path:
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def test_misuse_of_the_tensorrt_api_is_flagged_in_our_file_only(tmp_path):
    wrong = write(tmp_path / "wrong_trt.py", WRONG)
    right = write(tmp_path / "right_trt.py", RIGHT)
    done = typecheck(wrong, right)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stdout.splitlines() if ": error: " in line]
    assert all(line.startswith(str(wrong)) for line in errors), errors  # none from the stubs, none in right_trt.py
    found = {int(line.split(":")[1]): line for line in errors}
    lines = wrong.read_text().splitlines()

    def at(text: str) -> str:
        return found.get(next(i for i, line in enumerate(lines, 1) if text in line), "")

    assert "set_tensor_address" in at('"0x7f00"') and '"str"' in at('"0x7f00"')
    assert "execute_async_v2" in at("execute_async_v2") and "execute_async_v3" in at("execute_async_v2")
    assert "Unused" in at("set_memory_pool_limit")  # a "TensorRT 8.6" marker on a call 10.x has
    assert len(errors) == 3, errors
    assert "3 error(s)" in done.stderr


def test_right_use_passes(tmp_path):
    done = typecheck(write(tmp_path / "right_trt.py", RIGHT))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no errors" in done.stdout and "inside the stubs ignored" in done.stdout


def test_a_file_using_tensorrt_without_its_types_is_named_as_unchecked(tmp_path):
    untyped = tmp_path / "untyped_trt.py"
    untyped.write_text(
        "def run(trt, engine, stream):\n    return engine.create_execution_context().execute_async_v2([], stream)\n"
    )
    done = typecheck(untyped)
    assert done.returncode == 0, done.stdout + done.stderr  # everything there is Any: nothing to flag...
    assert f"{untyped} imports no TensorRT type" in done.stdout  # ...and the script says so


def test_a_stubs_source_without_a_wheel_is_one_line(tmp_path):
    env = {**os.environ, "TRT_STUBS": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(SCRIPT.parent)], capture_output=True, text=True, timeout=60, env=env
    )
    if "mypy is not installed" in done.stderr:
        pytest.skip(done.stderr.strip())
    assert done.returncode == 2
    assert done.stderr.strip() == f"typecheck-tensorrt: TRT_STUBS={tmp_path} holds no tensorrt_stubs-*.whl"


@pytest.mark.skipif(
    not all((FAKES / f).exists() for f in ("fake_tensorrt.py", "fake_cudart.py", "fake_trt_context.py")),
    reason="no fake TensorRT and CUDA runtime here (tests/fakes)",
)
def test_the_jetson_test_runs_whole_on_the_fakes(tmp_path):
    """Every test of hw_tests/test_tensorrt.py runs (pycuda's skips without pycuda) and passes on
    the fakes, at its own sample count and thresholds, and its report holds every figure: so on a
    Jetson it fails on the device's numbers, not on its own code."""
    report = tmp_path / "hw_report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFUSION_")}
    env["EDGEFUSION_HW_REPORT"] = str(report)
    args = ["-q", "-p", "no:cacheprovider", "-rs", str(ROOT / "hw_tests" / "test_tensorrt.py")]
    done = subprocess.run(
        [sys.executable, "-c", ON_FAKES, str(ROOT / "tests"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all("pycuda" in line for line in skipped), skipped
    figures = json.loads(report.read_text())
    assert figures["tensorrt"] and figures["samples"] == 1000
    assert sorted(figures["precisions"]) == ["fp16", "fp32", "int8"]
    for precision in figures["precisions"].values():
        assert len(precision["patterns"]) == 7
        assert set(precision["latency_us"]) == {"all_encoders", "head_only"}
    assert list(figures["cache"]) == ["first", "second", "tensorrt_upgraded", "sidecars_edited"]
    assert "cuda-python" in figures["eager"]


@pytest.mark.skipif(
    not (ROOT / "edgefusion/backends/tensorrt/cuda/__init__.py").exists(), reason="no CUDA adapter (open_cuda) here"
)
def test_the_cuda_graphs_bench_says_in_one_line_that_there_is_no_cuda():
    pytest.importorskip("cuda.bindings.runtime")
    from edgefusion.backends.base import BackendError
    from edgefusion.backends.tensorrt.cuda import open_cuda

    try:
        open_cuda("cuda-python").gpu()
    except BackendError:
        pass
    else:
        pytest.skip("this machine has a CUDA GPU: the bench runs for real (bench/cuda_graphs.py)")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cuda_graphs.py")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA driver or GPU here" in lines[0], done.stderr
