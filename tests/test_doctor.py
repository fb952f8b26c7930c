"""``edgefusion doctor`` on this machine: what it finds, and what makes it fail."""

import json
import os
import shutil
import subprocess
import sys

from edgefusion.bundle import default_bundle_path


def _doctor(*args):
    return subprocess.run(
        [sys.executable, "-m", "edgefusion.cli", "doctor", "--json", *args], capture_output=True, text=True, timeout=60
    )


def test_this_machine_can_run_and_says_what_it_lacks():
    r = _doctor()
    assert r.returncode == 0, r.stdout + r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert checks["bundle"]["status"] == "ok" and checks["package onnxruntime"]["status"] == "ok"
    for c in checks.values():
        assert c["status"] in ("ok", "warn", "fail")
        assert c["status"] == "ok" or c["fix"], f"{c['name']}: a problem without a fix"


def test_a_broken_config_or_bundle_fails_with_what_to_do(tmp_path):
    cfg = tmp_path / "robot.toml"
    cfg.write_text("[runtime]\ntick_hz = -1\n")
    r = _doctor("--config", str(cfg))
    assert r.returncode == 1
    failed = [c for c in json.loads(r.stdout) if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["config"] and "tick_hz" in failed[0]["detail"] and failed[0]["fix"]

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), bundle)
    (bundle / "fp32" / "head.onnx").write_bytes(b"broken")
    r = _doctor("--bundle", str(bundle))
    assert r.returncode == 1
    assert [c["name"] for c in json.loads(r.stdout) if c["status"] == "fail"] == ["bundle"]


def test_the_robots_config_without_the_sensor_libraries_fails(tmp_path):
    """kind = "realsense" stops a run without pyrealsense2/pyaudio: doctor must say so."""
    cfg = tmp_path / "robot.toml"
    cfg.write_text('[source]\nkind = "realsense"\n')
    blocker = tmp_path / "block"
    blocker.mkdir()
    for name in ("pyrealsense2", "pyaudio"):  # packages that fail to import, as a broken install does
        (blocker / name).mkdir()
        (blocker / name / "__init__.py").write_text("raise ImportError('missing libportaudio.so.2')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    r = subprocess.run(
        [sys.executable, "-m", "edgefusion.cli", "doctor", "--json", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    failed = {c["name"] for c in json.loads(r.stdout) if c["status"] == "fail"}
    assert failed == {"package pyrealsense2", "package pyaudio"}
