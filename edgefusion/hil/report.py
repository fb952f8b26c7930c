"""The HIL report a robot team files: ``report.md`` and ``report.html`` (the same page), beside the
``junit.xml`` pytest wrote and the ``plots/`` they show.

It is made from figures.json alone (each test's verdict and figures, the run's options, the
machine's facts), so it can be written again from a run's folder, and is written also when tests
failed or pytest crashed: then it says so. The page is built once as a list of blocks and rendered
twice, so the Markdown and the HTML cannot say different things.
"""

from __future__ import annotations

import html
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import orjson

from edgefusion.atomic import atomic_directory, atomic_write
from edgefusion.hil import plots

OUTCOMES = ("passed", "failed", "error", "skipped")
PYTEST_EXITS = {
    0: "all tests passed or skipped",
    1: "tests failed",
    2: "interrupted",
    3: "pytest's internal error",
    4: "pytest refused its arguments",
    5: "no tests collected",
}

# A block of the page: ("h", level, text), ("p", text), ("pre", text), ("ul", [text]),
# ("table", header, rows), ("img", alt, src). Text may hold `code` spans, as Markdown writes them.
Block = tuple


def load(path: Path) -> dict | None:
    """figures.json, or None where pytest wrote none (it crashed, or was stopped, before its end)."""
    try:
        return orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


def counts(run: dict | None) -> Counter:
    return Counter(t["outcome"] for t in (run or {}).get("tests", {}).values())


def verdict_line(c: Counter) -> str:
    return ", ".join(f"{c[o]} {o}" for o in OUTCOMES)


def show(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary(values) -> dict:
    """n, p50, p99 and max of a distribution's finite values."""
    data = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not data.size:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    p50, p99 = np.percentile(data, (50, 99))
    return {"n": int(data.size), "p50": float(p50), "p99": float(p99), "max": float(data.max())}


class Plots:
    """The PNGs the page shows, drawn into ``folder``; without matplotlib, none, and one note."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.missing = plots.missing()
        self.n = 0

    def draw(self, title: str, how, *args) -> list[Block]:
        if self.missing:
            return []
        self.n += 1
        name = f"{self.n:02d}-{re.sub(r'[^a-z0-9]+', '-', title.lower()).strip('-')[:60]}.png"
        how(self.folder / name, title, *args)
        return [("img", title, f"plots/{name}")]


def _header(run: dict | None, junit: Path | None, pytest_exit: int | None) -> list[Block]:
    c = counts(run)
    exit_code = pytest_exit if pytest_exit is not None else (run or {}).get("pytest_exit")
    failed = c["failed"] or c["error"] or exit_code not in (0, None)
    blocks: list[Block] = [("h", 1, "edgefusion hardware-in-the-loop report")]
    if run is not None:
        what = [
            f"{run['started']} to {run['finished']}",
            f"rig `{run['rig']}`",
            f"backends: {run['backend'] or 'every one present'}",
            f"bundle: {run['bundle'] or 'the demo bundle'}",
            f"precision {run['precision']}",
        ]
        blocks.append(("p", "; ".join(what + ([f"data {run['data']}"] if run["data"] else []))))
    blocks.append(("p", f"Verdict: {'FAILED' if failed else 'PASSED'}: {verdict_line(c)}."))
    if exit_code not in (0, 1, None):
        blocks.append(("p", f"pytest ended with code {exit_code} ({PYTEST_EXITS.get(exit_code, 'unknown')})."))
    if run is None:
        blocks.append(("p", "pytest wrote no figures.json (it stopped before its end): no verdicts or figures here."))
    blocks.append(("p", f"JUnit XML: {_junit_line(junit)}"))
    return blocks


def _junit_line(junit: Path | None) -> str:
    if junit is None:
        return "not asked for"
    try:
        cases = len(ET.parse(junit).getroot().findall(".//testcase"))
    except (OSError, ET.ParseError) as err:
        return f"`{junit.name}` not readable ({err})"
    return f"`{junit.name}`, {cases} test cases"


def _robot_only(tests: dict) -> list[Block]:
    """One item per thing missing here, with the tests it held back (a missing TensorRT skips dozens)."""
    by_what: dict[str, list[str]] = {}
    for node, t in tests.items():
        for what in t.get("jetson_only", []):
            by_what.setdefault(what, []).append(node)
        if t["outcome"] == "skipped":
            by_what.setdefault(f"skipped: {t['reason']}", []).append(node)
    items = [f"{what}: {', '.join(f'`{n}`' for n in nodes)}" for what, nodes in by_what.items()]
    return [("h", 2, "What only the robot can show"), ("ul", items or ["nothing: every test ran in full here"])]


def _tables(tests: dict, draw: Plots) -> list[Block]:
    """The tables tests share (accuracy per pattern and backend, recovery per fault), merged."""
    merged: dict[str, dict] = {}
    for t in tests.values():
        for name, table in t.get("cells", {}).items():
            m = merged.setdefault(name, {"unit": table["unit"], "rows": {}})
            for row, cells in table["rows"].items():
                m["rows"].setdefault(row, {}).update(cells)
    blocks: list[Block] = [("h", 2, "Tables")] if merged else []
    for name, table in merged.items():
        columns = list(dict.fromkeys(c for cells in table["rows"].values() for c in cells))
        unit = f" ({table['unit']})" if table["unit"] else ""
        rows = [[row, *(show(cells.get(c)) for c in columns)] for row, cells in table["rows"].items()]
        blocks += [("h", 3, name + unit), ("table", ["", *columns], rows)]
        blocks += draw.draw(name, plots.bars, table["rows"], table["unit"])
    return blocks


def _test(node: str, t: dict, draw: Plots) -> list[Block]:
    name = node.split("::", 1)[-1]
    blocks: list[Block] = [("h", 3, f"{name}: {t['outcome']} ({t['duration_s']:.1f} s)")]
    if t["outcome"] == "skipped":
        blocks.append(("p", f"Skipped: {t['reason']}"))
    if "message" in t:
        blocks.append(("pre", t["message"]))
    if t.get("figures"):
        rows = [[f["name"], show(f["value"]), f["unit"], f["limit"] or "measured only"] for f in t["figures"]]
        blocks.append(("table", ["figure", "value", "unit", "limit"], rows))
    if t.get("samples"):
        rows = []
        for sample_name, s in t["samples"].items():
            stats = summary(s["values"])
            rows.append([sample_name, str(stats["n"]), *(show(stats[k]) for k in ("p50", "p99", "max")), s["unit"]])
        blocks.append(("table", ["samples", "n", "p50", "p99", "max", "unit"], rows))
        for sample_name, s in t["samples"].items():
            blocks += draw.draw(sample_name, plots.histogram, s["values"], s["unit"])
    for series_name, s in t.get("series", {}).items():
        blocks.append(("p", f"{series_name}: {len(s['x'])} points ({s['y_label']} against {s['x_label']})"))
        blocks += draw.draw(series_name, plots.line, s["x"], s["y"], s["x_label"], s["y_label"])
    if t.get("cells"):
        blocks.append(("p", "Adds to the tables: " + ", ".join(t["cells"])))
    if t.get("jetson_only"):
        blocks += [("p", "Only a Jetson or the real rig can show:"), ("ul", t["jetson_only"])]
    return blocks


def blocks(run: dict | None, machine: dict, junit: Path | None, pytest_exit: int | None, draw: Plots) -> list[Block]:
    tests = (run or {}).get("tests", {})
    page = _header(run, junit, pytest_exit)
    page += [("h", 2, "Machine"), ("table", ["fact", "value"], [[k, v] for k, v in machine.items()])]
    page += _robot_only(tests)
    if draw.missing:
        page.append(("p", draw.missing))
    page += _tables(tests, draw)
    files: dict[str, list[str]] = {}
    for node in tests:
        files.setdefault(node.split("::", 1)[0], []).append(node)
    for file, nodes in files.items():
        c = Counter(tests[n]["outcome"] for n in nodes)
        page += [("h", 2, f"{file}"), ("p", verdict_line(c))]
        for node in nodes:
            page += _test(node, tests[node], draw)
    return page


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(page: list[Block]) -> str:
    out = []
    for b in page:
        kind = b[0]
        if kind == "h":
            out.append("#" * b[1] + " " + b[2])
        elif kind == "p":
            out.append(b[1])
        elif kind == "pre":
            out.append("```\n" + b[1] + "\n```")
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in b[1]))
        elif kind == "table":
            header, rows = b[1], b[2]
            lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{b[1]}]({b[2]})")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    """Escaped, with Markdown's `code` spans as <code>."""
    parts = str(text).split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def html_page(page: list[Block]) -> str:
    out = []
    for b in page:
        kind = b[0]
        if kind == "h":
            out.append(f"<h{b[1]}>{_inline_html(b[2])}</h{b[1]}>")
        elif kind == "p":
            out.append(f"<p>{_inline_html(b[1])}</p>")
        elif kind == "pre":
            out.append(f"<pre>{html.escape(b[1])}</pre>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in b[1])
            body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in b[2])
            out.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "img":
            out.append(f'<img src="{html.escape(b[2])}" alt="{html.escape(b[1])}">')
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}pre{background:#f4f4f4;padding:8px}"
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>edgefusion HIL report</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n"
    )


def write_report(out: Path, figures: Path, junit: Path | None = None, pytest_exit: int | None = None) -> Counter:
    """Write ``out/report.md``, ``out/report.html`` and ``out/plots/``; the verdict counts."""
    from edgefusion.hil.machine import facts

    run = load(figures)
    machine = run["machine"] if run is not None else facts()
    out.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out / "plots") as folder:
        page = blocks(run, machine, junit, pytest_exit, Plots(folder))
    for name, text in (("report.md", markdown(page)), ("report.html", html_page(page))):
        with atomic_write(out / name) as f:
            f.write(text.encode())
    return counts(run)
