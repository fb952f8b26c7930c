"""``fake_gpu``: the FAKE CUDA runtime (and the FAKE TensorRT, where tests/fakes has it) installed
where the backend imports them from, for one test.

    pytest_plugins = ["fakes.fixtures"]  # in a test module: its tests may then ask for fake_gpu
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from fakes import fake_cudart


@dataclass
class FakeGpu:
    cudart: ModuleType  # fakes.fake_cudart
    trt: ModuleType | None  # fakes.fake_tensorrt, None until that file exists


@pytest.fixture
def fake_gpu(monkeypatch):
    fake_cudart.reset()
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", fake_cudart)
    trt = None
    if (Path(__file__).parent / "fake_tensorrt.py").exists():
        trt = importlib.import_module("fakes.fake_tensorrt")
        trt.reset()
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
    yield FakeGpu(fake_cudart, trt)
    fake_cudart.reset()


@pytest.fixture
def no_cuda_device():
    """For tests of the real cuda-bindings without a driver: skipped where they see a CUDA device."""
    real = importlib.import_module("cuda.bindings.runtime")
    try:
        err, count = real.cudaGetDeviceCount()
    except Exception:  # no libcuda at all (cuda.pathfinder's DynamicLibNotFoundError)
        return
    if err == real.cudaError_t.cudaSuccess and count > 0:
        pytest.skip("this machine has a CUDA device")
