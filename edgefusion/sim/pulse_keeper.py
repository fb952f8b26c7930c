"""The private sound server's keeper: whatever ends its owner, nothing of the server outlives it.

``PulseServer`` runs it as a script (``python -I -S pulse_keeper.py RUNTIME_DIR``: it imports
nothing of the package) leading a process group of its own, which the server, its recorder, its
players and pactl join. Its stdin is a pipe whose only writer is the owner; the pipe ends when the
owner closes it or dies in any way (SIGKILL included: the kernel closes the owner's descriptors).
The keeper then SIGKILLs whatever is left of its group (this is the crash path: the orderly stop
has already ended everything) and removes the runtime dir. A keeper killed as well leaves both to
the next start's sweep (``pulse.sweep_stale``), which finds the processes by ``group_members``.

A watcher rather than PR_SET_PDEATHSIG: the parent-death signal fires when the *thread* that
started a child ends (the speaker's and the microphone-fault threads start players and servers),
and it cannot remove the runtime dir. The processes stay the owner's children, so the owner reaps
them while it lives; after a SIGKILL of the owner the kernel hands them to the nearest subreaper
(systemd on a robot; a container whose init reaps nothing keeps them as zombies).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time

OWNER_GONE_GRACE_S = 1.0  # how long SIGKILLed processes may take to leave the group
EXEC_SETTLE_S = 0.5  # how long a process in its exec may read an empty environment


def group_members(pgid: int, runtime_dir: str) -> list[int]:
    """Live processes of process group ``pgid`` that were started for ``runtime_dir`` (their
    environment names it): the check keeps a reused group id from ever meaning someone else's."""
    marker = f"XDG_RUNTIME_DIR={runtime_dir}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                state, _ppid, pgrp = f.read().rsplit(b")", 1)[1].split()[:3]
            if int(pgrp) != pgid or state == b"Z":
                continue
            if marker in read_environ(entry).split(b"\0"):
                found.append(int(entry))
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
    return found


def read_environ(pid: str) -> bytes:
    """A process's environment. One just started reads empty for a moment (the kernel lays out the
    new environment after the exec has begun, and after its parent's Popen has returned: measured
    here on one start in six): that one is read again, for up to EXEC_SETTLE_S."""
    end = time.monotonic() + EXEC_SETTLE_S
    while True:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
        if env or time.monotonic() >= end:
            return env
        time.sleep(0.001)


def kill_group(pgid: int, runtime_dir: str) -> None:
    """SIGKILL every process of the group started for ``runtime_dir`` until none is left (a
    stopped, i.e. frozen, server dies of SIGKILL as well)."""
    end = time.monotonic() + OWNER_GONE_GRACE_S
    while pids := group_members(pgid, runtime_dir):
        for pid in pids:  # each found is killed, however long the scan of /proc took on a busy machine
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() >= end:
            break
        time.sleep(0.02)


def _leave(*_) -> None:
    raise SystemExit


def main(runtime_dir: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the owner to handle
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _leave)  # a service manager stopping everything: clean up now
    try:
        while os.read(0, 4096):
            pass
    except SystemExit:
        pass
    finally:
        kill_group(os.getpid(), runtime_dir)
        shutil.rmtree(runtime_dir, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1])
