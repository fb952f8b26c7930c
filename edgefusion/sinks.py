"""Where results go: JSON lines on stdout and in a rotating file, one whole line at a time.

The file sink uses the standard library's RotatingFileHandler (flushes every record, rotates by
size) and adds an fsync at shutdown, so a power cut loses at most the unflushed tail and a crash
never leaves a torn line in the middle of the file.
"""

from __future__ import annotations

import collections
import logging
import logging.handlers
import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TextIO

from edgefusion import log
from edgefusion.errors import EdgefusionError


class Sink(ABC):
    @abstractmethod
    def write(self, line: str) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Flush whatever is buffered and release the destination."""


class StreamSink(Sink):
    """Lines straight to the stream's file descriptor: a failed write then leaves nothing in a
    Python buffer to be sent again with the retry (a duplicated line). A write cut short has
    its rest sent first next time, so a line is never torn by a retry either."""

    def __init__(self, stream: TextIO | None = None):
        stream = stream or sys.stdout
        stream.flush()
        self.fd = stream.fileno()
        self._rest = b""

    def write(self, line: str) -> None:
        if self._rest:
            self._rest = self._rest[os.write(self.fd, self._rest) :]
            if self._rest:
                raise BlockingIOError("the stream took only part of a line")
        data = (line + "\n").encode()
        written = os.write(self.fd, data)  # raises (nothing written) or writes a part at least
        self._rest = data[written:]

    def close(self) -> None:
        if self._rest:
            os.write(self.fd, self._rest)


class _RaisingRotatingHandler(logging.handlers.RotatingFileHandler):
    """The standard handler prints a traceback per failed record and carries on; a sink must
    report a full disk to its writer instead, once."""

    def handleError(self, record: logging.LogRecord) -> None:
        raise  # the error emit() is handling


class RotatingFileSink(Sink):
    def __init__(self, path: str | os.PathLike, max_bytes: int = 10_000_000, backups: int = 3):
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handler = _RaisingRotatingHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        except OSError as err:
            raise EdgefusionError(f"cannot write results to {path}: {err.strerror}; choose a writable path") from None
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._path = path
        # A kill or a power cut may have left part of a line at the end: cut it before the
        # first new line, which would otherwise be glued onto it.
        self._failed = True

    def write(self, line: str) -> None:
        """One line, or OSError with nothing half-done: a write that failed (a full disk) drops the
        stream with whatever it had buffered, and the next write first cuts the file back to its
        last whole line, so the line retried later is never doubled or torn."""
        if self._failed:
            _cut_torn_tail(self._path)
            self._failed = False
        try:
            self._handler.emit(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
        except OSError:
            self._failed = True
            stream, self._handler.stream = self._handler.stream, None  # emit() reopens it
            if stream is not None:
                try:
                    stream.close()  # flushing fails again: its buffer goes with it
                except OSError:
                    pass
            raise

    def close(self) -> None:
        try:
            stream = self._handler.stream
            if stream is not None:
                stream.flush()
                os.fsync(stream.fileno())
        finally:
            self._handler.close()


def _cut_torn_tail(path: Path) -> None:
    """Truncate ``path`` after its last newline (a failed write may have left part of a line)."""
    if not path.exists():  # gone (rotated away, deleted): the handler starts a new one
        return
    with open(path, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            step = min(4096, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                pos = pos - step + nl + 1
                break
            pos -= step
        if pos < end:
            f.truncate(pos)


class SinkWriter:
    """Serialises results and writes them to every sink on its own thread.

    The tick only appends its result to a deque (no lock, no wake-up call); the writer
    drains it every ``interval_s``, so JSON encoding and I/O (a slow SD card, a stalled pipe)
    never lengthen a tick. Draining in batches is what keeps this cheap: measured with
    ``edgefusion bench``, a 5 ms interval cost 10-15 % more CPU per robot-second than 50 ms
    (each wake-up contends with the tick thread for the GIL), while 50 ms delays a line by at
    most 50 ms. The deque is bounded: if the sinks fall that far behind, the oldest
    results are dropped and counted rather than letting memory grow.

    A sink that fails (disk full, a closed pipe) is reported, and the lines it could not take
    wait in its own bounded backlog, retried in order at every drain: when it works again they
    arrive late but in order, and only what overflowed the backlog is lost (counted). The other
    sinks and the loop go on meanwhile.
    """

    def __init__(self, sinks: tuple[Sink, ...], encode, maxlen: int = 4096, interval_s: float = 0.05):
        self.sinks = sinks
        self.encode = encode  # result -> one line of text
        self.dropped = 0
        self.errors = 0
        self.written = 0  # results handed to every sink (or given up on after an error)
        self.received = 0
        self.interval_s = interval_s
        self._pending: collections.deque = collections.deque(maxlen=maxlen)
        self._backlog = [collections.deque(maxlen=maxlen) for _ in sinks]  # lines a failed sink owes
        self.lost = [0] * len(sinks)  # lines a sink never got: its backlog overflowed
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sink-writer", daemon=True)
        self._thread.start()

    def put(self, result) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self.received += 1
        self._pending.append(result)

    def _drain(self) -> None:
        for i, backlog in enumerate(self._backlog):
            if backlog:
                self._retry(i)
        while self._pending:
            result = self._pending.popleft()
            try:
                line = self.encode(result)
            except Exception as err:  # a bug in encoding must not kill the writer silently
                self._report(f"a result could not be written: {type(err).__name__}: {err}")
            else:
                for i, sink in enumerate(self.sinks):
                    if self._backlog[i]:  # behind already: keep the order
                        self._owe(i, line)
                        continue
                    try:
                        sink.write(line)
                    except (OSError, ValueError) as err:  # disk full, closed pipe: report, retry later
                        self._report(f"a result sink failed ({err}); its lines are kept and retried")
                        self._owe(i, line)
            self.written += 1

    def _owe(self, i: int, line: str) -> None:
        backlog = self._backlog[i]
        if len(backlog) == backlog.maxlen:
            self.lost[i] += 1
        backlog.append(line)

    def _retry(self, i: int) -> None:
        backlog, sink = self._backlog[i], self.sinks[i]
        while backlog:
            try:
                sink.write(backlog[0])
            except (OSError, ValueError):
                return
            backlog.popleft()
        lost = f", {self.lost[i]} lost" if self.lost[i] else ""
        log.info(f"a result sink works again; its backlog is written{lost}")

    def _report(self, message: str) -> None:
        self.errors += 1
        if self.errors == 1 or (self.errors & (self.errors - 1)) == 0:  # 1, 2, 4, 8...: said, not spammed
            log.warning(f"{message} [{self.errors} errors]")

    def wait_written(self) -> None:
        """Block until every result handed over so far has been written (or given up on)."""
        while self.written + self.dropped < self.received and self._thread.is_alive():
            time.sleep(0.001)

    def _run(self) -> None:
        # A plain sleep, not Event.wait: that allocates a waiter lock on every call.
        while not self._stopping:
            time.sleep(self.interval_s)
            self._drain()

    def close(self, timeout_s: float = 5.0) -> None:
        """Write everything pending, then close the sinks (fsync for files). A sink stuck in a
        write (a stalled pipe) is given ``timeout_s``, then abandoned with a one-line report."""
        self._stopping = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error(f"a result sink is stuck; {len(self._pending)} results not written")
            return
        self._drain()
        owed = sum(map(len, self._backlog))
        if owed:
            log.error(f"a result sink still failed at shutdown: {owed} results not written")
        if self.dropped:
            log.warning(f"{self.dropped} results were dropped: the sinks fell behind")
        for sink in self.sinks:
            try:
                sink.close()
            except OSError as err:
                log.error(f"closing a result sink failed: {err}")
