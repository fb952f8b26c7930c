"""Modalities: the sensor streams a robot has, the model's modalities a bundle declares, and
presence patterns over them.

The hardware is fixed (at most one RealSense colour stream, its depth stream, one microphone);
the model's modalities are free: a bundle names 1 to 3, each fed by one stream, in an order that
every graph, mask and table then uses. ``MODALITIES`` is the demo bundle's set, for the code that
renders or scores the built-in task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

STREAMS = ("rgb", "depth", "audio")
MODALITIES = ("rgb", "depth", "audio")


@dataclass(frozen=True)
class ModalitySpec:
    """One modality of a bundle, typed from its manifest entry: what the runtime must deliver."""

    name: str
    sensor: str  # the stream that feeds it: one of STREAMS
    shape: tuple[int, ...]  # the graph input's shape after the batch axis
    input_name: str
    output_name: str
    projection: tuple[int, ...]  # the encoder graph's output shape after the batch axis
    rate_hz: float  # how often new data is expected: camera fps, audio windows per second
    sample_rate: int | None = None  # audio only
    window_s: float | None = None  # audio only

    @property
    def height(self) -> int:
        return self.shape[-2]

    @property
    def width(self) -> int:
        return self.shape[-1]

    @property
    def samples(self) -> int:
        return self.shape[-1]


def pattern_name(names: Sequence[str], present: Sequence[bool]) -> str:
    """``(rgb, depth, audio)``, ``(True, False, True)`` → ``"rgb+audio"``: the key of accuracy tables."""
    kept = [m for m, p in zip(names, present) if p]
    return "+".join(kept) if kept else "none"


def all_patterns(n: int) -> list[tuple[bool, ...]]:
    """Every non-empty presence pattern of ``n`` modalities, the full one first, then by how many are present."""
    out = []
    for k in range(n, 0, -1):
        for keep in combinations(range(n), k):
            out.append(tuple(i in keep for i in range(n)))
    return out
