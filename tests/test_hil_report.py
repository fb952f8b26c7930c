"""``edgefusion hil`` end to end on a tiny suite of its own (the real pytest, plugin, matplotlib and
report code; hw_tests/ itself is the suite's business), the report's content, its bad inputs, and
the machine's facts on a fake Jetson tree and on this machine."""

from __future__ import annotations

import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import orjson
import pytest
from cli_check import cli, refused

from edgefusion.hil import machine
from edgefusion.hil.report import write_report
from edgefusion.hil.rigs import VirtualRig

pytest_plugins = ["fakes.fixtures"]  # the fake_gpu fixture

CONFTEST = """
import pytest

from edgefusion.hil.plugin import figures, pytest_addoption, pytest_configure, pytest_sessionfinish  # noqa: F401


@pytest.fixture(scope="session")
def hil_rig(request):
    from edgefusion.hil.rigs import make_hil_rig

    return make_hil_rig(request.config.getoption("--rig"))


@pytest.fixture
def broken_camera():
    raise RuntimeError("camera gone before the test")
"""

MEASURES = """
import pytest


def test_latency(figures, hil_rig):
    figures.add("ticks", 120, "", ">= 100")
    figures.add("<b>escaped</b>", 1.5, "ms")
    figures.sample("tick latency", [1.0 + i / 100 for i in range(200)], "ms")
    figures.line("latency vs temperature", [40.0, 45.0, 50.0], [2.0, 2.5, 3.5], "SoC °C", "p99 ms")
    figures.cell("accuracy", "rgb+depth+audio", "onnxruntime-cpu fp32", 0.93)
    figures.cell("accuracy", "rgb+audio", "onnxruntime-cpu fp32", 0.81)
    figures.needs_jetson("TensorRT int8 on the GPU")
    assert hil_rig.kind == "virtual"


def test_without_figures():
    assert sum([1, 2]) == 3


def test_no_camera(figures):
    pytest.skip("no RealSense on USB: plug one in (lsusb shows 8086:0b3a)")


def test_setup_error(broken_camera):
    pass
"""

BUDGET = """
def test_over_budget(figures):
    p99 = 25.0
    figures.add("p99 tick latency", p99, "ms", "<= 20 ms")
    figures.cell("accuracy", "rgb+depth+audio", "tensorrt-fake fp16", 0.92)
    assert p99 <= 20.0, "p99 25 ms over the 20 ms deadline"
"""


GPU = """
import pytest

pytest.importorskip("a_gpu_library_no_one_has", reason="needs a_gpu_library (pip install it on the robot)")
"""


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    files = {"conftest.py": CONFTEST, "test_measures.py": MEASURES, "test_budget.py": BUDGET, "test_gpu.py": GPU}
    for name, text in files.items():
        (root / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def failing_run(suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "report"  # not there yet: the command makes it
    return cli("hil", "--suite", str(suite), "--report", str(out), timeout=300), out


def test_failing_run_exits_1_and_reports_every_verdict(failing_run):
    r, out = failing_run
    assert r.returncode == 1, r.stdout + r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert str(out / "report.md") in last and "2 passed, 1 failed, 1 error, 2 skipped" in last, last

    cases = ET.parse(out / "junit.xml").getroot().findall(".//testcase")
    assert {c.get("name") for c in cases} >= {"test_latency", "test_without_figures", "test_over_budget"}
    latency = next(c for c in cases if c.get("name") == "test_latency")
    assert ("ticks", "120.0 (limit >= 100)") in {(p.get("name"), p.get("value")) for p in latency.iter("property")}

    tests = orjson.loads((out / "figures.json").read_bytes())["tests"]
    outcomes = {node.split("::")[1]: t["outcome"] for node, t in tests.items() if "::" in node}
    assert outcomes == {
        "test_over_budget": "failed",
        "test_latency": "passed",
        "test_without_figures": "passed",  # no figures fixture, still there
        "test_no_camera": "skipped",
        "test_setup_error": "error",
    }
    assert tests["test_gpu.py"] == {  # skipped whole, at its import
        "outcome": "skipped",
        "duration_s": 0.0,
        "reason": "needs a_gpu_library (pip install it on the robot)",
    }
    assert "camera gone before the test" in tests["test_measures.py::test_setup_error"]["message"]


def test_report_holds_figures_reasons_and_plots(failing_run):
    _, out = failing_run
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for text in (
        "Verdict: FAILED",
        "| p99 tick latency | 25 | ms | <= 20 ms |",
        "p99 25 ms over the 20 ms deadline",
        "| tick latency | 200 | 1.995 | 2.97 | 2.99 | ms |",  # numpy's percentiles of 1.00 .. 2.99
        "no RealSense on USB: plug one in (lsusb shows 8086:0b3a)",
        "TensorRT int8 on the GPU: `test_measures.py::test_latency`",
        "| rgb+depth+audio | 0.92 | 0.93 |",  # one accuracy table from two tests' cells (columns as they came)
        "| rig | virtual |",
        f"| Python | {platform.python_version()} |",
    ):
        assert text in md, text
    robot_only = md.split("## What only the robot can show")[1].split("\n## ")[0]
    assert "TensorRT int8" in robot_only and "no RealSense on USB" in robot_only and "a_gpu_library" in robot_only
    assert "&lt;b&gt;escaped&lt;/b&gt;" in page and "<b>escaped" not in page
    assert "TensorRT int8 on the GPU" in page and "Verdict: FAILED" in page
    for level in (2, 3):  # one page, rendered twice: the same sections
        assert page.count(f"<h{level}>") == md.count("\n" + "#" * level + " ") > 0

    shown = [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert len(shown) == 3  # the histogram, the line, the accuracy bars
    for src in shown:
        assert (out / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
        assert f'<img src="{src}"' in page


def test_all_passed_or_skipped_exits_0(suite, tmp_path):
    r = cli("hil", "--suite", str(suite), "-k", "not over_budget and not setup_error", "--report", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed, 0 failed, 0 error, 2 skipped" in r.stdout.strip().splitlines()[-1]
    assert "Verdict: PASSED" in (tmp_path / "report.md").read_text()


def test_report_is_written_when_pytest_crashes(tmp_path):
    """A conftest that does not import: pytest stops before any test (code 4), the report says so."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text("import a_module_no_one_has\n")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "figures.json").write_text('{"tests": {"stale::test": {"outcome": "passed"}}}')
    r = cli("hil", "--suite", str(suite), "--report", str(tmp_path / "report"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "pytest ended with code 4" in r.stdout.strip().splitlines()[-1]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "pytest ended with code 4" in md and "pytest wrote no figures.json" in md
    assert "stale::test" not in md  # the last run's figures were not taken for this one's


def test_report_without_matplotlib_says_so_once(failing_run, tmp_path, monkeypatch):
    _, out = failing_run
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed: import fails, find_spec is None
    write_report(tmp_path, out / "figures.json", out / "junit.xml", 1)
    md = (tmp_path / "report.md").read_text()
    assert md.count("plots need matplotlib (pip install matplotlib)") == 1
    assert "![" not in md and "| p99 tick latency | 25 | ms | <= 20 ms |" in md
    assert not any((tmp_path / "plots").iterdir())


def test_bad_inputs_are_one_line(tmp_path):
    refused(cli("hil"), "--report")
    refused(cli("hil", "--suite", str(tmp_path / "nowhere"), "--report", str(tmp_path / "r")), "--suite", "nowhere")
    (tmp_path / "a-file").write_text("")
    refused(cli("hil", "--report", str(tmp_path / "a-file")), "a-file", "a file is there")
    refused(cli("hil", "--bundle", str(tmp_path / "none"), "--report", str(tmp_path / "r")), "--bundle")
    assert not (tmp_path / "r").exists()


def test_without_pytest_it_says_how_to_get_it(tmp_path):
    """pytest made unimportable in the child (sys.modules["pytest"] = None: import fails, find_spec is None)."""
    code = "import sys; sys.modules['pytest'] = None; from edgefusion.cli import entry; sys.exit(entry())"
    r = subprocess.run(
        [sys.executable, "-c", code, "hil", "--report", str(tmp_path / "r")], capture_output=True, text=True, timeout=60
    )
    line = refused(r, "pytest", "pip install 'edgefusion[hil]'")
    assert line.startswith("edgefusion: error:") and not (tmp_path / "r").exists()


def test_unknown_backend_is_one_line(tmp_path):
    pytest.importorskip("edgefusion.hil.backends", reason="edgefusion.hil.backends comes with the backends slice")
    refused(cli("hil", "--backend", "onnxruntime-cpu,tpu", "--report", str(tmp_path / "r")), "tpu")


def _fake_jetson(root: Path) -> Path:
    """The files a JetPack 6.0 Orin answers from (text as they are on one)."""
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, "
        "DATE: Mon May  6 17:34:21 UTC 2024\n"
    )
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")
    (root / "proc/1").mkdir()
    (root / "proc/1/comm").write_text("systemd\n")
    (root / "run/systemd/system").mkdir(parents=True)
    (root / "var/lib/dpkg").mkdir(parents=True)
    stanza = "Package: {}\nStatus: install ok installed\nMaintainer: NVIDIA\nArchitecture: arm64\nVersion: {}\n"
    (root / "var/lib/dpkg/status").write_text(
        stanza.format("nvidia-jetpack", "6.0+b106") + "\n" + stanza.format("nvidia-l4t-core", "36.3.0-20240506102626")
    )
    return root


def test_machine_facts_on_a_fake_jetson_tree(tmp_path):
    root = _fake_jetson(tmp_path)
    assert machine.l4t(root) == "R36.3.0, nvidia-l4t-core 36.3.0-20240506102626"
    assert machine.jetpack(root) == "6.0+b106"
    assert machine.jetson_model(root) == "NVIDIA Jetson AGX Orin Developer Kit"
    assert machine.init_system(root) == "systemd (PID 1: systemd)"


def test_machine_facts_here(tmp_path):
    if Path("/etc/nv_tegra_release").exists():
        pytest.skip("this is a Jetson: the not-found answers cannot be shown here")
    facts = machine.facts(VirtualRig(), root=tmp_path)  # an empty tree: nothing of a Jetson
    for key in ("JetPack", "L4T", "Jetson model"):
        assert facts[key].startswith("not found ("), facts[key]
    assert facts["init"].startswith("not systemd")
    assert facts["Python"] == platform.python_version()
    assert "CPUExecutionProvider" in facts["ONNX Runtime"]
    assert facts["rig"] == "virtual" and facts["camera"].startswith("virtual: pyrealsense2")
    assert all(isinstance(v, str) and v for v in facts.values())


def test_rig_facts_never_raise():
    class GoneCamera(VirtualRig):
        """A real rig whose camera left the bus before the report asked it."""

        def facts(self):
            raise RuntimeError("No device connected")

    assert machine.rig_facts(GoneCamera()) == {"rig": "virtual", "devices": "not found (No device connected)"}
    assert machine.rig_facts(None) == {"rig": "not found (no test opened the rig)"}


def test_gpu_facts_through_the_cuda_runtime_the_backend_uses(fake_gpu):
    """The FAKE CUDA runtime and TensorRT stand where the real ones are imported from: the GPU is
    named by cudaGetDeviceProperties, TensorRT by its __version__ (a real GPU: a Jetson or CI with one)."""
    assert machine.cuda_gpus() == "Fake GPU (tests/fakes/fake_cudart.py)"
    assert machine.tensorrt() == fake_gpu.trt.__version__


def test_gpu_facts_without_a_driver(no_cuda_device):
    assert machine.cuda_gpus() is None
    assert machine.cuda_driver() == "not found (no CUDA driver answers)"
