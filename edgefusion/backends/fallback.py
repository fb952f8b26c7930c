"""``open_backend``: the backend the config asks for, or the best one that runs here.

A robot whose TensorRT engine does not build (a graph the parser refuses at int8, a plan gone
stale, a full disk) should run slower, not crash-loop under systemd: TensorRT is tried at the
asked precision, then at each more precise one the bundle has (int8 -> fp16 -> fp32), then ONNX
Runtime at the asked precision. Each step that fails is one log line, and the backend that runs
carries ``degraded`` so STATUS, ``doctor``, the summary and the exit line say what was lost.

What counts as a failed step: a ``BackendError`` (the backend's own one-line refusal) or an
``ImportError`` (its library or code is not on this machine). Any other exception from the
TensorRT path is a bug in it: the robot still falls back (a bug in an optional accelerator must
not stop the robot), but the line is an error naming the exception and where it was raised, and
the degraded mark says "a bug". Outside the TensorRT path (the bundle, ONNX Runtime, this module)
nothing is caught: an error there stops the start as it always did.

TensorRT's library and the CUDA driver are probed once before the chain: without them every
precision fails for the same reason, which is then said once instead of three times.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path

from edgefusion import log
from edgefusion.backends import make_backend, not_installed
from edgefusion.backends.base import Backend, BackendError, first_line
from edgefusion.bundle import Bundle

LADDER = ("int8", "fp16", "fp32")  # TensorRT's order: fastest first, then the ones likelier to build


def probe_tensorrt(options) -> str:
    """What TensorRT would run on here, e.g. "TensorRT 10.3.0 on Orin (compute 8.7, 16 SMs)
    through cuda-python"; a BackendError (one line) where it cannot run at all: the library is
    missing, or there is no CUDA driver or GPU. Builds nothing."""
    try:
        from edgefusion.backends.tensorrt.cuda import open_cuda
        from edgefusion.backends.tensorrt.runtime_trt import import_tensorrt, trt_version

        trt = import_tensorrt()
        cuda = open_cuda(options.cuda)
    except ImportError as err:
        raise not_installed(err) from err
    try:
        gpu = cuda.gpu()
    finally:
        cuda.close()
    cc = ".".join(str(n) for n in gpu.compute_capability)
    return f"TensorRT {trt_version(trt)} on {gpu.name} (compute {cc}, {gpu.sm_count} SMs) through {cuda.name}"


def cache_problem(folder: Path, max_bytes: int) -> str | None:
    """Why TensorRT's engine cache at ``folder`` cannot be written (one line), or None.

    Said at start: a cache the service cannot write is otherwise found out only as a build of
    minutes at every boot. Only looks: a folder not there yet is judged by its nearest existing
    parent (it will be created), never made here."""
    if folder.is_dir():
        from edgefusion.backends.tensorrt.cache import EngineCache

        try:
            return EngineCache(folder, max_bytes).writable()
        except Exception as err:  # a check that breaks is said as such, never a start that fails
            return f"{folder}: the engine cache's check failed: {failure(err)[0]}"
    from edgefusion.args import unwritable

    problem = unwritable(folder)
    if problem is None:
        return None
    return (
        f"{folder}: {problem}, so every start builds the TensorRT engines again (minutes); "
        "give the service user that folder, or set [tensorrt] cache_dir"
    )


def open_backend(
    cfg,
    bundle: Bundle,
    make: Callable[..., Backend] = make_backend,
    probe: Callable[..., str] = probe_tensorrt,
) -> Backend:
    """The active backend for ``cfg.runtime`` (backend, precision, threads) and ``cfg.tensorrt``.

    ``make`` and ``probe`` are ``make_backend`` and ``probe_tensorrt``; a test gives its own to
    fail at chosen steps."""
    name, precision = cfg.runtime.backend, cfg.runtime.precision
    options = {"threads": cfg.runtime.threads, "tensorrt": cfg.tensorrt}
    why = None
    if name == "tensorrt":
        if precision in bundle.precisions:
            backend, why = _tensorrt(cfg, bundle, make, probe)
            if backend is not None:
                backend.degraded = _degraded(name, precision, backend, why)
                return backend
        name = "onnxruntime"  # the fallback; or, for a precision the bundle lacks, the one to refuse it
    backend = make(name, bundle, precision, **options)
    backend.activate()
    backend.degraded = _degraded(cfg.runtime.backend, precision, backend, why)
    return backend


def _tensorrt(cfg, bundle: Bundle, make, probe) -> tuple[Backend | None, str | None]:
    """The first TensorRT backend that activates, from the asked precision up the ladder, and
    why the asked one did not (None if it did); (None, why) when none did."""
    precision = cfg.runtime.precision
    folder = cfg.tensorrt.cache_path()
    problem = cache_problem(folder, cfg.tensorrt.max_cache_mb << 20)
    if problem:
        from edgefusion.backends.tensorrt.cache import say_unwritable

        say_unwritable(folder, problem)
    after = f"onnxruntime {precision}"
    try:
        probe(cfg.tensorrt)
    except Exception as err:
        return None, _failed("tensorrt", err, after)
    steps = [p for p in LADDER[LADDER.index(precision) :] if p in bundle.precisions]
    first_why = None
    for i, p in enumerate(steps):
        try:
            backend = make("tensorrt", bundle, p, threads=cfg.runtime.threads, tensorrt=cfg.tensorrt)
            backend.activate()
            return backend, first_why
        except Exception as err:
            why = _failed(f"tensorrt {p}", err, f"tensorrt {steps[i + 1]}" if i + 1 < len(steps) else after)
            first_why = first_why or why
    return None, first_why


def failure(err: Exception) -> tuple[str, bool]:
    """Why the TensorRT path failed, in one line, and whether that is a bug (not a BackendError
    or ImportError): a bug names its exception and where it was raised, for the report."""
    if isinstance(err, (BackendError, ImportError)):
        return " ".join(str(err if isinstance(err, BackendError) else not_installed(err)).split()), False
    frame = traceback.extract_tb(err.__traceback__)[-1]
    where = f"{Path(frame.filename).name}:{frame.lineno}"
    return (
        f"a bug in the TensorRT backend ({type(err).__name__}: {first_line(err)}, at {where}); please report it",
        True,
    )


def _failed(step: str, err: Exception, then: str) -> str:
    """Say in one line why ``step`` failed and what is tried next; the reason, for the degraded mark."""
    why, bug = failure(err)
    (log.error if bug else log.warning)(f"{step}: {why}; trying {then}")
    return why


def _degraded(asked_name: str, asked_precision: str, backend: Backend, why: str | None) -> str | None:
    if why is None:
        return None
    return f"asked for {asked_name} {asked_precision}, running {backend.name} {backend.precision}: {why}"


def degraded_mark(backend: Backend) -> str:
    """The short form for STATUS and the exit line, e.g. "DEGRADED onnxruntime int8 (asked for
    tensorrt int8)"; "" when the backend is what was asked. (``degraded`` starts "asked for NAME
    PRECISION," as _degraded writes it.)"""
    if not backend.degraded:
        return ""
    return f"DEGRADED {backend.name} {backend.precision} ({backend.degraded.partition(',')[0]})"
