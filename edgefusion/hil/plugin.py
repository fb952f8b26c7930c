"""The pytest plugin of the HIL suite: its options, the ``figures`` fixture, and figures.json.

``hw_tests/conftest.py`` imports this module's hooks and fixtures, so ``python -m pytest hw_tests``
and ``edgefusion hil`` (which runs that pytest) see the same options. Every figure a test records is
also a JUnit ``<property>`` of its test case, so a CI system shows it without the report.
"""

from __future__ import annotations

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


def pytest_sessionfinish(session) -> None:
    path = session.config.getoption("--hil-figures")
    if not path:
        return
    out = {
        "rig": session.config.getoption("--rig"),
        "backend": session.config.getoption("--backend"),
        "bundle": session.config.getoption("--bundle"),
        "tests": {node: r.as_dict() for node, r in session.config.stash[_RECORDS].items()},
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(orjson.dumps(out, option=orjson.OPT_INDENT_2))
