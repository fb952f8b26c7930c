"""Running exported graphs over a dataset with ONNX Runtime, per presence pattern.

The split path is run the way the robot runs it: the encoder graphs of present modalities, the
stored absent projection for the others, then the head. So its accuracy table is the deployed
model's, not the training graph's.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgefusion.backends.onnxruntime.session import open_session
from edgefusion.modalities import MODALITIES, all_patterns, pattern_name
from edgefusion.task import TaskBatch


def session(path: Path, threads: int = 0):
    """A CPU session: the exporter's numbers must not depend on whether a GPU is present."""
    return open_session(path, threads, ["CPUExecutionProvider"])


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def monolithic_logits(path: Path, data: TaskBatch, patterns=None, chunk: int = 256) -> dict[str, np.ndarray]:
    """The monolithic graph's logits for each presence pattern (default: every one), keyed by
    pattern name; one session serves them all."""
    sess = session(path)
    out = {}
    for present in patterns or all_patterns(len(MODALITIES)):
        parts = []
        for sl in _chunks(len(data), chunk):
            feed = {m: getattr(data, m)[sl] for m in MODALITIES}
            feed["present"] = np.tile(np.array(present, dtype=np.float32), (sl.stop - sl.start, 1))
            parts.append(sess.run(["logits"], feed)[0])
        out[pattern_name(MODALITIES, present)] = np.concatenate(parts)
    return out


class SplitRunner:
    """Encoder graphs + head graph, with absent projections for missing modalities."""

    def __init__(self, graphs: dict[str, Path], absent: dict[str, np.ndarray]):
        self.encoders = {m: session(graphs[m]) for m in MODALITIES}
        self.head = session(graphs["head"])
        self.absent = absent

    def projections(self, data: TaskBatch, chunk: int = 256) -> dict[str, np.ndarray]:
        return {
            m: np.concatenate(
                [self.encoders[m].run(None, {m: getattr(data, m)[sl]})[0] for sl in _chunks(len(data), chunk)]
            )
            for m in MODALITIES
        }

    def logits(self, projections: dict[str, np.ndarray], present: tuple[bool, ...]) -> np.ndarray:
        n = len(next(iter(projections.values())))
        feed = {
            f"p_{m}": projections[m] if p else np.broadcast_to(self.absent[m], (n, *self.absent[m].shape)).copy()
            for m, p in zip(MODALITIES, present)
        }
        return self.head.run(["logits"], feed)[0]


def median_latency_ms(sess, feed: dict[str, np.ndarray], runs: int = 300) -> float:
    for _ in range(20):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)
