"""The service checks' two sides: a real ``edgefusion run`` speaking to a stand-in for systemd's
notify socket and journal stream (any machine, CI included), and the installed unit under systemd
itself (the robot, where PID 1 is systemd).

The stand-in hears what systemd would: each datagram's sender comes from its kernel credentials
(``SO_PASSCRED``), because systemd acts only on the main process's (``NotifyAccess=main``): a
child's READY=1 must not count. On the robot, everything goes through ``systemctl`` and
``journalctl``, as a person at the robot would check it.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

UNIT = "edgefusion.service"
PID1 = "systemd as PID 1"  # a Unit's ``where`` on the robot
READY_BUDGET_S = 30.0  # start to READY=1 with the backend's engines cached (a TensorRT build is not in it)


def poll_until(pred: Callable[[], object], timeout: float, every: float = 0.02) -> bool:
    """True as soon as ``pred()`` is; False if it still is not after ``timeout`` seconds (a deadline, never a sleep)."""
    end = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(every)


@dataclass(frozen=True)
class Notice:
    t: float  # time.monotonic() when it arrived
    pid: int | None  # the sender, from its credentials
    fields: dict[str, str]  # its KEY=VALUE lines
    comm: str = ""  # the sender's process name, read as it arrived (for a report on a stray sender)

    def says(self, key: str, value: str | None = None) -> bool:
        return key in self.fields and (value is None or self.fields[key] == value)


def parse_notice(data: bytes) -> dict[str, str]:
    """sd_notify's datagram: KEY=VALUE lines (one without ``=`` is ignored, as systemd ignores it)."""
    fields = {}
    for line in data.decode(errors="replace").split("\n"):
        key, eq, value = line.partition("=")
        if eq:
            fields[key] = value
    return fields


class NotifyListener:
    """A datagram socket at ``path`` that records every notice, with its sender, on its own thread."""

    def __init__(self, path: Path):
        self.address = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.bind(self.address)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.settimeout(0.1)
        self._notices: list[Notice] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify-listener", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        space = socket.CMSG_SPACE(struct.calcsize("3i")) + socket.CMSG_SPACE(64 * 4)
        while not self._closed.is_set():
            try:
                data, ancillary, _, _ = self._sock.recvmsg(65536, space)
            except TimeoutError:
                continue
            except OSError:  # closed under us
                return
            pid = None
            for level, kind, payload in ancillary:
                if level != socket.SOL_SOCKET:
                    continue
                if kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:12])[0]
                elif kind == socket.SCM_RIGHTS:  # a BARRIER=1 or FDSTORE=1 descriptor: not kept
                    for fd in memoryview(payload[: len(payload) - len(payload) % 4]).cast("i"):
                        os.close(fd)
            notice = Notice(time.monotonic(), pid, parse_notice(data), _comm(pid))
            with self._lock:
                self._notices.append(notice)

    def notices(self, pid: int | None = None, since: float = 0.0) -> list[Notice]:
        """What arrived at or after ``since`` (monotonic), from ``pid`` only where given."""
        with self._lock:
            return [n for n in self._notices if n.t >= since and (pid is None or n.pid == pid)]

    def wait(self, pred: Callable[[Notice], bool], timeout: float, pid: int | None = None, since: float = 0.0):
        """The first notice matching ``pred`` (arrived or arriving before ``timeout`` s from now), or None."""

        def first() -> Notice | None:
            return next((n for n in self.notices(pid, since) if pred(n)), None)

        poll_until(lambda: first() is not None, timeout)
        return first()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self._sock.close()


def _comm(pid: int | None) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() if pid else ""
    except OSError:  # gone already
        return ""


def service_config(path: Path, bundle: Path, results: Path, source: str) -> Path:
    """A service's config: the bundle, ``source`` (``virtual`` or ``simulated``), results to a file
    only (a service's stdout is the journal: results do not belong there)."""
    path.write_text(
        f"[runtime]\nbundle = {json.dumps(str(bundle))}\n"
        f"[source]\nkind = {json.dumps(source)}\n"
        f"[output]\nstdout = false\nfile = {json.dumps(str(results))}\n"
    )
    return path


class ServiceProcess:
    """``edgefusion run --config`` started as systemd starts a ``Type=notify`` service with a
    watchdog: ``NOTIFY_SOCKET`` (a listener in ``workdir``), ``WATCHDOG_USEC``, and stderr a file
    named by ``JOURNAL_STREAM``, so the process writes what journald would receive."""

    def __init__(self, config: Path, workdir: Path, watchdog_s: float):
        self.listener = NotifyListener(workdir / "notify.sock")
        self.journal = workdir / "journal"
        with open(self.journal, "w") as stream:
            st = os.fstat(stream.fileno())
            env = {
                **os.environ,
                "NOTIFY_SOCKET": self.listener.address,
                "WATCHDOG_USEC": str(int(watchdog_s * 1e6)),
                "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
            }
            env.pop("WATCHDOG_PID", None)  # (unset: the watchdog is the spawned process's own)
            self.t_spawn = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgefusion.cli", "run", "--config", str(config)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stream,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def mine(self, since: float = 0.0) -> list[Notice]:
        """The main process's notices: the ones systemd acts on."""
        return self.listener.notices(self.pid, since)

    def others(self) -> list[Notice]:
        """Notices from other processes (children): systemd ignores them under NotifyAccess=main."""
        return [n for n in self.listener.notices() if n.pid != self.pid]

    def wait_notice(self, pred: Callable[[Notice], bool], timeout: float, since: float = 0.0) -> Notice | None:
        return self.listener.wait(pred, timeout, self.pid, since)

    def wait_ready(self, timeout: float) -> Notice | None:
        """The main process's READY=1, or None by ``timeout`` or as soon as the process has exited."""

        def ready() -> Notice | None:
            return self.wait_notice(lambda n: n.says("READY", "1"), timeout=0)

        poll_until(lambda: ready() is not None or self.proc.poll() is not None, timeout, every=0.05)
        return ready()

    def journal_lines(self) -> list[str]:
        return self.journal.read_text(errors="replace").splitlines()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as ``systemctl stop``; SIGKILL after ``timeout`` (TimeoutStopSec's part)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        self.listener.close()


def systemd_booted() -> bool:
    """sd_booted(): systemd is PID 1 exactly when it made this directory."""
    return os.path.isdir("/run/systemd/system")


def pid1() -> str:
    return _comm(1) or "unknown"


def parse_show(text: str) -> dict[str, str]:
    """``systemctl show -p A -p B``'s ``A=value`` lines."""
    return dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)


def parse_timespan_s(text: str) -> float:
    """A ``systemctl show`` time span (``10s``, ``1min 30s``, ``500ms``, ``infinity``) in seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
    if text.strip() == "infinity":
        return float("inf")
    total = 0.0
    for part in text.split():
        number = part.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = part[len(number) :] or "s"
        if unit not in units:
            raise ValueError(f"not a systemd time span: {text!r}")
        total += float(number) * units[unit]
    return total


def parse_journal(text: str) -> list[dict]:
    """``journalctl -o json``'s one object per line; a MESSAGE that is not UTF-8 comes as a list of
    bytes and is decoded here, so every MESSAGE is a str."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        if isinstance(entry.get("MESSAGE"), list):
            entry["MESSAGE"] = bytes(entry["MESSAGE"]).decode(errors="replace")
        entries.append(entry)
    return entries


Runner = Callable[[Sequence[str]], str]


def _run(argv: Sequence[str]) -> str:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


class Unit:
    """The unit, through systemctl and journalctl: ``run`` runs one command and returns its stdout
    (it raises where the command fails); ``where`` says which systemd answers, for the report."""

    def __init__(self, name: str = UNIT, run: Runner = _run, where: str = PID1):
        self.name, self._run, self.where = name, run, where

    def show(self, *props: str) -> dict[str, str]:
        return parse_show(self._run(["systemctl", "show", self.name, *(f"--property={p}" for p in props)]))

    def main_pid(self) -> int:
        return int(self.show("MainPID")["MainPID"])

    def running(self) -> bool:
        s = self.show("ActiveState", "SubState")
        return s["ActiveState"] == "active" and s["SubState"] == "running"

    def systemctl(self, *args: str) -> str:
        return self._run(["systemctl", *args, self.name])

    def back_after(self, old_pid: int, timeout: float) -> float | None:
        """Seconds until the unit runs again under a new main PID (a restart), or None by ``timeout``."""
        t0 = time.monotonic()
        back = poll_until(lambda: self.main_pid() not in (0, old_pid) and self.running(), timeout, every=0.1)
        return time.monotonic() - t0 if back else None

    def journal(self, *matches: str, since_epoch_s: float | None = None) -> list[dict]:
        """The unit's journal entries (its own lines and systemd's about it), narrowed by journalctl
        ``FIELD=value`` matches (``_PID=...``) and a start time."""
        argv = ["journalctl", "--output=json", "--no-pager", f"_SYSTEMD_UNIT={self.name}", *matches]
        if since_epoch_s is None:
            return parse_journal(self._run(argv))
        # --since takes whole seconds; the entries' own microsecond stamps cut to the instant.
        entries = parse_journal(self._run([*argv, f"--since=@{int(since_epoch_s)}"]))
        start_us = int(since_epoch_s * 1e6)
        return [e for e in entries if int(e.get("__REALTIME_TIMESTAMP", start_us)) >= start_us]

    def systemd_says(self, since_epoch_s: float) -> list[str]:
        """What systemd itself logged about the unit since then ("Failed with result 'watchdog'", ...)."""
        out = self._run(
            [
                "journalctl",
                "--output=json",
                "--no-pager",
                "_PID=1",
                f"UNIT={self.name}",
                f"--since=@{int(since_epoch_s)}",
            ]
        )
        return [e["MESSAGE"] for e in parse_journal(out)]

    def exec_start_argv(self) -> list[str]:
        """The unit's ExecStart command line, as systemd parsed it (``{ path=... ; argv[]=... ; ...}``)."""
        text = self.show("ExecStart")["ExecStart"]
        argv = text.split("argv[]=", 1)[1].split(" ;", 1)[0]
        return argv.split()
