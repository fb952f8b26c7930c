"""The HIL suite's backend ids (edgefusion.hil.backends): ``--backend`` parsed, why an id is not
present here, and each id built as what it says it is (the fake never passed off as TensorRT)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from edgefusion.backends import BackendError
from edgefusion.backends.onnxruntime.session import import_onnxruntime
from edgefusion.backends.tensorrt.options import TensorRTOptions
from edgefusion.bundle import default_bundle_path, load_bundle
from edgefusion.errors import EdgefusionError
from edgefusion.hil import backends
from edgefusion.hil.backends import BACKEND_IDS, FAKE, make, missing, selected

pytest_plugins = ["fakes.fixtures"]  # the fake_gpu fixture


@pytest.fixture(scope="module")
def demo():
    return load_bundle(default_bundle_path())


def test_empty_means_every_backend_present_here_and_the_fake_only_without_real_tensorrt():
    present = selected("")
    assert present == selected(" , ") and present[0] == "onnxruntime-cpu"
    assert all(missing(b) is None for b in present)
    assert [b for b in BACKEND_IDS if b not in present and b != FAKE] == [
        b for b in BACKEND_IDS if missing(b) is not None and b != FAKE
    ]
    if missing("tensorrt") is None:
        assert FAKE not in present, "real TensorRT is checked instead of its fake"
    else:
        assert FAKE in present and "tensorrt" not in present


def test_named_ids_keep_their_order_once_each_even_where_missing():
    assert selected(" tensorrt, onnxruntime-cpu ,tensorrt") == ["tensorrt", "onnxruntime-cpu"]


@pytest.mark.parametrize("option", ["onnxruntime-cpu,tensorrtx", "ONNXRUNTIME-CPU"])
def test_an_unknown_id_is_one_line_naming_the_known_ones(option):
    with pytest.raises(EdgefusionError) as err:
        selected(option)
    line = str(err.value)
    assert "\n" not in line and line.startswith("--backend: unknown backend")
    assert all(b in line for b in BACKEND_IDS)
    with pytest.raises(EdgefusionError, match="unknown backend 'cuda'"):
        missing("cuda")


def test_missing_says_what_is_missing_here_and_how_to_get_it():
    assert missing("onnxruntime-cpu") is None
    providers = import_onnxruntime().get_available_providers()
    if "CUDAExecutionProvider" in providers:
        assert missing("onnxruntime-cuda") is None
    else:
        reason = missing("onnxruntime-cuda")
        assert "no CUDAExecutionProvider" in reason and "onnxruntime-gpu" in reason
        assert all(p in reason for p in providers), "what this onnxruntime has"
    if importlib.util.find_spec("tensorrt") is None:
        assert missing("tensorrt").startswith("TensorRT is not installed here (No module named 'tensorrt')")
    assert missing(FAKE) is None, "a checkout with the dev extras has the fake"


def test_the_fake_outside_a_checkout_is_said_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(backends, "FAKES", tmp_path / "tests" / "fakes")
    reason = missing(FAKE)
    assert f"not at {tmp_path / 'tests' / 'fakes'}" in reason and "run the suite from a checkout" in reason


def test_onnxruntime_cpu_runs_on_the_cpu_provider_only(demo):
    with make("onnxruntime-cpu", demo, "fp32") as backend:
        assert {p for s in backend._sessions.values() for p in s.get_providers()} == {"CPUExecutionProvider"}
    assert make("onnxruntime-cuda", demo, "fp16").providers[0] == "CUDAExecutionProvider"


def test_the_fake_runs_only_as_tensorrt_fake_and_says_so(demo, fake_gpu, tmp_path):
    with pytest.raises(BackendError, match=r"^tensorrt: the TensorRT fake is installed \(") as err:
        make("tensorrt", demo, "fp32")
    assert "\n" not in str(err.value)
    with make(FAKE, demo, "fp16", tensorrt=TensorRTOptions(cache_dir=str(tmp_path))) as backend:
        assert backend.name == FAKE and backend.facts["gpu"].startswith("Fake GPU")
        backend.submit([True] * 3, [True] * 3)
        assert np.isclose(backend.wait()[1].sum(), 1.0, atol=1e-3)


def test_tensorrt_fake_without_the_fake_installed_is_refused(demo):
    with pytest.raises(BackendError, match=r"^tensorrt-fake: the TensorRT fake is not installed \(hw_tests/fake_gpu"):
        make(FAKE, demo, "fp32")
