"""The engine cache: serialized plans in the service's state directory, keyed on everything that
makes a plan stale, with their metadata beside them.

Each entry is ``<key>.plan`` (the plan exactly as TensorRT serialized it, loadable by any tool)
and ``<key>.json`` (the key's facts, the bundle and graph it came from, the plan's sha256). The
sidecar is written last, so an entry exists only once its plan is whole; a sidecar whose plan is
missing or differs from its sha256 is a miss, and is removed. Last use is the sidecar's mtime
(touched on every hit), and the least recently used plans beyond ``max_bytes`` are removed after
each store. The key holds no role or bundle name: a plan depends on the graph's bytes, not on
what a bundle calls it, so identical graphs share one plan.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from edgefusion import log
from edgefusion.atomic import atomic_write
from edgefusion.backends.tensorrt.cuda.api import GpuInfo

PLAN, META = ".plan", ".json"
TIMING_PREFIX = "timing-"


_SAID_UNWRITABLE: set[Path] = set()  # cache folders whose problem this process has said


def say_unwritable(root: Path, reason: str) -> None:
    """One warning per cache folder and process: the start says it, and the fallback's next
    precision, trying the same folder, does not say it again."""
    if root not in _SAID_UNWRITABLE:
        _SAID_UNWRITABLE.add(root)
        log.warning(reason)


def plan_key(facts: dict) -> str:
    """The sha256 of the facts as canonical JSON (sorted keys, no spaces): equal facts, equal key."""
    return hashlib.sha256(json.dumps(facts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def gpu_facts(gpu: GpuInfo) -> dict:
    """What of a GPU a plan is tuned for (its memory size is not: a plan runs on any amount that fits)."""
    return {"name": gpu.name, "compute_capability": list(gpu.compute_capability), "sm_count": gpu.sm_count}


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class EngineCache:
    def __init__(self, root: Path, max_bytes: int):
        self.root = Path(root)
        self.max_bytes = max_bytes

    def writable(self) -> str | None:
        """None if plans can be stored here, else why not, in one line: said once at start, since
        a cache the service cannot write means a build at every start."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".probe.", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            return (
                f"the TensorRT engine cache {self.root} is not writable by {_user()} ({err.strerror}): "
                "engines would be built again at every start; set [tensorrt] cache_dir to a folder this user "
                "can write, or run as the service, whose StateDirectory=edgefusion is /var/lib/edgefusion"
            )
        return None

    # plans -------------------------------------------------------------------------------------
    def lookup(self, key: str) -> bytes | None:
        """The plan stored under ``key``, marked used now; None on a miss (a damaged entry is removed)."""
        meta = self._meta(key)
        if meta is None:
            return None
        if plan_key(meta.get("facts", {})) != key:  # a sidecar edited or mixed up: its plan is of unknown make
            self.discard(key)
            return None
        try:
            plan = (self.root / f"{key}{PLAN}").read_bytes()
        except OSError:
            plan = None
        if plan is None or hashlib.sha256(plan).hexdigest() != meta.get("plan_sha256"):
            self.discard(key)
            return None
        try:
            os.utime(self.root / f"{key}{META}")
        except OSError:  # a read-only cache still serves its plans
            pass
        return plan

    def store(self, key: str, plan: bytes, meta: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.root / f"{key}{PLAN}") as f:
            f.write(plan)
        sidecar = {**meta, "key": key, "plan_sha256": hashlib.sha256(plan).hexdigest(), "plan_bytes": len(plan)}
        with atomic_write(self.root / f"{key}{META}") as f:
            f.write(json.dumps(sidecar, indent=1, sort_keys=True).encode() + b"\n")
        self._evict(keep=key)

    def discard(self, key: str) -> None:
        try:
            for suffix in (META, PLAN):  # the sidecar first: without it the entry is gone
                (self.root / f"{key}{suffix}").unlink(missing_ok=True)
        except OSError:  # a read-only cache: the entry stays, and writable() has said why
            pass

    def entries(self) -> list[dict]:
        """Each entry's sidecar, with its key, plan bytes and last use (UTC), least recently used first."""
        found = []
        for sidecar in self.root.glob(f"*{META}") if self.root.is_dir() else ():
            key = sidecar.name[: -len(META)]
            meta = self._meta(key)
            try:
                used, size = sidecar.stat().st_mtime, (self.root / f"{key}{PLAN}").stat().st_size
            except OSError:
                continue
            if meta is not None:
                found.append({**meta, "key": key, "bytes": size, "last_used": _utc(used), "_mtime": used})
        found.sort(key=lambda e: e["_mtime"])
        for e in found:
            del e["_mtime"]
        return found

    def clear(self, bundle_name: str | None = None) -> int:
        """Remove the plans of the bundle called ``bundle_name`` (all plans, and the timing caches,
        when None); how many plans were removed."""
        gone = [e["key"] for e in self.entries() if bundle_name in (None, e.get("bundle", {}).get("name"))]
        for key in gone:
            self.discard(key)
        if bundle_name is None and self.root.is_dir():
            for path in self.root.glob(f"{TIMING_PREFIX}*"):
                path.unlink(missing_ok=True)
        return len(gone)

    # timing caches: what the builder measured, per TensorRT version and GPU ---------------------
    def timing_cache(self, trt_version: str, gpu: GpuInfo) -> bytes | None:
        try:
            return self._timing_path(trt_version, gpu).read_bytes()
        except OSError:
            return None

    def store_timing_cache(self, trt_version: str, gpu: GpuInfo, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_write(self._timing_path(trt_version, gpu)) as f:
            f.write(data)

    # -----------------------------------------------------------------------------------------------
    def _timing_path(self, trt_version: str, gpu: GpuInfo) -> Path:
        key = plan_key({"tensorrt": trt_version, "gpu": gpu_facts(gpu)})
        return self.root / f"{TIMING_PREFIX}{key[:32]}.cache"

    def _meta(self, key: str) -> dict | None:
        """The sidecar of ``key``; None if it is missing, and an unreadable one is removed as a miss."""
        path = self.root / f"{key}{META}"
        try:
            meta = json.loads(path.read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError):
            self.discard(key)
            return None
        if not isinstance(meta, dict):
            self.discard(key)
            return None
        return meta

    def _evict(self, keep: str) -> None:
        """Least recently used first, until the plans fit in ``max_bytes`` (``keep`` always stays);
        plans a crash left without a sidecar go too."""
        entries = self.entries()
        listed = {e["key"] for e in entries}
        for orphan in self.root.glob(f"*{PLAN}"):
            if orphan.name[: -len(PLAN)] not in listed and orphan.name[: -len(PLAN)] != keep:
                orphan.unlink(missing_ok=True)
        total = sum(e["bytes"] for e in entries)
        for e in entries:
            if total <= self.max_bytes:
                break
            if e["key"] != keep:
                self.discard(e["key"])
                total -= e["bytes"]


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"
