"""Running exported graphs over a dataset with ONNX Runtime, per presence pattern.

The split path is run the way the robot runs it: the encoder graphs of present modalities, the
stored absent projection for the others, then the head. So its accuracy table is the deployed
model's, not the training graph's. Data is a mapping of modality name → (N, ...) float32, or a
``TaskBatch`` of the built-in task (its fields are the demo modalities).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edgefusion.backends.onnxruntime.session import open_session
from edgefusion.modalities import MODALITIES, all_patterns, pattern_name
from edgefusion.task import TaskBatch

Data = Mapping[str, np.ndarray] | TaskBatch


def session(path: Path, threads: int = 0):
    """A CPU session: the exporter's numbers must not depend on whether a GPU is present."""
    return open_session(path, threads, ["CPUExecutionProvider"])


def column(data: Data, name: str) -> np.ndarray:
    return data[name] if isinstance(data, Mapping) else getattr(data, name)


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    """The largest difference of ``a`` from ``ref``, relative to ``ref``'s largest magnitude."""
    return float(np.abs(a - ref).max() / (np.abs(ref).max() + 1e-12))


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def monolithic_logits(
    path: Path, data: Data, patterns=None, chunk: int = 256, names: Sequence[str] = MODALITIES
) -> dict[str, np.ndarray]:
    """The monolithic graph's logits for each presence pattern (default: every one), keyed by
    pattern name; one session serves them all."""
    sess = session(path)
    n = len(column(data, names[0]))
    out = {}
    for present in patterns or all_patterns(len(names)):
        parts = []
        for sl in _chunks(n, chunk):
            feed = {m: column(data, m)[sl] for m in names}
            feed["present"] = np.tile(np.array(present, dtype=np.float32), (sl.stop - sl.start, 1))
            parts.append(sess.run(["logits"], feed)[0])
        out[pattern_name(names, present)] = np.concatenate(parts)
    return out


class SplitRunner:
    """Encoder graphs + head graph, with absent projections for missing modalities."""

    def __init__(self, graphs: Mapping[str, Path], absent: Mapping[str, np.ndarray], names: Sequence[str] = MODALITIES):
        self.names = tuple(names)
        self.encoders = {m: session(graphs[m]) for m in self.names}
        self.head = session(graphs["head"])
        self.absent = absent

    def projections(self, data: Data, chunk: int = 256) -> dict[str, np.ndarray]:
        out = {}
        for m in self.names:
            x = column(data, m)
            out[m] = np.concatenate([self.encoders[m].run(None, {m: x[sl]})[0] for sl in _chunks(len(x), chunk)])
        return out

    def logits(self, projections: Mapping[str, np.ndarray], present: tuple[bool, ...]) -> np.ndarray:
        n = len(next(iter(projections.values())))
        feed = {
            f"p_{m}": projections[m] if p else np.broadcast_to(self.absent[m], (n, *self.absent[m].shape)).copy()
            for m, p in zip(self.names, present)
        }
        return self.head.run(["logits"], feed)[0]

    def logits_by_pattern(self, data: Data) -> dict[str, np.ndarray]:
        """Every presence pattern's logits, each sample's encoders run once."""
        proj = self.projections(data)
        return {pattern_name(self.names, p): self.logits(proj, p) for p in all_patterns(len(self.names))}


def median_latency_ms(sess, feed: dict[str, np.ndarray], runs: int = 300) -> float:
    for _ in range(20):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)
