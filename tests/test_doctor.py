"""``edgefusion doctor`` on this machine: what it finds, and what makes it fail."""

import json
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
