"""The backends the HIL suite checks, by id: which run on this machine, and each one built alike.

One conformance suite runs against every backend present (as ONNX's backend tests do for
runtimes), so an id names both a library and where it runs: ONNX Runtime on the CPU or through its
CUDA provider, TensorRT on a real GPU, or the TensorRT backend on the repository's FAKE TensorRT and
CUDA runtime (``tests/fakes``: the graphs run through ONNX Runtime on host memory dressed as device
memory). The fake checks the backend's own code (bindings, caching, absence, CUDA graphs) where CI
has no GPU; it says nothing of TensorRT's numerics or speed, and is named "fake" wherever it shows.

Nothing here imports a runtime at import time, nor the fakes ever: ``hw_tests/fake_gpu.py``
installs them for a test, and ``make`` refuses to call a backend the one it is not.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

from edgefusion.backends.base import Backend, BackendError
from edgefusion.bundle import Bundle
from edgefusion.errors import EdgefusionError

BACKEND_IDS = ("onnxruntime-cpu", "onnxruntime-cuda", "tensorrt", "tensorrt-fake")
FAKE = "tensorrt-fake"
# Where a checkout keeps the fake TensorRT and CUDA runtime (an installed wheel has no tests/).
FAKES = Path(__file__).resolve().parents[2] / "tests" / "fakes"
_PROVIDERS = {
    "onnxruntime-cpu": ["CPUExecutionProvider"],
    "onnxruntime-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


def missing(backend_id: str) -> str | None:
    """Why ``backend_id`` cannot run here (one line naming what is missing and how to get it), or None."""
    _known(backend_id)
    if backend_id == "onnxruntime-cpu":
        return None  # edgefusion's own dependency: wherever edgefusion imports, it runs
    if backend_id == "onnxruntime-cuda":
        from edgefusion.backends.onnxruntime.session import import_onnxruntime

        providers = import_onnxruntime().get_available_providers()
        if "CUDAExecutionProvider" in providers:
            return None
        return (
            f"this onnxruntime has no CUDAExecutionProvider (it has {', '.join(providers)}): install onnxruntime-gpu "
            "(on a Jetson, the wheel for its JetPack from the Jetson Zoo)"
        )
    if backend_id == "tensorrt":
        return _tensorrt_missing()
    return _fake_missing()


@functools.cache
def _tensorrt_missing() -> str | None:
    """Probed once a process: TensorRT and the GPU do not come and go during a run, and a probe while
    the fake is installed would find the fake."""
    from edgefusion.backends.fallback import probe_tensorrt
    from edgefusion.backends.tensorrt.options import TensorRTOptions

    if fake_installed():
        raise RuntimeError("probing real TensorRT while the fake is installed: probe before hw_tests/fake_gpu.py")
    try:
        probe_tensorrt(TensorRTOptions())
    except BackendError as err:
        return str(err)
    return None


def _fake_missing() -> str | None:
    if not (FAKES / "fake_tensorrt.py").is_file():
        return f"the TensorRT fake lives in a checkout's tests/fakes (not at {FAKES}): run the suite from a checkout"
    # What the fakes themselves import: onnx to read the graphs, cuda-bindings for the real enums.
    for module, package in (("onnx", "onnx"), ("cuda.bindings", "cuda-bindings")):
        if not _importable(module):
            return f"the TensorRT fake needs {package}: pip install -e '.[dev]'"
    return None


def _importable(module: str) -> bool:
    """Found without importing it (its parent package is imported, as find_spec does)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def fake_installed() -> bool:
    """Whether ``import tensorrt`` now finds the repository's fake (hw_tests/fake_gpu.py put it there)."""
    trt = sys.modules.get("tensorrt")
    return trt is not None and trt.__name__ != "tensorrt"


def selected(option: str) -> list[str]:
    """The ids ``--backend`` names (comma-separated), in the order given; empty: every id present
    here, the fake only where real TensorRT is not (there the real one is checked instead; name
    the fake to check it too). A named id that is missing is kept: its tests skip, saying why."""
    names = [n.strip() for n in option.split(",") if n.strip()]
    if not names:
        present = [b for b in BACKEND_IDS if missing(b) is None]
        return [b for b in present if b != FAKE or "tensorrt" not in present]
    for n in names:
        _known(n)
    return list(dict.fromkeys(names))


def _known(backend_id: str) -> None:
    if backend_id not in BACKEND_IDS:
        raise EdgefusionError(f"--backend: unknown backend {backend_id!r}; choose from {', '.join(BACKEND_IDS)}")


def make(backend_id: str, bundle: Bundle, precision: str, tensorrt=None) -> Backend:
    """A new, inactive backend of that id at ``precision``. ``tensorrt``: the ``[tensorrt]`` options
    (TensorRTOptions; None for the defaults, whose engine cache is the robot's: a HIL run then
    reuses the engines the robot built). The fake's backend is TensorRT's own class, named
    "tensorrt-fake" so that every line of a run (STATUS, the summary) says it was the fake."""
    _known(backend_id)
    if backend_id in _PROVIDERS:
        from edgefusion.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle, precision, providers=_PROVIDERS[backend_id])
    if fake_installed() != (backend_id == FAKE):
        raise BackendError(
            f"{backend_id}: the TensorRT fake is {'' if fake_installed() else 'not '}installed "
            "(hw_tests/fake_gpu.py installs it for the tests of tensorrt-fake only)"
        )
    from edgefusion.backends.tensorrt import TensorRTBackend

    backend = TensorRTBackend(bundle, precision, tensorrt)
    if backend_id == FAKE:
        backend.name = FAKE
    return backend
