"""The pytest plugin of the HIL suite: its options, the ``figures`` fixture, and figures.json.

``hw_tests/conftest.py`` imports this module's hooks and fixtures, so ``python -m pytest hw_tests``
and ``edgefusion hil`` (which runs that pytest) see the same options. Every figure a test records is
also a JUnit ``<property>`` of its test case, so a CI system shows it without the report.

figures.json holds, beside each test's figures, its verdict, skip reason or failure and duration (a
test without a ``figures`` fixture too), the run's options and the machine's facts: all the report
needs, so it never maps JUnit names back to node ids.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from edgefusion.atomic import atomic_write
from edgefusion.hil.figures import Figures

RIGS = ("virtual", "realsense")
_RECORDS = pytest.StashKey[dict]()


def pytest_addoption(parser) -> None:
    group = parser.getgroup("edgefusion-hil", "edgefusion hardware-in-the-loop suite")
    group.addoption(
        "--rig",
        choices=RIGS,
        default="virtual",
        help="virtual: the software RealSense and a private PulseAudio (CI); realsense: the robot's own "
        "RealSense and microphone",
    )
    group.addoption(
        "--backend",
        default="",
        help="comma-separated backends to check (onnxruntime-cpu, onnxruntime-cuda, tensorrt, tensorrt-fake); "
        "default: every one present here",
    )
    group.addoption("--bundle", default="", help="the model bundle (default: the demo bundle)")
    group.addoption("--data", default="", help="labelled held-out .npz for a bundle of your own task (as eval --data)")
    group.addoption(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "int8"),
        help="the precision the loop tests (sensors, faults, budgets) run at",
    )
    group.addoption("--hil-figures", default="", help="write every test's figures to this JSON file")


def pytest_configure(config) -> None:
    config.stash[_RECORDS] = {}
    # Registered here, not imported by hw_tests/conftest.py: the hooks ride on the one the conftest imports.
    config.pluginmanager.register(Verdicts(), _VERDICTS)


_VERDICTS = "edgefusion-hil-verdicts"
MESSAGE_CHARS = 2000  # a failure's message, as the report quotes it; the whole traceback is in junit.xml


def _skip_reason(report) -> str:
    """pytest's skip longrepr is (path, line, "Skipped: <reason>")."""
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return reason.removeprefix("Skipped: ")


def _failure(report) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text[:MESSAGE_CHARS]


class Verdicts:
    """Each test's outcome (passed, failed, error, skipped), its skip reason or failure, and its
    duration; and the rig the tests used, for the machine's facts."""

    def __init__(self) -> None:
        self.tests: dict[str, dict] = {}
        self.rig = None
        self.started = time.time()

    def pytest_collectreport(self, report) -> None:
        """A test file skipped whole (its library is missing) or that does not import: none of its tests ran."""
        if report.skipped:
            self.tests[report.nodeid] = {"outcome": "skipped", "duration_s": 0.0, "reason": _skip_reason(report)}
        elif report.failed:
            self.tests[report.nodeid] = {"outcome": "error", "duration_s": 0.0, "message": _failure(report)}

    def pytest_runtest_call(self, item) -> None:
        self.rig = self.rig or item.funcargs.get("hil_rig")

    def pytest_runtest_logreport(self, report) -> None:
        t = self.tests.setdefault(report.nodeid, {"outcome": "passed", "duration_s": 0.0})
        t["duration_s"] += report.duration
        if report.skipped:
            why = _skip_reason(report) if not hasattr(report, "wasxfail") else f"expected to fail: {report.wasxfail}"
            t.update(outcome="skipped", reason=why)
        elif report.failed and report.when == "call":
            t.update(outcome="failed", message=_failure(report))
        elif report.failed and t["outcome"] != "failed":
            # A setup or teardown failing is an error of the test's fixtures, not the test failing.
            t.update(outcome="error", message=_failure(report))


@pytest.fixture
def figures(request) -> Figures:
    """This test's record; what it holds reaches figures.json and the test's JUnit properties."""
    record = Figures(request.node.nodeid)
    request.config.stash[_RECORDS][request.node.nodeid] = record
    yield record
    for f in record.figures:
        shown = f"{f.value} {f.unit}".strip() + (f" (limit {f.limit})" if f.limit else "")
        request.node.user_properties.append((f.name, shown))
    for what in record.jetson_only:
        request.node.user_properties.append(("jetson only", what))


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def pytest_sessionfinish(session, exitstatus) -> None:
    path = session.config.getoption("--hil-figures")
    if not path:
        return
    from edgefusion.hil.machine import facts

    verdicts: Verdicts = session.config.pluginmanager.get_plugin(_VERDICTS)
    records = session.config.stash[_RECORDS]
    option = session.config.getoption
    out = {
        "started": _utc(verdicts.started),
        "finished": _utc(time.time()),
        "pytest_exit": int(exitstatus),
        "rig": option("--rig"),
        "backend": option("--backend"),
        "bundle": option("--bundle"),
        "data": option("--data"),
        "precision": option("--precision"),
        "machine": facts(verdicts.rig),
        # Every test that reported, in the order it ran, with its figures where it kept any.
        "tests": {
            node: {**verdict, **(records[node].as_dict() if node in records else {})}
            for node, verdict in verdicts.tests.items()
        },
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(orjson.dumps(out, option=orjson.OPT_INDENT_2))
