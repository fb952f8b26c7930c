"""Result sinks under failure: a full disk, for real, on a tiny tmpfs."""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from collecting_sink import Lines as _Lines

from edgefusion.sinks import RotatingFileSink, SinkWriter


def test_a_full_disk_loses_nothing_and_tears_nothing_once_space_returns(tiny_disk, capfd):
    filler = tiny_disk / "filler"
    filler.write_bytes(b"x" * 40_000)
    out = tiny_disk / "results.jsonl"
    stdout = _Lines()
    writer = SinkWriter((RotatingFileSink(out, max_bytes=10**9), stdout), lambda r: json.dumps(r), interval_s=0.01)
    pad = "p" * 200
    n = 0
    while writer.errors == 0:  # write until the disk is full
        writer.put({"tick": n, "pad": pad})
        n += 1
        writer.wait_written()
        assert n < 500, "the disk never filled"
    for _ in range(50):  # results go on arriving while the disk is full
        writer.put({"tick": n, "pad": pad})
        n += 1
    writer.wait_written()
    time.sleep(0.1)
    assert len(stdout.lines) == n, "the other sink got every result meanwhile"
    filler.unlink()  # space again
    time.sleep(0.2)
    writer.close()
    ticks = [json.loads(line)["tick"] for line in out.read_text().splitlines()]
    assert ticks == list(range(n)), "every line once, whole and in order"
    err = capfd.readouterr().err
    assert f"a result sink failed ({out}: " in err and f"a result sink works again ({out})" in err and "lost" not in err


def test_sigkill_mid_run_leaves_only_whole_lines_but_the_last(tmp_path):
    out = tmp_path / "results.jsonl"
    cfg = tmp_path / "robot.toml"
    cfg.write_text(f'[output]\nstdout = false\nfile = "{out}"\nflush_ms = 5\n[runtime]\ntick_hz = 200\n')
    proc = subprocess.Popen([sys.executable, "-m", "edgefusion.cli", "run", "--config", str(cfg)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 200_000):
        time.sleep(0.05)
    os.kill(proc.pid, 9)
    proc.wait(timeout=10)
    lines = out.read_bytes().split(b"\n")
    whole = [json.loads(line) for line in lines[:-1]]  # all but what follows the last newline
    assert len(whole) > 200 and [r["tick"] for r in whole] == list(range(1, len(whole) + 1))
    assert lines[-1] == b"" or not lines[-1].endswith(b"}"), "at most the last line is partial"


def test_a_torn_line_left_by_a_kill_is_cut_before_new_lines(tmp_path):
    out = tmp_path / "results.jsonl"
    out.write_bytes(b'{"tick": 1}\n{"tick": 2, "lab')  # the power went
    sink = RotatingFileSink(out)
    sink.write('{"tick": 1}')
    sink.close()
    assert out.read_text().splitlines() == ['{"tick": 1}', '{"tick": 1}']


def test_stdout_on_a_full_disk_never_duplicates_a_line(tmp_path):
    """stdout redirected to a file on a disk that fills (at about line 100), then frees (after
    line 150): each line once, in order, none torn (200 lines fit once the filler is gone)."""
    code = (
        "import json, sys, time\n"
        "from edgefusion.sinks import SinkWriter, StreamSink\n"
        "w = SinkWriter((StreamSink(sys.stdout),), json.dumps, interval_s=0.01)\n"
        "for n in range(200):\n"
        "    w.put({'tick': n, 'pad': 'p' * 200}); w.wait_written()\n"
        "    if n == 150: open(sys.argv[1] + '/go', 'w').close()\n"
        "time.sleep(1.0); w.close()\n"
    )
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        filler = disk / "filler"
        filler.write_bytes(b"x" * 40_000)
        with open(disk / "out.jsonl", "wb") as out:
            proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=out, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 60
            while not (tmp_path / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            filler.unlink()
            proc.wait(timeout=60)
        ticks = [json.loads(line)["tick"] for line in (disk / "out.jsonl").read_text().splitlines()]
        assert ticks == list(range(200)), "every line once, in order"
        assert b"a result sink failed (stdout: " in proc.stderr.read()
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_disk_still_full_at_exit_leaves_whole_lines_and_says_what_was_lost(tiny_disk):
    """The results disk fills a second into the run and stays full: the file ends on a whole
    line (no torn tail), holds every tick from the first in order, and stderr counts the rest."""
    (tiny_disk / "filler").write_bytes(b"x" * 40_000)
    out = tiny_disk / "results.jsonl"
    cfg = tiny_disk.parent / "robot.toml"
    cfg.write_text(f'[output]\nstdout = false\nfile = "{out}"\n[runtime]\ntick_hz = 100\n[source]\nfaults = ""\n')
    r = subprocess.run(
        [sys.executable, "-m", "edgefusion.cli", "run", "--config", str(cfg), "--seconds", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in r.stderr, r.stderr
    data = out.read_bytes()
    assert data and data.endswith(b"\n"), "never a torn line"
    ticks = [json.loads(line)["tick"] for line in data.splitlines()]
    assert ticks == list(range(1, len(ticks) + 1))
    assert f"a result sink failed ({out}: " in r.stderr and "No space left on device" in r.stderr
    lost = re.search(rf"still failed at shutdown: {re.escape(str(out))} lost (\d+) results \(\1 still queued", r.stderr)
    assert lost and int(lost[1]) > 0, r.stderr


def test_stdout_to_a_disk_still_full_at_exit_ends_on_a_whole_line(tiny_disk):
    """stdout redirected to a file on a disk that fills mid-line and never frees: the part of
    the line that fitted is cut off again at exit, so the file holds whole lines only."""
    code = (
        "import json, sys\n"
        "from edgefusion.sinks import SinkWriter, StreamSink\n"
        "w = SinkWriter((StreamSink(sys.stdout),), json.dumps, interval_s=0.01)\n"
        "for n in range(200):\n"
        "    w.put({'tick': n, 'pad': 'p' * 201})\n"
        "w.close()\n"
    )
    (tiny_disk / "filler").write_bytes(b"x" * 40_000)
    with open(tiny_disk / "out.jsonl", "wb") as out:
        r = subprocess.run([sys.executable, "-c", code], stdout=out, stderr=subprocess.PIPE, text=True, timeout=60)
    data = (tiny_disk / "out.jsonl").read_bytes()
    assert data.endswith(b"\n") and 0 < len(data) < 200 * 220, "filled, then cut back to a whole line"
    ticks = [json.loads(line)["tick"] for line in data.splitlines()]
    assert ticks == list(range(len(ticks)))
    assert "a result sink failed (stdout: " in r.stderr and "still failed at shutdown: stdout lost" in r.stderr
