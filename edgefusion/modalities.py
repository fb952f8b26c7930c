"""The modalities, in the fixed order every graph, mask and table uses, and presence patterns."""

from __future__ import annotations

from itertools import combinations

MODALITIES = ("rgb", "depth", "audio")


def pattern_name(present: tuple[bool, ...] | list[bool]) -> str:
    """``(True, False, True)`` → ``"rgb+audio"``: the key of accuracy tables and reports."""
    names = [m for m, p in zip(MODALITIES, present) if p]
    return "+".join(names) if names else "none"


def all_patterns() -> list[tuple[bool, ...]]:
    """Every non-empty presence pattern, the full one first, then by how many are present."""
    out = []
    for k in range(len(MODALITIES), 0, -1):
        for keep in combinations(range(len(MODALITIES)), k):
            out.append(tuple(i in keep for i in range(len(MODALITIES))))
    return out
