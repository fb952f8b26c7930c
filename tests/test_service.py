"""sd_notify and the watchdog gate, on real datagram sockets (systemd itself is not PID 1 here)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from edgefusion.backends import make_backend
from edgefusion.bundle import default_bundle_path, load_bundle
from edgefusion.config import Config
from edgefusion.loop import Runtime
from edgefusion.rigs import make_rig
from edgefusion.service.heartbeat import Heartbeat, LastLine
from edgefusion.service.notify import Notifier


@pytest.fixture(params=["path", "abstract"])
def listener(request, tmp_path):
    """A datagram socket as systemd's notify socket: (the NOTIFY_SOCKET value, the socket)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    else:
        address = f"@edgefusion-test-{os.getpid()}-{id(sock)}"
        sock.bind("\0" + address[1:])
    sock.settimeout(0.2)
    yield address, sock
    sock.close()


def _messages(sock, until: float, stop_at: str | None = None) -> list[str]:
    got = []
    while time.monotonic() < until:
        try:
            data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(64))
        except TimeoutError:
            continue
        for level, kind, fds in ancillary:  # systemd-notify's BARRIER=1 carries a descriptor
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                for fd in memoryview(fds).cast("i"):
                    os.close(fd)
        got.append(data.decode())
        if stop_at and stop_at in got[-1]:
            break
    return got


def test_notifier_sends_what_systemd_reads(listener):
    address, sock = listener
    n = Notifier(address)
    n.ready("running")
    n.watchdog()
    n.extend_timeout(90)
    n.stopping()
    got = _messages(sock, time.monotonic() + 2, stop_at="STOPPING=1")
    assert got == [
        "READY=1\nSTATUS=running",
        "WATCHDOG=1",
        "EXTEND_TIMEOUT_USEC=90000000",
        "STOPPING=1\nSTATUS=stopping",
    ]
    n.close()


def test_without_notify_socket_it_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    n.ready("x")  # nothing to send to, nothing raised


def test_a_dead_notify_socket_is_an_error_not_silence(tmp_path):
    with pytest.raises(OSError):
        Notifier(str(tmp_path / "nobody-listens.sock")).ready("x")


@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="needs systemd-notify")
def test_systemd_notify_speaks_the_same_protocol(listener):
    """systemd's own client, into the same socket: the datagrams our Notifier sends are the
    ones systemd's tools send."""
    address, sock = listener
    env = {**os.environ, "NOTIFY_SOCKET": address}
    subprocess.run(["systemd-notify", "--no-block", "--ready", "--status=running"], env=env, check=True, timeout=10)
    got = _messages(sock, time.monotonic() + 3, stop_at="READY=1")
    assert any(set(m.split("\n")) >= {"READY=1", "STATUS=running"} for m in got), got


def test_the_watchdog_is_fed_only_while_the_loop_ticks(listener):
    """A stuck loop (here: a result consumer that hangs, as a blocked tick would) stops the
    pings, so systemd restarts it; once it moves again, so do the pings."""
    address, sock = listener
    bundle = load_bundle(default_bundle_path())
    cfg = Config()
    cfg.source.faults = ""
    rig = make_rig(cfg, bundle.modalities, bundle.labels)
    gate = threading.Event()
    gate.set()
    last = LastLine()
    backend = make_backend("onnxruntime", bundle)
    runtime = Runtime(backend, rig.sensors, cfg.max_age_s(), sinks=(last,), on_result=lambda r: gate.wait())
    beat = Heartbeat(Notifier(address), runtime, interval_s=0.1, last=last, status_every_s=0.5)
    stop = threading.Event()
    runtime.backend.activate()
    rig.start()
    runtime.start()
    loop = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    loop.start()
    beat.start()
    try:
        running = _messages(sock, time.monotonic() + 1.5)
        gate.clear()  # the loop hangs in its next tick
        _messages(sock, time.monotonic() + 0.3)  # what was sent before it hung
        stuck = _messages(sock, time.monotonic() + 1.5)
        gate.set()
        moving = _messages(sock, time.monotonic() + 1.5)
    finally:
        gate.set()
        stop.set()
        beat.stop()
        loop.join(5)
        runtime.stop()
        rig.close()
    assert running.count("WATCHDOG=1") >= 8
    assert "WATCHDOG=1" not in stuck, stuck
    assert any(m.startswith("STATUS=") for m in stuck), "the status goes on while stuck"
    assert any("rgb OK" in m for m in running + stuck), "the status says each sensor's state"
    assert moving.count("WATCHDOG=1") >= 8


def test_a_service_process_says_ready_pings_and_says_stopping(listener, tmp_path):
    address, sock = listener
    cfg = tmp_path / "robot.toml"
    cfg.write_text("[output]\nstdout = false\n")
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen([sys.executable, "-m", "edgefusion.cli", "run", "--config", str(cfg)], env=env)
    try:
        first = _messages(sock, time.monotonic() + 30, stop_at="READY=1")
        pings = _messages(sock, time.monotonic() + 1.5)
        proc.send_signal(signal.SIGTERM)
        last = _messages(sock, time.monotonic() + 10, stop_at="STOPPING=1")
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    assert first[0].startswith("EXTEND_TIMEOUT_USEC="), "told systemd to wait while the backend activates"
    assert first[-1].startswith("READY=1\nSTATUS=running"), first
    assert pings.count("WATCHDOG=1") >= 5, pings
    assert last[-1].startswith("STOPPING=1"), last


def test_under_journald_each_line_carries_its_syslog_priority(tmp_path):
    """journald files ``<N>``-prefixed stderr lines at priority N (``journalctl -p warning``)."""
    cfg = tmp_path / "robot.toml"
    cfg.write_text('[runtime]\ndeadline_ms = 0.001\n[output]\nstdout = false\nfile = "/dev/full"\n')
    err = tmp_path / "journal"  # stands for the journal's stream: JOURNAL_STREAM names it
    with open(err, "w") as stream:
        st = os.fstat(stream.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        r = subprocess.run(
            [sys.executable, "-m", "edgefusion.cli", "run", "--config", str(cfg), "--seconds", "1.5"],
            env=env,
            stderr=stream,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )
    text = err.read_text()
    assert r.returncode == 0, text
    lines = text.splitlines()
    assert lines and all(re.match(r"^<[0-7]>\S", line) for line in lines), lines
    assert any(line.startswith("<4>a tick took longer") for line in lines)
    assert any(line.startswith("<3>a result sink still failed") for line in lines)
    assert "\x1b[" not in text, "no colour in the journal"
    # The same variable with another stream (a terminal that inherited it): plain lines.
    r = subprocess.run(
        [sys.executable, "-m", "edgefusion.cli", "run", "--config", str(cfg), "--seconds", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.stderr.startswith("edgefusion: "), r.stderr
