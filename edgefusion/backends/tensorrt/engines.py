"""A bundle variant's TensorRT engines: from the cache where a plan is current, else built now
(minutes, once); and what ``edgefusion engines build|list|clear`` do with the cache.

One engine per modality encoder and one for the head. A cached plan that TensorRT will not load
(it returns None, it does not raise: another TensorRT, a damaged file) is removed and built again
once; a plan just built that still does not load is a BackendError, which the backend's fallback
takes to the next precision. A cache the process cannot write is said once, at start, and the
engines are built in memory: never a silent rebuild at every boot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from edgefusion import __version__, log
from edgefusion.backends.base import BackendError
from edgefusion.backends.tensorrt.build import build_plan, build_settings
from edgefusion.backends.tensorrt.cache import EngineCache, gpu_facts, plan_key, say_unwritable
from edgefusion.backends.tensorrt.cuda.api import GpuInfo
from edgefusion.backends.tensorrt.logger import trt_logger
from edgefusion.backends.tensorrt.options import TensorRTOptions
from edgefusion.backends.tensorrt.runtime_trt import import_tensorrt, trt_version
from edgefusion.bundle import Bundle
from edgefusion.service.notify import Notifier

if TYPE_CHECKING:
    import tensorrt

BUILD_TIMEOUT_S = 900  # systemd waits this much longer before each graph's build (EXTEND_TIMEOUT_USEC)


@dataclass
class Engines:
    runtime: Any  # trt.Runtime: must outlive the engines
    engines: dict[str, Any]  # graph role (each modality name, and "head") -> trt.ICudaEngine
    built: list[str]  # roles built now
    cached: list[str]  # roles loaded from the cache


def roles(bundle: Bundle) -> tuple[str, ...]:
    return (*bundle.names, "head")


def key_facts(trt: Any, bundle: Bundle, precision: str, role: str, options: TensorRTOptions, gpu: GpuInfo) -> dict:
    """Every input that makes a plan stale: the graph's bytes (its manifest sha256), the int8
    calibration, TensorRT's version, the GPU, the precision and the builder's settings."""
    rel = bundle.graph_path(precision, role).relative_to(bundle.root).as_posix()
    calibration = bundle.manifest.get("calibration", {}).get("sha256") if precision == "int8" else None
    return {
        "graph_sha256": bundle.manifest["files"][rel]["sha256"],
        "calibration_sha256": calibration,
        "tensorrt": trt_version(trt),
        "gpu": gpu_facts(gpu),
        "precision": precision,
        "builder": build_settings(trt, precision, options),
    }


def engine_cache(options: TensorRTOptions) -> EngineCache:
    return EngineCache(options.cache_path(), options.max_cache_mb << 20)


def load_engines(
    trt: Any, bundle: Bundle, precision: str, options: TensorRTOptions, gpu: GpuInfo, build: bool = True
) -> Engines:
    loader = _Loader(trt, bundle, precision, options, gpu)
    if loader.unwritable and build:
        say_unwritable(loader.cache.root, loader.unwritable + "; building in memory for this run")
    try:
        for role in roles(bundle):
            loader.load(role, build)
    finally:
        loader.notifier.close()
    return loader.out


class _Loader:
    """One variant's engines, role by role: the cache, the builder's timing cache carried from
    one build to the next, and systemd told to wait before each build."""

    def __init__(self, trt: Any, bundle: Bundle, precision: str, options: TensorRTOptions, gpu: GpuInfo):
        self.trt, self.bundle, self.precision, self.options, self.gpu = trt, bundle, precision, options, gpu
        self.logger = trt_logger(trt)
        runtime: tensorrt.Runtime = trt.Runtime(self.logger)
        self.runtime = runtime
        self.cache = engine_cache(options)
        self.unwritable = self.cache.writable()
        self.timing = self.cache.timing_cache(trt_version(trt), gpu)
        self.notifier = Notifier()
        self.out = Engines(runtime, {}, [], [])

    def load(self, role: str, build: bool) -> None:
        precision, cache = self.precision, self.cache
        facts = key_facts(self.trt, self.bundle, precision, role, self.options, self.gpu)
        key = plan_key(facts)
        plan = cache.lookup(key)
        engine: tensorrt.ICudaEngine | None = None if plan is None else self.runtime.deserialize_cuda_engine(plan)
        if engine is not None:
            self.out.engines[role] = engine
            self.out.cached.append(role)
            return
        if plan is not None:
            log.warning(f"the cached TensorRT engine for {role} ({precision}) does not load; building it again")
            cache.discard(key)
        if not build:
            raise BackendError(
                f"no current TensorRT engine for {role} ({precision}) of {self.bundle.root} in {cache.root}: "
                f"build them with `edgefusion engines build --bundle {self.bundle.root} --precision {precision}`"
            )
        plan, seconds = self._build(role)
        engine = self.runtime.deserialize_cuda_engine(plan)
        if engine is None:
            why = self.logger.last_error or "TensorRT logged no error"
            raise BackendError(f"the TensorRT engine just built for {role} ({precision}) does not load: {why}")
        if not self.unwritable:
            try:
                cache.store(key, plan, _meta(self.bundle, precision, role, facts, seconds))
                cache.store_timing_cache(trt_version(self.trt), self.gpu, self.timing or b"")
            except OSError as err:  # the engine runs all the same; only the next start pays for it
                log.warning(
                    f"could not keep the TensorRT engine for {role} ({precision}) in {cache.root} "
                    f"({err.strerror or err}): it runs now, and is built again at the next start"
                )
        self.out.engines[role] = engine
        self.out.built.append(role)

    def _build(self, role: str) -> tuple[bytes, float]:
        where = f"{role} ({self.precision}) of {self.bundle.root}"
        log.notice(f"building the TensorRT engine for {where}: this takes minutes, once")
        self.notifier.extend_timeout(BUILD_TIMEOUT_S)
        start = time.monotonic()
        onnx = self.bundle.graph_bytes(self.precision, role)
        plan, self.timing = build_plan(self.trt, self.logger, onnx, role, self.precision, self.options, self.timing)
        seconds = time.monotonic() - start
        log.notice(
            f"built the TensorRT engine for {role} ({self.precision}) in {seconds:.1f} s ({len(plan) / 1e6:.1f} MB)"
        )
        return plan, seconds


def _meta(bundle: Bundle, precision: str, role: str, facts: dict, seconds: float) -> dict:
    return {
        "facts": facts,
        "bundle": {"name": bundle.manifest.get("name"), "root": str(bundle.root)},
        "role": role,
        "precision": precision,
        "graph": bundle.graph_path(precision, role).relative_to(bundle.root).as_posix(),
        "built_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "build_seconds": round(seconds, 3),
        "edgefusion_version": __version__,
    }


# `edgefusion engines ...` ----------------------------------------------------------------------------
def cli_options(cfg: Any, cache_dir: str | None, workspace_mb: int | None) -> TensorRTOptions:
    """The config's ``[tensorrt]`` (defaults without a config, or before the config has that
    table), with the command line's ``--cache-dir`` and ``--workspace-mb`` over it."""
    options = getattr(cfg, "tensorrt", None) or TensorRTOptions()
    if cache_dir is not None:
        options = replace(options, cache_dir=cache_dir)
    if workspace_mb is not None:
        options = replace(options, workspace_mb=workspace_mb)
    return options


def build_all(
    bundle: Bundle, precisions: list[str], options: TensorRTOptions, gpu: GpuInfo | None = None
) -> list[dict]:
    """Build (or find current) every engine of each precision, as the service would at start;
    one row per engine: precision, role, and whether it was built now or found in the cache."""
    trt = import_tensorrt()
    unwritable = engine_cache(options).writable()
    if unwritable:  # a build no start will find is a lost build
        raise BackendError(unwritable)
    if gpu is None:
        gpu = _this_gpu(options)
    rows = []
    for precision in precisions:
        engines = load_engines(trt, bundle, precision, options, gpu)
        rows += [{"precision": precision, "role": r, "how": "built"} for r in engines.built]
        rows += [{"precision": precision, "role": r, "how": "cached"} for r in engines.cached]
        del engines  # one variant's engines on the GPU at a time
    return rows


def _this_gpu(options: TensorRTOptions) -> GpuInfo:
    from edgefusion.backends.tensorrt.cuda import open_cuda

    cuda = open_cuda(options.cuda)
    try:
        return cuda.gpu()
    finally:
        cuda.close()


def list_entries(options: TensorRTOptions) -> list[dict]:
    return engine_cache(options).entries()


def clear(options: TensorRTOptions, bundle_name: str | None = None) -> int:
    return engine_cache(options).clear(bundle_name)


def render_entries(entries: list[dict], root: str) -> str:
    """``engines list`` as a table, least recently used first."""
    if not entries:
        return f"no TensorRT engines in {root}"
    header = ("bundle", "role", "precision", "TensorRT", "GPU", "bytes", "built", "last used")
    rows = [header]
    for e in entries:
        facts = e.get("facts", {})
        gpu = facts.get("gpu", {})
        cc = ".".join(str(n) for n in gpu.get("compute_capability", []))
        rows.append(
            (
                str(e.get("bundle", {}).get("name")),
                str(e.get("role")),
                str(e.get("precision")),
                str(facts.get("tensorrt")),
                f"{gpu.get('name')} (sm {cc}, {gpu.get('sm_count')} SMs)",
                str(e["bytes"]),
                str(e.get("built_utc")),
                e["last_used"],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([f"{len(entries)} TensorRT engines in {root}:", *lines])


def render_built(rows: list[dict], root: str) -> str:
    built = sum(r["how"] == "built" for r in rows)
    lines = [f"{r['precision']:<5} {r['role']:<12} {r['how']}" for r in rows]
    return "\n".join([*lines, f"{built} built, {len(rows) - built} already current, in {root}"])
