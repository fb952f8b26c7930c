"""Datasets of the built-in task, generated in parallel and cached on disk.

The seeds are fixed and documented (train / held-out / calibration never share a seed), so a
dataset is a pure function of (seed, size): the cache only saves the ~10 ms per sample.
"""

from __future__ import annotations

import os
import pwd
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from edgefusion.atomic import atomic_write
from edgefusion.task import TASK_VERSION, TaskBatch, generate

TRAIN_SEED, HELDOUT_SEED, CALIBRATION_SEED = 1, 2, 3
_CHUNK = 250


def _cache_dir() -> Path:
    # The user's own home, from the password database: importing pyrealsense2 (a session's camera
    # file) points $HOME at a private temp folder for librealsense's sake.
    root = os.environ.get("XDG_CACHE_HOME") or Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache"
    return Path(root) / "edgefusion" / "datasets"


def concat(parts: list[TaskBatch]) -> TaskBatch:
    return TaskBatch(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in TaskBatch.__dataclass_fields__})


def _generate_chunk(args: tuple[int, int, int]) -> TaskBatch:
    return generate(*args)


def build(seed: int, n: int, workers: int | None = None) -> TaskBatch:
    """Samples 0..n-1 of ``seed``, generated on every core."""
    chunks = [(seed, min(_CHUNK, n - s), s) for s in range(0, n, _CHUNK)]
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(chunks) == 1:
        return concat([_generate_chunk(c) for c in chunks])
    with ProcessPoolExecutor(workers) as pool:
        return concat(list(pool.map(_generate_chunk, chunks)))


def load(seed: int, n: int, cache: bool = True) -> TaskBatch:
    path = _cache_dir() / f"task-v{TASK_VERSION}-seed{seed}-n{n}.npz"
    if cache and path.exists():
        with np.load(path) as z:
            return TaskBatch(**{f: z[f] for f in TaskBatch.__dataclass_fields__})
    batch = build(seed, n)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            np.savez(f, **{fld: getattr(batch, fld) for fld in TaskBatch.__dataclass_fields__})
    return batch
