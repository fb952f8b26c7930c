"""The private sound server's keeper: whatever ends its owner, nothing of the server outlives it.

Run as a script (``python -I -S pulse_keeper.py RUNTIME_DIR``, so that it imports nothing of the
package) by ``PulseServer``, in a process group of its own: it leads the process group that the server,
its recorder and its players join, and reads its stdin, a pipe whose only writer is its owner.
The pipe ends when the owner closes it or dies in any way (SIGKILL included: the kernel closes the
owner's descriptors); the keeper then SIGKILLs whatever is left of its group and removes the
runtime dir. A keeper that is itself killed leaves the dir to the next start's sweep
(``PulseServer.sweep_stale``), which finds the processes by the same ``group_members``.

A watcher, not PR_SET_PDEATHSIG: the parent-death signal fires when the *thread* that started a
child ends (the speaker's and the fault script's threads start players and servers), and it cannot
remove the runtime dir. The processes stay the owner's children, so the owner reaps them while it
lives; after a SIGKILL of the owner the kernel hands them to the nearest subreaper (systemd).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time

OWNER_GONE_GRACE_S = 1.0  # how long SIGKILLed processes may take to leave the group


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
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    found.append(int(entry))
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
    return found


def kill_group(pgid: int, runtime_dir: str) -> None:
    """SIGKILL every process of the group started for ``runtime_dir`` until none is left (a
    stopped, i.e. frozen, server dies of SIGKILL as well)."""
    end = time.monotonic() + OWNER_GONE_GRACE_S
    while (pids := group_members(pgid, runtime_dir)) and time.monotonic() < end:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
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
