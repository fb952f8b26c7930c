"""Runtime messages: one line per event on stderr, read by a person or by journald.

Under systemd (``$JOURNAL_STREAM`` is set when stderr is the journal) each line starts with a
``<N>`` syslog priority, which journald strips and files as the line's level (so ``journalctl
-p warning`` finds them); elsewhere a line reads ``edgefusion: …``. Nothing here colours output.
"""

from __future__ import annotations

import os
import sys

ERROR, WARNING, NOTICE, INFO = 3, 4, 5, 6  # syslog priorities


_journal: bool | None = None  # decided once, on the real stderr


def to_journal() -> bool:
    """systemd's rule: stderr is the journal if its device and inode are ``$JOURNAL_STREAM``'s
    (a terminal started from a desktop session inherits the variable but not the stream).

    Decided once, and before fd 2 is ever redirected: while a C library's output is sorted
    (``library_output``, a microphone opening) fd 2 is a pipe that passes our lines on to the
    journal, and a line said then must still carry its priority."""
    global _journal
    if _journal is None:
        _journal = _stderr_is(os.environ.get("JOURNAL_STREAM"))
    return _journal


def _stderr_is(stream: str | None) -> bool:
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def say(priority: int, message: str) -> None:
    prefix = f"<{priority}>" if to_journal() else "edgefusion: "
    sys.stderr.write(prefix + message + "\n")  # one write: lines from several threads never merge
    sys.stderr.flush()


def error(message: str) -> None:
    say(ERROR, message)


def warning(message: str) -> None:
    say(WARNING, message)


def notice(message: str) -> None:
    say(NOTICE, message)


def info(message: str) -> None:
    say(INFO, message)


def doubled(before: int, after: int) -> bool:
    """Whether a count that went from ``before`` to ``after`` reached its next power of two: an
    event is said the 1st, 2nd, 4th, 8th... time, so one that repeats for hours says how often
    without flooding the journal."""
    return after.bit_length() > before.bit_length()
