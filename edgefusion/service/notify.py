"""sd_notify in the standard library: one datagram of ``KEY=VALUE`` lines to ``$NOTIFY_SOCKET``.

A no-op when the variable is unset (not under systemd, or Type= is not notify). A path socket
or an abstract one (a leading ``@``). Errors are raised, not swallowed: a service that believes
it said READY=1 and did not is killed at its start timeout with nothing in the journal to say
why. (The ``sdnotify`` package swallows every error; ``systemd-python`` needs libsystemd-dev to
build: a dozen lines of socket code are the better dependency.)
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None):
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self.address = "\0" + address[1:] if address and address.startswith("@") else address or None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> None:
        if self.address is None:
            return
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.sendto("\n".join(lines).encode(), self.address)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        """Before a long start-up step (an engine build): systemd waits this much longer."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def stopping(self, status: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s() -> float | None:
    """Half the watchdog timeout systemd set for this process (pinging at half is its advice),
    or None when there is no watchdog for us."""
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6
