"""Sinks are independent: a stdout nobody reads (or a SIGSTOPped reader) holds back no other sink,
its drops are counted and said, and at shutdown a sink stuck in a write is abandoned with a line."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from collecting_sink import Lines as _Lines

from edgefusion.sinks import SinkWriter


class _Stalled:
    """A sink whose write() blocks until released: a pipe nobody reads."""

    name = "stalled pipe"

    def __init__(self):
        self.release = threading.Event()
        self.lines = []

    def write(self, line):
        self.release.wait()
        self.lines.append(line)

    def close(self):
        pass


def _put(writer, n):
    """Hand over results 0..n-1, each once the dispatcher has taken the one before (the ticks'
    own queue is as short as the sinks' here, and must not be what drops them)."""
    for k in range(n):
        writer.put(k)
        while writer.dispatched <= k:
            time.sleep(0.001)


def test_a_stalled_sink_holds_back_no_other_and_its_losses_are_counted(capfd):
    stalled, other = _Stalled(), _Lines()
    writer = SinkWriter((stalled, other), str, maxlen=10, interval_s=0.005)
    _put(writer, 100)
    deadline = time.monotonic() + 30
    while len(other.lines) < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert other.lines == [str(n) for n in range(100)], "the other sink got every result, in order"
    t0 = time.monotonic()
    writer.close(timeout_s=0.5)
    assert time.monotonic() - t0 < 5, "shutdown gives up on the stuck sink"
    # The stuck sink holds result 0 in its write and keeps the 10 newest; the 89 between were dropped.
    stats = {s["sink"]: s for s in writer.stats()}
    assert stats["stalled pipe"]["dropped"] == 89 and stats["stalled pipe"]["abandoned"] == 11
    assert writer.lost == {"stalled pipe": 100, "Lines": 0} and writer.results_lost == 100
    err = capfd.readouterr().err
    assert "a result sink is not keeping up (stalled or failing): stalled pipe dropped 1 results so far" in err
    assert (
        "a result sink is stuck in a write, abandoned at shutdown: stalled pipe lost 100 results "
        "(89 dropped while it could not keep up, 11 still queued at shutdown)" in err
    )
    stalled.release.set()


def test_a_sink_that_comes_back_gets_the_newest_lines_in_order(capfd):
    stalled, other = _Stalled(), _Lines()
    writer = SinkWriter((stalled, other), str, maxlen=10, interval_s=0.005)
    _put(writer, 50)
    writer.wait_written(timeout_s=0.5)  # the stalled sink is not settled: this gives up
    stalled.release.set()
    writer.wait_written(timeout_s=30)
    writer.close()
    assert stalled.lines == [str(n) for n in [0, *range(40, 50)]], "the one in its write, then the newest 10"
    assert writer.stats()[0]["dropped"] == 39 and writer.results_lost == 39
    said = "a result sink could not keep up: stalled pipe lost 39 results (39 dropped while it could not keep up)\n"
    assert said in capfd.readouterr().err


def _run(tmp_path, seconds: float, tick_hz: int, stdout):
    out = tmp_path / "results.jsonl"
    cfg = tmp_path / "robot.toml"
    cfg.write_text(f'[output]\nstdout = true\nfile = "{out}"\n[runtime]\ntick_hz = {tick_hz}\n[source]\nfaults = ""\n')
    cmd = [sys.executable, "-m", "edgefusion.cli", "run", "--config", str(cfg), "--seconds", str(seconds)]
    return out, subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True)


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_run_with_nobody_reading_stdout_keeps_the_file_growing(tmp_path):
    """stdout is a pipe nobody reads: it fills within a fraction of a second at 1000 Hz, its
    queue (4096 lines) within a few seconds; the file must go on getting every tick."""
    read_end, write_end = os.pipe()
    try:
        out, proc = _run(tmp_path, 10, 1000, write_end)
        os.close(write_end)
        deadline = time.monotonic() + 60
        while len(_lines(out)) < 6000 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # past the pipe's 64 KiB and the stdout queue: stdout is stalled
        counts = []
        for _ in range(3):
            counts.append(len(_lines(out)))
            time.sleep(0.5)
        running = proc.poll() is None
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(read_end)
    assert "Traceback" not in err, err
    if running:  # still ticking while sampled: the file grew in every half second
        assert all(b > a for a, b in zip(counts, counts[1:])), counts
    ticks = [json.loads(line)["tick"] for line in _lines(out)]
    assert ticks == list(range(1, len(ticks) + 1)) and len(ticks) > 6000, "every tick, in order, whole lines"
    said = re.search(r"abandoned at shutdown: stdout lost (\d+) results \((\d+) dropped .*, (\d+) still queued", err)
    assert said, err
    lost, dropped, abandoned = map(int, said.groups())
    assert "a result sink is not keeping up (stalled or failing): stdout dropped 1 results so far" in err
    assert dropped > 0 and abandoned > 0 and lost == dropped + abandoned < len(ticks), "what stdout lost is counted"


def test_a_sigstopped_reader_loses_only_what_is_counted(tmp_path):
    """A reader stopped for a while, then continued: the file gets every tick; the reader gets
    every tick but those said dropped, in order."""
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, proc = _run(tmp_path, 12, 1000, reader.stdin)
    reader.stdin.close()
    got: list[bytes] = []
    pump = threading.Thread(target=lambda: got.extend(reader.stdout), daemon=True)
    pump.start()
    time.sleep(2)
    os.kill(reader.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 60
        stopped_at = len(_lines(out))
        while len(_lines(out)) < stopped_at + 6000 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the file goes on while the reader sleeps; stdout drops its oldest
    finally:
        os.kill(reader.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    reader.wait(timeout=30)
    pump.join(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err, err
    ticks = [json.loads(line)["tick"] for line in _lines(out)]
    assert ticks == list(range(1, len(ticks) + 1)), "the file has every tick"
    seen = [json.loads(line)["tick"] for line in got]
    assert seen == sorted(seen) and len(set(seen)) == len(seen), "the reader's lines: in order, none twice"
    match = re.search(r"could not keep up: stdout lost (\d+) results \(\1 dropped while it could not keep up\)\n", err)
    assert match, f"the reader lost results while stopped, and it is said: {err}"
    assert len(seen) + int(match[1]) == len(ticks), "exactly the dropped ones are missing"
    assert "abandoned" not in err, "the reader was back before the end: nothing is stuck"
