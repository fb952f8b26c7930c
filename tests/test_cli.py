"""The device CLI end to end, as a user runs it: real processes, real exit codes, real output."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from edgefusion.bundle import default_bundle_path


def _run(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "edgefusion.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_demo_json_survives_faults_and_reports():
    r = _run("demo", "--seconds", "5.5", "--json", "--faults", "rgb:stop@1-2.5,audio:nan@1.5-2")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) >= 0.8 * 5.5 * 30, "ticks kept their rate through the faults"
    for key in ("t", "label", "probs", "present", "sensors", "latency_ms"):
        assert key in lines[0]
    t0 = lines[0]["t"]
    during = [x for x in lines if 1.4 <= x["t"] - t0 <= 2.4]
    # Back within the reconnect backoff's cap (2 s) of the device returning at 2.5 s.
    after = [x for x in lines if x["t"] - t0 >= 4.6]
    assert during and not any(x["present"]["rgb"] for x in during)
    assert all(x["sensors"]["rgb"] in ("FAILED", "RECONNECTING") for x in during)
    assert after and sum(x["present"]["rgb"] for x in after) >= 0.9 * len(after), "the camera came back"
    summary = json.loads(r.stderr.strip().splitlines()[-1])
    assert summary["dropped"]["audio"]["nonfinite"] > 0
    assert summary["encoder_runs"]["audio"] < summary["head_runs"] / 2, "audio is encoded per window, not per tick"


@pytest.mark.parametrize(
    "args, message",
    [
        (["demo", "--faults", "rgb:melt@1-2"], "unknown kind 'melt'"),
        (["demo", "--seconds", "0"], "argument --seconds: must be a number from 0.001"),
        (["run", "--config", "/nonexistent.toml"], "no such config file"),
        (["info", "--bundle", "/nonexistent"], "/nonexistent"),
    ],
)
def test_user_errors_are_one_line_exit_2_no_traceback(args, message):
    r = _run(*args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_tampered_bundle_is_refused_naming_the_file(tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), copy)
    target = copy / "int8" / "audio.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    r = _run("info", "--bundle", str(copy))
    assert r.returncode == 2 and "int8/audio.onnx" in r.stderr and "sha256" in r.stderr
    r = _run("demo", "--seconds", "1", "--bundle", str(copy))
    assert r.returncode == 2 and "int8/audio.onnx" in r.stderr


def test_run_writes_a_rotating_json_lines_file(tmp_path):
    out = tmp_path / "results.jsonl"
    cfg = tmp_path / "edgefusion.toml"
    cfg.write_text(f'[output]\nstdout = false\nfile = "{out}"\n[runtime]\ntick_hz = 20\n')
    r = _run("run", "--config", str(cfg), "--seconds", "2")
    assert r.returncode == 0, r.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) >= 30
    assert sum(r["label"] is not None for r in results) >= len(results) // 2, "the sensors came up"
    assert r.stdout == ""


def test_info_json_describes_the_shipped_bundle():
    r = _run("info", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["precisions"] == ["fp32", "fp16", "int8"] and len(info["labels"]) == 7


def test_sigterm_stops_cleanly_with_every_line_whole(tmp_path):
    out = tmp_path / "results.jsonl"
    cfg = tmp_path / "edgefusion.toml"
    cfg.write_text(f'[output]\nstdout = false\nfile = "{out}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefusion.cli", "run", "--config", str(cfg)], stderr=subprocess.PIPE
    )
    time.sleep(4.0)  # start-up (imports, bundle check) takes up to ~1.5 s on a busy CI machine
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) >= 30 and [r["tick"] for r in results] == list(range(1, len(results) + 1))


def test_a_failing_sink_is_reported_not_spammed_and_the_loop_goes_on(tmp_path):
    cfg = tmp_path / "edgefusion.toml"
    cfg.write_text('[output]\nstdout = true\nfile = "/dev/full"\n[runtime]\ntick_hz = 20\n')
    r = _run("run", "--config", str(cfg), "--seconds", "2")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) >= 30, "stdout kept getting results while the file failed"
    lines = r.stderr.splitlines()
    reports = sum(line.startswith("edgefusion: a result sink failed") for line in lines)
    assert 1 <= reports <= 8, lines  # at the 1st, 2nd, 4th, 8th... error: ~40 errors, 6 lines
    assert any("still failed at shutdown" in line for line in lines), lines
    assert "Traceback" not in r.stderr


def test_run_on_real_devices_that_are_not_there_keeps_ticking(tmp_path):
    """No RealSense and no microphone on this machine: the loop runs at its rate, says nothing
    is present, and the drivers keep trying; a missing device is not a reason to stop."""
    pytest.importorskip("pyrealsense2")
    pytest.importorskip("pyaudio")
    out = tmp_path / "results.jsonl"
    cfg = tmp_path / "robot.toml"
    cfg.write_text(f'[source]\nkind = "realsense"\n[output]\nstdout = false\nfile = "{out}"\n')
    r = _run("run", "--config", str(cfg), "--seconds", "3")
    assert r.returncode == 0, r.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) >= 0.95 * 90
    assert all(r["label"] is None and not any(r["present"].values()) for r in results)
    assert {r["sensors"]["rgb"] for r in results[-10:]} <= {"RECONNECTING", "FAILED"}


@pytest.mark.parametrize("args", [["info"], ["info", "--json"], ["doctor"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(args):
    """`edgefusion info | head -1`: the reader closes the pipe before the output is written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefusion.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    proc.stdout.close()  # before the bundle's hashes are checked: every write then meets a closed pipe
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141 and err == "", err


def _signal_handled(pid: int, sig: int) -> bool:
    """Whether the process has installed a handler for ``sig`` (its SigCgt mask in /proc)."""
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught >> (sig - 1) & 1)


def test_a_sighup_while_starting_is_a_reload_once_running(tmp_path):
    """A service reloaded right after its start: the SIGHUP comes the moment run can take it,
    before the bundle is even read. It must not kill the run; the reload follows once it runs."""
    out = tmp_path / "results.jsonl"
    cfg = tmp_path / "edgefusion.toml"
    cfg.write_text(f'[output]\nstdout = false\nfile = "{out}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefusion.cli", "run", "--config", str(cfg), "--seconds", "3"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not _signal_handled(proc.pid, signal.SIGHUP):
        assert proc.poll() is None and time.monotonic() < deadline, "run never took SIGHUP"
        time.sleep(0.001)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = err.splitlines()
    assert any("SIGHUP while starting" in line for line in lines), err
    assert any(line.startswith("edgefusion: reloaded ") for line in lines), err
    assert len(out.read_text().splitlines()) >= 30


def test_run_says_what_it_runs_and_what_happened(tmp_path):
    """The start line and the exit summary on stderr (the journal under systemd): with no
    result on stdout, a run is otherwise silent."""
    out = tmp_path / "results.jsonl"
    cfg = tmp_path / "edgefusion.toml"
    cfg.write_text(f'[runtime]\ntick_hz = 20\n[source]\nseed = 4\n[output]\nstdout = false\nfile = "{out}"\n')
    r = _run("run", "--config", str(cfg), "--seconds", "2")
    assert r.returncode == 0, r.stderr
    start, end = r.stderr.splitlines()
    for words in ("running bundle hri-intent-demo", "fp32 on onnxruntime", "20 Hz", "simulated rig (seed 4", str(out)):
        assert words in start, start
    ticks = len(out.read_text().splitlines())
    assert end.startswith("edgefusion: stopped after ") and f": {ticks} ticks (" in end, (end, ticks)
    for words in (
        "overruns",
        "late ticks",
        "rgb OK",
        "depth OK",
        "audio OK",
        "0 results lost",
        "0 sink errors",
        "0 ticks with no valid output",
    ):
        assert words in end, end


def _without(tmp_path, *modules: str) -> dict:
    """An environment where ``modules`` fail to import, as when they are not installed."""
    import os

    blocker = tmp_path / "block"
    for name in modules:
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('No module named {name}', name='{name}')\n")
    return {**os.environ, "PYTHONPATH": str(blocker)}


def test_eval_plot_without_matplotlib_is_refused_before_any_work(tmp_path):
    """Refused before even the bundle is read: its error would otherwise come first."""
    env = _without(tmp_path, "matplotlib")
    r = subprocess.run(
        [sys.executable, "-m", "edgefusion.cli", "eval", "--plot", str(tmp_path / "p.png"), "--bundle", "/nonexistent"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 2 and "matplotlib" in r.stderr and "/nonexistent" not in r.stderr, r.stderr
    assert not (tmp_path / "p.png").exists()


def test_eval_plot_is_written_and_says_what_it_measured(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "noise.png"
    r = _run("eval", "--samples", "7", "--precisions", "fp16", "--plot", str(png), "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["noise"]["precision"] == "fp16" and report["plot"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["noise.png"], "no temp file left beside it"


def test_the_noise_plot_keeps_its_legend_off_the_curves_and_shows_chance():
    pytest.importorskip("matplotlib")
    from edgefusion.bundle import load_bundle
    from edgefusion.evaluate import NOISE_LEVELS, figure

    bundle = load_bundle(default_bundle_path())
    curves = {m: [1.0 - 0.05 * k for k in range(len(NOISE_LEVELS))] for m in ("rgb", "depth", "audio")}
    report = {"samples": 70, "noise": {"levels": list(NOISE_LEVELS), "precision": "int8", "accuracy": curves}}
    fig = figure(report, bundle)
    ax = fig.axes[0]
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1, "the legend sits beside the axes"
    chance = [line for line in ax.get_lines() if set(line.get_ydata()) == {1 / len(bundle.labels)}]
    assert len(chance) == 1 and "chance" in chance[0].get_label()
    title = ax.get_title()
    assert "hri-intent-demo" in title and "int8" in title and "70 held-out samples" in title
