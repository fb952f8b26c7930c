"""Real Zenoh on loopback for the bus tests: a router in a process of its own (so it can be
killed and started again), a subscribing session in the test, a runtime run as a user runs it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

zenoh = __import__("pytest").importorskip("zenoh")

ROUTER = """
import sys, time, zenoh
c = zenoh.Config()
c.insert_json5("mode", '"router"')
c.insert_json5("listen/endpoints", '["%s"]' % sys.argv[1])
c.insert_json5("scouting/multicast/enabled", "false")
s = zenoh.open(c)
print("up", flush=True)
sys.stdin.read()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint(port: int) -> str:
    return f"tcp/127.0.0.1:{port}"


class Router:
    """A Zenoh router on ``endpoint``, in its own process: ``kill()`` is a router that dies."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.proc: subprocess.Popen | None = None

    def start(self) -> Router:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ROUTER, self.endpoint], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.proc.stdout.readline() == b"up\n", "the router did not start"
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def session(*connect: str, listen: tuple[str, ...] = ()) -> zenoh.Session:
    """A peer that reaches ``connect`` (a router or the runtime's listen endpoint)."""
    c = zenoh.Config()
    c.insert_json5("mode", '"peer"')
    c.insert_json5("connect/endpoints", json.dumps(list(connect)))
    c.insert_json5("listen/endpoints", json.dumps(list(listen) or ["tcp/127.0.0.1:0"]))
    c.insert_json5("scouting/multicast/enabled", "false")
    return zenoh.open(c)


class Received:
    """Every sample on ``key_expr``: (key, payload, attachment or None, arrival time)."""

    def __init__(self, s: zenoh.Session, key_expr: str, on_sample=None):
        self.samples: list[tuple[str, bytes, bytes | None, float]] = []
        self._lock = threading.Lock()
        self._on_sample = on_sample

        def on(sample) -> None:
            att = sample.attachment.to_bytes() if sample.attachment is not None else None
            with self._lock:
                self.samples.append((str(sample.key_expr), sample.payload.to_bytes(), att, time.monotonic()))
            if self._on_sample is not None:
                self._on_sample()

        self.subscriber = s.declare_subscriber(key_expr, on)

    def payloads(self, key: str | None = None) -> list[bytes]:
        with self._lock:
            return [p for k, p, _, _ in self.samples if key is None or k == key]

    def results(self, key: str) -> list[dict]:
        return [json.loads(p) for p in self.payloads(key)]


def config(path: Path, zenoh_table: str, results: Path, extra: str = "") -> Path:
    """A run's TOML: results to ``results`` (the reference), the bus as ``zenoh_table`` says."""
    path.write_text(
        f'[output]\nstdout = false\nfile = "{results}"\nhealth_s = 0.2\n{extra}\n[output.zenoh]\nenabled = true\n'
        f"{zenoh_table}\n"
    )
    return path


def start_run(cfg: Path, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edgefusion.cli", "run", "--config", str(cfg), "--seconds", str(seconds)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def wait_until(pred, timeout_s: float, what: str):
    end = time.monotonic() + timeout_s
    while not (got := pred()):
        assert time.monotonic() < end, what
        time.sleep(0.02)
    return got
