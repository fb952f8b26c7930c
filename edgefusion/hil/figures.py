"""What a HIL test measured, in a form the report can print and plot without knowing the test.

Four shapes cover every test: a single figure (a value, its unit, the limit it was held to), a
distribution of samples (a latency histogram), a series (latency against temperature), and a cell
of a table (accuracy per presence pattern and precision, recovery time per fault and stream).
``jetson_only`` says what the test could not show on this machine, so the report lists, per test,
what only the robot's hardware can show.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


def _number(value: float | int | bool | str | None):
    """JSON-safe: NaN and inf become None (JSON has neither), numpy scalars plain Python."""
    if value is None or isinstance(value, (bool, str)):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class Figure:
    name: str
    value: float | bool | str | None
    unit: str = ""
    limit: str = ""  # what it was held to, as the report prints it ("<= 20 ms"); "" when only measured


@dataclass
class Figures:
    """One test's record. The plugin keeps one per test and writes them all to ``figures.json``."""

    test: str  # the pytest node id
    figures: list[Figure] = field(default_factory=list)
    samples: dict[str, dict] = field(default_factory=dict)  # name -> {"unit", "values"}
    series: dict[str, dict] = field(default_factory=dict)  # name -> {"x_label", "y_label", "x", "y"}
    cells: dict[str, dict] = field(default_factory=dict)  # table -> {"unit", "rows": {row: {column: value}}}
    jetson_only: list[str] = field(default_factory=list)

    def add(self, name: str, value, unit: str = "", limit: str = "") -> None:
        self.figures.append(Figure(name, _number(value), unit, limit))

    def sample(self, name: str, values, unit: str = "") -> None:
        """A distribution (the report gives p50/p99/max and a histogram)."""
        self.samples[name] = {"unit": unit, "values": [_number(v) for v in values]}

    def line(self, name: str, x, y, x_label: str, y_label: str) -> None:
        """y against x (the report plots it)."""
        self.series[name] = {
            "x_label": x_label,
            "y_label": y_label,
            "x": [_number(v) for v in x],
            "y": [_number(v) for v in y],
        }

    def cell(self, table: str, row: str, column: str, value, unit: str = "") -> None:
        """One value of a table; the report prints the table and draws it as grouped bars. Tables
        are shared across tests: every backend's test adds its column to one accuracy table."""
        t = self.cells.setdefault(table, {"unit": unit, "rows": {}})
        t["rows"].setdefault(row, {})[column] = _number(value)

    def needs_jetson(self, what: str) -> None:
        """What this test could not show here (said in the report, per test)."""
        self.jetson_only.append(what)

    def as_dict(self) -> dict:
        d = asdict(self)
        del d["test"]
        return d
