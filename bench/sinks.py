"""Sink independence under a stalled stdout, measured on a real ``edgefusion run``.

stdout goes to a pipe nobody reads (it fills after ~150 lines); the file sink is sampled every
second. Before sinks had a thread each, the file froze with stdout after ~5 s at 30 Hz. Prints,
per second, the lines the file gained, then what the run said about stdout on stderr.

    python bench/sinks.py [--seconds 20] [--tick-hz 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--tick-hz", type=float, default=30.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out, cfg = Path(tmp) / "results.jsonl", Path(tmp) / "robot.toml"
        cfg.write_text(
            f'[output]\nstdout = true\nfile = "{out}"\n[runtime]\ntick_hz = {args.tick_hz}\n[source]\nfaults = ""\n'
        )
        read_end, write_end = os.pipe()  # never read
        cmd = [sys.executable, "-m", "edgefusion.cli", "run", "--config", str(cfg), "--seconds", str(args.seconds)]
        t_start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=write_end, stderr=subprocess.PIPE, text=True)
        os.close(write_end)
        per_second, last = [], 0
        while proc.poll() is None:
            time.sleep(1.0)
            n = len(out.read_bytes().splitlines()) if out.exists() else 0
            per_second.append(n - last)
            last = n
        err = proc.stderr.read()
        t_end = time.monotonic()
        os.close(read_end)
        ticks = [json.loads(line)["tick"] for line in out.read_text().splitlines()]
    whole = ticks == list(range(1, len(ticks) + 1))
    print(f"file lines gained per second: {per_second}")
    print(f"file: {len(ticks)} lines, every tick in order: {whole}")
    print(f"exit {proc.returncode} after {t_end - t_start:.1f} s")
    print("stderr:\n" + err)


if __name__ == "__main__":
    main()
