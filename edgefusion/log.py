"""Runtime messages: one line per event on stderr, read by a person or by journald.

Under systemd (``$JOURNAL_STREAM`` is set when stderr is the journal) each line starts with a
``<N>`` syslog priority, which journald strips and files as the line's level (so ``journalctl
-p warning`` finds them); elsewhere a line reads ``edgefusion: …``. Nothing here colours output.
"""

from __future__ import annotations

import os
import sys

ERROR, WARNING, NOTICE, INFO = 3, 4, 5, 6  # syslog priorities


def say(priority: int, message: str) -> None:
    prefix = f"<{priority}>" if os.environ.get("JOURNAL_STREAM") else "edgefusion: "
    print(prefix + message, file=sys.stderr, flush=True)


def error(message: str) -> None:
    say(ERROR, message)


def warning(message: str) -> None:
    say(WARNING, message)


def notice(message: str) -> None:
    say(NOTICE, message)


def info(message: str) -> None:
    say(INFO, message)
