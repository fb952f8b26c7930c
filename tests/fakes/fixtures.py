"""``fake_gpu``: the FAKE CUDA runtime and the FAKE TensorRT installed where the backend imports
them from, for one test.

    pytest_plugins = ["fakes.fixtures"]  # in a test module: its tests may then ask for fake_gpu
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from types import ModuleType

import pytest

from fakes import fake_cudart, fake_tensorrt


@dataclass
class FakeGpu:
    cudart: ModuleType  # fakes.fake_cudart
    trt: ModuleType  # fakes.fake_tensorrt


@pytest.fixture
def fake_gpu(monkeypatch):
    fake_cudart.reset()
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", fake_cudart)
    fake_tensorrt.reset()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt)
    yield FakeGpu(fake_cudart, fake_tensorrt)
    fake_cudart.reset()
    fake_tensorrt.reset()


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
