"""The systemd unit (verified and scored by systemd's own tools) and the installer, into a staging root."""

import importlib.util
import ipaddress
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgefusion.bundle import default_bundle_path
from edgefusion.bus.config import ZenohSection
from edgefusion.service.network import DROPIN, dropin

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "edgefusion.service"
INSTALL = REPO / "systemd" / "install.sh"
EXPOSURE_MAX = 2.0
# Settings systemd added after 249 (JetPack 6 runs 249): the unit must not rely on them.
NEWER_THAN_249 = {"RestrictFileSystems", "ExitType", "MemoryKSM", "SetLoginEnvironment", "ProtectControlGroupsEx"}

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")


def _unit_keys() -> set[str]:
    return {line.split("=")[0] for line in UNIT.read_text().splitlines() if re.match(r"^[A-Z]\w*=", line)}


# The drop-ins install.sh can write: the widest peer config (scouting, a listen, the LAN) and a client's.
DROPINS = {
    "peer": ZenohSection(enabled=True, mode="peer", connect=("tcp/10.1.0.1:7447",), listen=("tcp/0.0.0.0:7447",)),
    "client": ZenohSection(enabled=True, mode="client", connect=("tcp/10.0.0.2:7447", "tls/[fd00::9]:7447")),
}
LAN = [("eth0", ipaddress.ip_network("192.168.1.0/24")), ("eth0", ipaddress.ip_network("fd00::/64"))]


def _root(tmp_path: Path, dropin_text: str | None = None) -> Path:
    """A root as ``verify`` needs it: it resolves ExecStart inside --root, so the root holds the
    binaries the unit names (stubs) and the system's own units (the targets it is ordered against);
    the unit in etc/systemd/system, with the network drop-in beside it where one is given."""
    root = tmp_path / "root"
    exe = root / "opt/edgefusion/venv/bin/edgefusion"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (root / "bin").mkdir()
    shutil.copy("/bin/kill", root / "bin/kill")
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/edgefusion.service")
    if dropin_text is not None:
        (root / "etc/systemd/system" / DROPIN).parent.mkdir()
        (root / "etc/systemd/system" / DROPIN).write_text(dropin_text)
    return root


def _verify(root: Path) -> None:
    r = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "--man=no", "edgefusion.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr  # a warning fails too


def _exposure(*args: str) -> tuple[float, str]:
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", *args], capture_output=True, text=True, timeout=60
    )
    score = re.search(r"Overall exposure level for edgefusion.service: ([\d.]+)", r.stdout)
    assert score, r.stdout + r.stderr
    return float(score.group(1)), r.stdout


@needs_analyze
def test_the_unit_verifies_with_no_warning(tmp_path):
    _verify(_root(tmp_path))


@needs_analyze
def test_the_unit_exposure_is_at_most_2():
    score, out = _exposure(str(UNIT))
    assert score <= EXPOSURE_MAX, out
    assert "✓ IPAddressDeny=" in out and "✓ RestrictAddressFamilies=~AF_(INET|INET6)" in out, "no network at all"


@needs_analyze
@pytest.mark.parametrize("mode", DROPINS)
def test_the_unit_with_its_network_drop_in_verifies_and_stays_at_most_2(tmp_path, mode):
    """systemd merges etc/systemd/system/edgefusion.service.d/ into the unit under --root, as on the robot."""
    root = _root(tmp_path, dropin(DROPINS[mode], subnets=LAN))
    _verify(root)
    score, out = _exposure(f"--root={root}", "edgefusion.service")
    assert score <= EXPOSURE_MAX, out
    assert "✗ IPAddressDeny=" in out and "allow list" in out, "the drop-in was not merged"


def test_the_unit_is_a_watched_notify_service_for_systemd_249():
    keys = _unit_keys()
    text = UNIT.read_text()
    assert not keys & NEWER_THAN_249
    for setting in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StartLimitBurst=", "TimeoutStopSec="):
        assert setting in text
    for left_out in ("PrivateDevices=", "ProtectClock=", "PrivateNetwork=", "PrivateUsers=", "ProcSubset="):
        assert f"# {left_out}" in text, f"{left_out} is left out without saying why"


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    if importlib.util.find_spec("pyaudio") is None and not Path("/usr/include/portaudio.h").exists():
        pytest.skip("install.sh builds pyaudio: needs portaudio19-dev (.ci/run installs it)")
    root = tmp_path_factory.mktemp("stage")
    bundle = default_bundle_path()
    r = subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), "--bundle", str(bundle)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return root, r.stdout


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_install_into_a_staging_root_lays_out_files_and_modes(staged):
    root, out = staged
    assert _mode(root / "etc/edgefusion") == 0o750
    assert _mode(root / "etc/edgefusion/edgefusion.toml") == 0o640
    assert _mode(root / "var/lib/edgefusion") == 0o750
    assert _mode(root / "etc/systemd/system/edgefusion.service") == 0o644
    assert (root / "etc/systemd/system/edgefusion.service").read_text() == UNIT.read_text()
    assert not (root / "etc/systemd/system/edgefusion.service.d").exists(), "no [output.zenoh]: no network"
    assert "root:edgefusion" in out and "edgefusion:edgefusion" in out, "owners as planned for the robot"
    r = subprocess.run(
        [str(root / "opt/edgefusion/venv/bin/edgefusion"), "info"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and "verified" in r.stdout, r.stderr
    from edgefusion.config import load_config

    cfg = load_config(root / "etc/edgefusion/edgefusion.toml")
    assert cfg.source.kind == "realsense" and cfg.runtime.bundle == "/etc/edgefusion/bundle", "runs the bundle given"
    # the robot asks for TensorRT, its engines in the state directory systemd gives the service
    assert cfg.runtime.backend == "tensorrt" and cfg.tensorrt.cache_dir == ""
    staged_bundle = root / "etc/edgefusion/bundle"
    assert _mode(staged_bundle) == 0o750 and _mode(staged_bundle / "manifest.json") == 0o640
    r = subprocess.run(
        [str(root / "opt/edgefusion/venv/bin/edgefusion"), "info", "--bundle", str(staged_bundle)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "verified" in r.stdout, r.stderr


def test_install_again_keeps_the_robots_config_and_opens_the_network_it_names(staged):
    root, _ = staged
    config = root / "etc/edgefusion/edgefusion.toml"
    tuned = '\n# tuned on the robot\n[output.zenoh]\nenabled = true\nmode = "client"\nconnect = ["tcp/10.0.0.2:7447"]\n'
    config.write_text(config.read_text() + tuned)
    r = subprocess.run(["bash", str(INSTALL), "--root", str(root)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert config.read_text().endswith(tuned)
    allowed = (root / "etc/systemd/system" / DROPIN).read_text()
    assert "IPAddressAllow=10.0.0.2\n" in allowed and "IPAddressAllow=localhost\n" in allowed


def test_dry_run_changes_nothing_and_shows_the_plan(tmp_path):
    r = subprocess.run(
        ["bash", str(INSTALL), "--root", str(tmp_path / "r"), "--dry-run"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "r").exists()
    assert "+ install -D -m 0644" in r.stdout and "venv" in r.stdout
    # the network drop-in is made from the config before the unit changes: a refused config stops it there
    assert r.stdout.index(" service-network --config ") < r.stdout.index("+ install -D -m 0644")


def test_uninstall_keeps_config_and_state(staged, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(staged[0], root, symlinks=True)
    r = subprocess.run(["bash", str(INSTALL), "--root", str(root), "--uninstall"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not (root / "opt/edgefusion").exists() and not (root / "etc/systemd/system/edgefusion.service").exists()
    assert not (root / "etc/systemd/system/edgefusion.service.d").exists(), "the network drop-in goes with the unit"
    assert (root / "etc/edgefusion/edgefusion.toml").exists() and (root / "var/lib/edgefusion").is_dir()


def test_install_refuses_a_machine_that_is_not_a_jetson():
    if Path("/etc/nv_tegra_release").exists():
        pytest.skip("this is a Jetson")
    r = subprocess.run(["bash", str(INSTALL), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a Jetson" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_the_bundle_is_verified_before_it_is_copied_and_the_copy_follows_no_link(tmp_path):
    """As root, a link inside a bundle would pull a root-only file into /etc/edgefusion: the plan
    verifies the source first (`info` refuses links), then copies with -P, then verifies the copy."""
    bundle = default_bundle_path()
    r = subprocess.run(
        ["bash", str(INSTALL), "--root", str(tmp_path / "r"), "--dry-run", "--bundle", str(bundle)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    plan = [line for line in r.stdout.splitlines() if line.startswith("+ ")]
    verify_source = next(i for i, line in enumerate(plan) if line.endswith(f"info --bundle {bundle}"))
    copy = next(i for i, line in enumerate(plan) if line.startswith("+ cp "))
    verify_copy = next(
        i
        for i, line in enumerate(plan)
        if line.endswith("info --bundle " + str(tmp_path / "r/etc/edgefusion/bundle.new"))
    )
    assert verify_source < copy < verify_copy
    assert plan[copy].split()[2] == "-RP" and "L" not in plan[copy].split()[2], plan[copy]
