"""The report's plots: a histogram per distribution, a line per series, grouped bars per table.

matplotlib's object API (``Figure`` without pyplot): no global state, no display, nothing chosen
for the process that imports it. matplotlib is imported only when a plot is drawn; without it the
report is written anyway and says once how to get the plots.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgefusion.atomic import atomic_write

NO_MATPLOTLIB = "plots need matplotlib (pip install matplotlib)"


def missing() -> str | None:
    """Why no plot can be drawn here, or None."""
    import importlib.util

    return NO_MATPLOTLIB if importlib.util.find_spec("matplotlib") is None else None


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_write(path) as f:  # a full disk leaves no half a PNG for the page to show
        fig.savefig(f, format="png", dpi=100)


def _figure(title: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return fig, ax


def histogram(path: Path, title: str, values, unit: str) -> None:
    fig, ax = _figure(title)
    data = _finite(values)
    ax.hist(data, bins=min(50, max(5, len(data) // 10)))
    if data:
        p99 = float(np.percentile(data, 99))  # as the report's table computes it
        ax.axvline(p99, color="red", linestyle="--", linewidth=1, label=f"p99 {p99:.3g} {unit}".strip())
        ax.legend()
    ax.set_xlabel(unit or "value")
    ax.set_ylabel("count")
    _save(fig, path)


def line(path: Path, title: str, x, y, x_label: str, y_label: str) -> None:
    fig, ax = _figure(title)
    points = [(a, b) for a, b in zip(x, y) if a is not None and b is not None]
    ax.plot([a for a, _ in points], [b for _, b in points], marker="o", markersize=3, linewidth=1)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    _save(fig, path)


def bars(path: Path, title: str, rows: dict[str, dict], unit: str) -> None:
    """One group per row, one bar per column (a table's cells; a missing cell is no bar)."""
    fig, ax = _figure(title)
    columns = list(dict.fromkeys(c for cells in rows.values() for c in cells))
    width = 0.8 / max(1, len(columns))
    for i, column in enumerate(columns):
        offset = (i - (len(columns) - 1) / 2) * width
        drawn = [(j + offset, cells[column]) for j, cells in enumerate(rows.values()) if cells.get(column) is not None]
        ax.bar([x for x, _ in drawn], [h for _, h in drawn], width, label=column)
    ax.set_xticks(range(len(rows)), list(rows), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(unit or "value")
    if len(columns) > 1:
        ax.legend(fontsize=8)
    _save(fig, path)
