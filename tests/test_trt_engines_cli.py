"""``edgefusion engines build|list|clear`` and the installer's engine build step.

The commands run as a user runs them (a fresh interpreter) wherever TensorRT is not needed; a build
needs TensorRT, so it runs in-process against ``fakes/fake_tensorrt.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_check import cli, refused
from fakes import fake_tensorrt
from tiny_bundle import make_bundle

from edgefusion import cli as edgefusion_cli
from edgefusion.backends.tensorrt import engines
from edgefusion.backends.tensorrt.cuda.api import GpuInfo
from edgefusion.backends.tensorrt.options import TensorRTOptions
from edgefusion.bundle import load_bundle

INSTALL = Path(__file__).resolve().parents[1] / "systemd" / "install.sh"
GPU = GpuInfo("Orin (fake)", (8, 7), 16, 8 << 30)


@pytest.fixture
def trt(monkeypatch):
    fake_tensorrt.reset()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt)
    monkeypatch.setattr(engines, "_this_gpu", lambda options: GPU)  # no CUDA here: the GPU the fake builds for
    yield fake_tensorrt
    fake_tensorrt.reset()


@pytest.fixture
def tiny(tmp_path):
    return make_bundle(tmp_path / "tiny", precisions=("fp32", "fp16", "int8"))


def _fill(cache: Path, bundle: Path, *precisions: str) -> None:
    fake_tensorrt.reset()
    options = TensorRTOptions(cache_dir=str(cache))
    for precision in precisions:
        engines.load_engines(fake_tensorrt, load_bundle(bundle), precision, options, GPU)


def test_build_without_tensorrt_is_one_line_and_writes_nothing(tmp_path):
    r = cli("engines", "build", "--cache-dir", str(tmp_path / "cache"))
    refused(r, "TensorRT is not installed here", "JetPack")
    assert not (tmp_path / "cache").exists()


def test_list_of_an_empty_cache(tmp_path):
    r = cli("engines", "list", "--cache-dir", str(tmp_path / "none"))
    assert r.returncode == 0 and "no TensorRT engines in" in r.stdout, r.stderr
    r = cli("engines", "list", "--cache-dir", str(tmp_path / "none"), "--json")
    assert json.loads(r.stdout) == []


def test_list_shows_each_engine_then_clear_removes_one_bundle_s(tmp_path, tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt)
    cache = tmp_path / "cache"
    _fill(cache, tiny, "fp32", "int8")
    fake_tensorrt.reset()
    r = cli("engines", "list", "--cache-dir", str(cache))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"6 TensorRT engines in {cache}:")
    header, *rows = r.stdout.splitlines()[1:]
    assert header.split() == ["bundle", "role", "precision", "TensorRT", "GPU", "bytes", "built", "last", "used"]
    assert sorted((row.split()[1], row.split()[2]) for row in rows) == sorted(
        (role, p) for role in ("rgb", "depth", "head") for p in ("fp32", "int8")
    )
    assert all(row.split()[0] == "tiny" and fake_tensorrt.DEFAULT_VERSION in row and "Orin" in row for row in rows)
    entries = json.loads(cli("engines", "list", "--cache-dir", str(cache), "--json").stdout)
    assert {e["role"] for e in entries} == {"rgb", "depth", "head"} and all(e["bytes"] > 0 for e in entries)

    r = cli("engines", "clear", "--cache-dir", str(cache), "--bundle", "someone-else")
    assert r.returncode == 0 and "removed 0 " in r.stdout
    r = cli("engines", "clear", "--cache-dir", str(cache), "--bundle", "tiny")
    assert r.returncode == 0 and "removed 6 " in r.stdout
    assert sorted(p.name for p in cache.iterdir() if p.suffix in (".plan", ".json")) == []
    assert [p.name for p in cache.iterdir() if p.name.startswith("timing-")]  # kept: not a bundle's
    cli("engines", "clear", "--cache-dir", str(cache))
    assert list(cache.iterdir()) == []


def test_build_every_precision_then_again_finds_them_current(trt, tiny, tmp_path, capsys):
    args = ["engines", "build", "--bundle", str(tiny), "--cache-dir", str(tmp_path / "c"), "--precision", "all"]
    assert edgefusion_cli.main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted((r["precision"], r["role"]) for r in rows) == sorted(
        (p, role) for p in ("fp32", "fp16", "int8") for role in ("rgb", "depth", "head")
    )
    assert {r["how"] for r in rows} == {"built"}
    assert edgefusion_cli.main(args) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith(f"0 built, 9 already current, in {tmp_path / 'c'}")


def test_build_takes_the_bundle_precision_and_cache_from_the_config(trt, tiny, tmp_path, capsys, monkeypatch):
    """As the installer runs it: the config's bundle and precision, the cache where the service
    looks (its $STATE_DIRECTORY)."""
    config = tmp_path / "robot.toml"
    config.write_text(f'[runtime]\nbundle = "{tiny}"\nprecision = "fp16"\n')
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert edgefusion_cli.main(["engines", "build", "--config", str(config), "--workspace-mb", "64"]) == 0
    assert "3 built, 0 already current" in capsys.readouterr().out
    metas = [json.loads(p.read_text()) for p in (tmp_path / "state" / "engines").glob("*.json")]
    assert {m["precision"] for m in metas} == {"fp16"} and len(metas) == 3
    assert {m["facts"]["builder"]["workspace_mb"] for m in metas} == {64}
    assert fake_tensorrt.last_build["workspace"] == 64 << 20


# -- systemd/install.sh ---------------------------------------------------------------------------------
def test_a_staging_root_builds_no_engine_and_says_so(tmp_path):
    r = subprocess.run(
        ["bash", str(INSTALL), "--root", str(tmp_path / "r"), "--dry-run"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert not [x for x in r.stdout.splitlines() if x.startswith("+ ") and "engines build" in x]
    assert "not built into a staging root" in r.stdout


def _dry_run_as_a_jetson(tmp_path: Path, with_tensorrt: bool) -> subprocess.CompletedProcess:
    """A real install's --dry-run, in a private mount namespace whose /etc has nv_tegra_release
    (an overlay: the host's /etc is untouched); TensorRT, where wanted, is an empty module."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to stand in for a Jetson")
    ns = tmp_path / "ns"
    ns.mkdir()
    fake = tmp_path / "py"
    fake.mkdir()
    (fake / "tensorrt.py").write_text("__version__ = '10.3.0'\n")
    script = (
        f"mount -t tmpfs t {ns} && mkdir {ns}/u {ns}/w && touch {ns}/u/nv_tegra_release && "
        f"mount -t overlay o -o lowerdir=/etc,upperdir={ns}/u,workdir={ns}/w /etc || exit 99; "
        f"exec bash {INSTALL} --dry-run"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if with_tensorrt:
        env["PYTHONPATH"] = str(fake)
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120, env=env)
    if r.returncode == 99 or "unshare failed" in r.stderr:
        pytest.skip(f"no private mount namespace here: {r.stderr.strip()}")
    if r.returncode == 2 and "install.sh:" in r.stderr:
        pytest.skip(f"the installer's own pre-checks refuse this machine: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    return r


def test_a_real_install_builds_the_engines_as_the_service_user(tmp_path):
    plan = [x for x in _dry_run_as_a_jetson(tmp_path, with_tensorrt=True).stdout.splitlines() if x.startswith("+ ")]
    build = next(i for i, x in enumerate(plan) if " engines build " in x)
    assert plan[build].startswith("+ runuser -u edgefusion -- env -C /var/lib/edgefusion ")
    assert "STATE_DIRECTORY=/var/lib/edgefusion" in plan[build]
    assert plan[build].endswith("engines build --config /etc/edgefusion/edgefusion.toml")
    state_owned = plan.index("+ chown -R edgefusion:edgefusion /var/lib/edgefusion")
    started = plan.index("+ systemctl restart edgefusion.service")
    assert state_owned < build < started  # the user can write the folder; the service then finds them


def test_a_real_install_without_tensorrt_skips_the_build_in_one_line(tmp_path):
    out = _dry_run_as_a_jetson(tmp_path, with_tensorrt=False).stdout
    assert "engines build" not in out
    assert len([x for x in out.splitlines() if x.startswith("TensorRT not found")]) == 1
