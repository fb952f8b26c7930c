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


def _doctor_env(env, *args):
    r = subprocess.run(
        [sys.executable, "-m", "edgefusion.cli", "doctor", "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return r, {c["name"]: c for c in json.loads(r.stdout)}


def test_without_the_sensors_extra_every_warning_says_how_to_get_it(tmp_path):
    """The simulated rig needs no sensor library: warnings, each with the pip line, no failure."""
    blocker = tmp_path / "block"
    for name in ("pyrealsense2", "pyaudio", "soxr"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('No module named {name}')\n")
    r, checks = _doctor_env({**os.environ, "PYTHONPATH": str(blocker)})
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("package pyrealsense2", "package pyaudio", "package soxr", "cameras", "microphones"):
        assert checks[name]["status"] == "warn" and "pip install 'edgefusion[sensors]'" in checks[name]["fix"], name


def test_a_folder_not_there_yet_will_be_created_one_under_a_file_cannot(tmp_path):
    r, checks = _doctor_env({**os.environ, "EDGEFUSION_STATE": str(tmp_path / "new" / "state")})
    cache = checks["engine cache"]
    assert cache["status"] == "ok" and "will be created" in cache["detail"] and "not writable" not in cache["detail"]
    (tmp_path / "file").write_text("x")
    r, checks = _doctor_env({**os.environ, "EDGEFUSION_STATE": str(tmp_path / "file" / "state")})
    assert checks["engine cache"]["status"] == "warn" and "not a folder" in checks["engine cache"]["detail"]
    assert not (tmp_path / "new").exists(), "doctor only looks"


def test_a_results_file_where_none_can_be_written_fails(tmp_path):
    (tmp_path / "file").write_text("x")
    cfg = tmp_path / "robot.toml"
    for file, status in ((tmp_path / "file" / "r.jsonl", "fail"), (tmp_path / "later" / "r.jsonl", "ok")):
        cfg.write_text(f'[output]\nfile = "{file}"\n')
        r, checks = _doctor_env(dict(os.environ), "--config", str(cfg))
        assert checks["results folder"]["status"] == status, checks["results folder"]
        assert r.returncode == (1 if status == "fail" else 0)


def test_the_services_status_is_shown_where_systemd_runs_it(tmp_path):
    """A stand-in systemctl (systemd is not PID 1 here) answering as for a running service."""
    fake = tmp_path / "bin" / "systemctl"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho ActiveState=active\necho 'StatusText=30.0 ticks/s rgb OK depth OK audio STALE'\n")
    fake.chmod(0o755)
    r, checks = _doctor_env({**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"})
    assert checks["service"] == {
        "name": "service",
        "status": "ok",
        "detail": "30.0 ticks/s rgb OK depth OK audio STALE",
        "fix": "",
    }
    fake.write_text("#!/bin/sh\necho ActiveState=inactive\necho StatusText=\n")
    r, checks = _doctor_env({**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"})
    assert "service" not in checks, "not running: nothing to show"


def test_zenoh_missing_fails_only_when_the_config_turns_the_sink_on(tmp_path):
    blocker = tmp_path / "block" / "zenoh"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named zenoh')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker.parent)}
    cfg = tmp_path / "robot.toml"
    cfg.write_text("[output.zenoh]\nenabled = false\n")
    r, checks = _doctor_env(env, "--config", str(cfg))
    assert r.returncode == 0 and checks["package zenoh"]["status"] == "ok", checks["package zenoh"]
    assert "[output.zenoh] is off" in checks["package zenoh"]["detail"]
    cfg.write_text('[output.zenoh]\nenabled = true\nconnect = ["tcp/10.0.0.2:7447"]\n')
    r, checks = _doctor_env(env, "--config", str(cfg))
    assert r.returncode == 1 and checks["package zenoh"]["status"] == "fail"
    assert "eclipse-zenoh" in checks["package zenoh"]["fix"]


def test_the_installed_network_drop_in_is_checked_against_the_config(tmp_path):
    from edgefusion.bus.config import ZenohSection
    from edgefusion.config import Config
    from edgefusion.doctor import zenoh_checks
    from edgefusion.service.network import install

    def service_network(zenoh):
        cfg = Config()
        cfg.output.zenoh = zenoh
        return {c.name: c for c in zenoh_checks(cfg, tmp_path)}.get("service network")

    client = ZenohSection(enabled=True, mode="client", connect=("tcp/10.0.0.2:7447",))
    assert service_network(client) is None, "not installed as a service here: nothing to check"
    (tmp_path / "edgefusion.service").write_text("[Service]\n")
    check = service_network(client)
    assert check.status == "warn" and "reaches nobody" in check.detail and "service-network" in check.fix
    install(client, tmp_path)
    assert service_network(client).status == "ok"
    moved = ZenohSection(enabled=True, mode="client", connect=("tcp/10.0.0.3:7447",))
    assert service_network(moved).status == "warn" and "not what [output.zenoh] needs" in service_network(moved).detail
    check = service_network(ZenohSection())
    assert check.status == "warn" and "[output.zenoh] is off" in check.detail
