"""Where results go: JSON lines on stdout and in a rotating file, one whole line at a time.

The file sink uses the standard library's RotatingFileHandler (flushes every record, rotates by
size) and adds an fsync at shutdown, so a power cut loses at most the unflushed tail and a crash
never leaves a torn line in the middle of the file. A write that fails (a full disk) cuts the file
back to its last whole line at once, so a disk still full at exit leaves whole lines only.

Each sink is written on its own thread (``SinkWriter``), so one that stalls never holds back
another.
"""

from __future__ import annotations

import collections
import logging
import logging.handlers
import os
import stat
import sys
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TextIO

from edgefusion import log
from edgefusion.errors import EdgefusionError


class Sink(ABC):
    @property
    def name(self) -> str:
        """What the sink writes to, for messages about it."""
        return type(self).__name__

    @abstractmethod
    def write(self, line: str) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Flush whatever is buffered and release the destination."""


class StreamSink(Sink):
    """Lines straight to the stream's file descriptor: a failed write then leaves nothing in a
    Python buffer to be sent again with the retry (a duplicated line). A write cut short has
    its rest sent first next time, so a line is never torn by a retry either; and if the rest
    still cannot go at exit (stdout redirected to a full disk), the part already written is cut
    off again where the stream is a regular file."""

    def __init__(self, stream: TextIO | None = None):
        stream = stream or sys.stdout
        stream.flush()
        self.fd = stream.fileno()
        self._rest = b""
        self._sent = 0  # bytes of the current line already written (while _rest is owed)

    @property
    def name(self) -> str:
        return {1: "stdout", 2: "stderr"}.get(self.fd, f"fd {self.fd}")

    def write(self, line: str) -> None:
        if self._rest:
            self._send(self._rest)
            if self._rest:
                raise BlockingIOError("the stream took only part of a line")
        self._sent = 0
        self._send((line + "\n").encode())

    def _send(self, data: bytes) -> None:
        written = os.write(self.fd, data)  # raises (nothing written) or writes a part at least
        self._sent += written
        self._rest = data[written:]

    def close(self) -> None:
        if not self._rest:
            return
        try:
            self._send(self._rest)
        except OSError:
            self._cut_partial_line()
            raise
        if self._rest:
            self._cut_partial_line()
            raise OSError(f"{self.name} took only part of its last line")

    def _cut_partial_line(self) -> None:
        """Truncate the part of the last line written, where the stream is a regular file."""
        if stat.S_ISREG(os.fstat(self.fd).st_mode):
            os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_CUR) - self._sent)


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
        self._name = str(path)
        # A kill or a power cut may have left part of a line at the end: cut it before the
        # first new line, which would otherwise be glued onto it.
        self._failed = True

    @property
    def name(self) -> str:
        return self._name

    def write(self, line: str) -> None:
        """One line, or OSError with nothing half-done: a write that failed (a full disk) drops the
        stream with whatever it had buffered and cuts the file back to its last whole line (a
        truncation needs no space), so the line retried later is never doubled or torn, and a
        disk that stays full until exit leaves no torn tail."""
        if self._failed:
            _cut_torn_tail(self._path)
            self._failed = False
        try:
            self._handler.emit(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
        except OSError:
            self._failed = True
            self._drop_stream()
            raise

    def _drop_stream(self) -> None:
        """Close the stream, losing what it had buffered, and cut the file's torn tail."""
        stream, self._handler.stream = self._handler.stream, None  # emit() reopens it
        if stream is not None:
            try:
                stream.close()  # flushing fails again: its buffer goes with it
            except OSError:
                pass
        try:
            _cut_torn_tail(self._path)
        except OSError:  # left for the next write, which cuts first
            pass

    def close(self) -> None:
        try:
            stream = self._handler.stream
            if stream is not None:
                stream.flush()
                os.fsync(stream.fileno())
        except OSError:
            self._drop_stream()
            raise
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
    """Serialises results once and hands each line to every sink's own thread.

    The tick only appends its result to a deque (no lock, no wake-up call); a dispatcher thread
    drains it every ``interval_s``, encodes each result once and offers the line to every sink's
    worker. Draining in batches is what keeps this cheap: measured with ``edgefusion bench``, a
    5 ms interval cost 10-15 % more CPU per robot-second than 50 ms (each wake-up contends with
    the tick thread for the GIL), while 50 ms delays a line by at most 50 ms.

    Each sink writes on a thread of its own (``_SinkWorker``), so a stdout pipe nobody reads, a
    SIGSTOPped reader or a full disk holds back only that sink: the others and the loop go on.
    What a sink cannot take waits in its own bounded queue, retried in order; when the queue is
    full its oldest lines are dropped, counted per sink and said on stderr (1st, 2nd, 4th… drop).
    At shutdown a sink stuck in a write is abandoned after a timeout, with a line saying how many
    results it lost.
    """

    def __init__(self, sinks: tuple[Sink, ...], encode, maxlen: int = 4096, interval_s: float = 0.05):
        self.encode = encode  # result -> one line of text
        self.interval_s = interval_s
        self.received = 0  # results the ticks handed over
        self.dispatched = 0  # results encoded and offered to every sink
        self.dropped = 0  # results no sink got: the dispatcher fell behind the ticks
        self._pending: collections.deque = collections.deque(maxlen=maxlen)
        # A sink may size its own queue (``queue``: the Zenoh sink's is configured).
        self.workers = tuple(_SinkWorker(sink, getattr(sink, "queue", maxlen), interval_s) for sink in sinks)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sink-writer", daemon=True)
        self._thread.start()

    @property
    def sinks(self) -> tuple[Sink, ...]:
        return tuple(w.sink for w in self.workers)

    @property
    def errors(self) -> int:
        """Failed writes over all sinks."""
        return sum(w.errors for w in self.workers)

    @property
    def lost(self) -> dict[str, int]:
        """Per sink (by name): results it never got, counting those no sink got."""
        return {w.name: self.dropped + w.lost for w in self.workers}

    @property
    def results_lost(self) -> int:
        """Results at least one sink never got: what the exit status and the summary report."""
        return self.dropped + max((w.lost for w in self.workers), default=0)

    def stats(self) -> list[dict]:
        """Each sink's counters, for the run summary and STATUS."""
        return [w.stats() for w in self.workers]

    def put(self, result) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self.received += 1
        self._pending.append(result)

    def _dispatch(self) -> None:
        offered = False
        while self._pending:
            result = self._pending.popleft()
            try:
                line = self.encode(result)
            except Exception as err:  # a bug in encoding must not kill the writer silently
                log.error(f"a result could not be encoded: {type(err).__name__}: {err}")
            else:
                for worker in self.workers:
                    worker.offer(line)
                offered = True
            self.dispatched += 1
        if offered:
            for worker in self.workers:
                worker.wake()

    def wait_written(self, timeout_s: float | None = None) -> None:
        """Block until every result handed over so far has been written by every sink, or is
        waiting in the queue of a sink that is failing (a full disk)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._thread.is_alive() and (deadline is None or time.monotonic() < deadline):
            if self.dispatched + self.dropped >= self.received and all(w.settled for w in self.workers):
                return
            time.sleep(0.001)

    def _run(self) -> None:
        # A plain sleep, not Event.wait: that allocates a waiter lock on every call.
        while not self._stopping:
            time.sleep(self.interval_s)
            self._dispatch()

    def close(self, timeout_s: float = 5.0) -> None:
        """Write everything pending, then close the sinks (fsync for files), each on its own
        thread. Sinks stuck in a write (a stalled pipe) are given ``timeout_s`` together, then
        abandoned; each sink that lost results says how many, in one line."""
        deadline = time.monotonic() + timeout_s
        self._stopping = True
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self._dispatch()
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        if self.dropped:
            log.error(f"{self.dropped} results were dropped before any sink got them: the writer fell behind")
        for worker in self.workers:
            worker.report_losses()


class _SinkWorker:
    """One sink, its bounded queue of lines and its own thread: whatever the sink does (blocks
    on a stalled pipe, fails on a full disk) holds back no other sink and never the tick."""

    def __init__(self, sink: Sink, maxlen: int, retry_s: float):
        self.sink = sink
        self.name = getattr(sink, "name", type(sink).__name__)  # any object with write/close will do
        self.maxlen = maxlen
        self.retry_s = retry_s  # a failing sink is tried again this often
        self.written = 0
        self.errors = 0  # failed writes
        self.dropped = 0  # lines dropped (oldest first) while the queue was full
        self.abandoned = 0  # lines still queued when shutdown gave up on the sink
        self.failing = False  # the last write failed; the lines wait in the queue
        self._queue: collections.deque = collections.deque()
        self._line: str | None = None  # taken from the queue, not written yet (tried first)
        self._wake = threading.Event()
        self._stopping = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"sink {self.name}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return len(self._queue) + (self._line is not None)

    @property
    def settled(self) -> bool:
        """Nothing left to write, or the sink is failing and its lines wait to be retried."""
        return self.failing or self.pending == 0

    @property
    def lost(self) -> int:
        return self.dropped + self.abandoned

    def stats(self) -> dict:
        return {
            "sink": self.name,
            "written": self.written,
            "dropped": self.dropped,
            "abandoned": self.abandoned,
            "errors": self.errors,
            "failing": self.failing,
        }

    def offer(self, line: str) -> None:
        """From the dispatcher thread: queue ``line``; a full queue drops its oldest line (the
        newest results are the ones a robot acts on)."""
        if len(self._queue) >= self.maxlen:
            self._queue.popleft()
            self.dropped += 1
            if log.doubled(self.dropped - 1, self.dropped):
                log.warning(
                    f"a result sink is not keeping up (stalled or failing): {self.name} dropped "
                    f"{self.dropped} results so far, oldest first"
                )
        self._queue.append(line)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # stuck in write() or close(): its lines are lost
            self.abandoned = self.pending

    def report_losses(self) -> None:
        """At exit, one line for a sink that lost results: how many, and how."""
        if not self.lost:
            return
        if self.abandoned and self._closed:
            head = "a result sink still failed at shutdown"
        elif self.abandoned:
            head = "a result sink is stuck in a write, abandoned at shutdown"
        else:
            head = "a result sink could not keep up"
        how = [f"{self.dropped} dropped while it could not keep up"] if self.dropped else []
        if self.abandoned:
            how.append(f"{self.abandoned} still queued at shutdown")
        log.error(f"{head}: {self.name} lost {self.lost} results ({', '.join(how)})")

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.retry_s if self.failing else None)
            self._wake.clear()
            self._write_queued()
        self._write_queued()  # the last lines handed over before the stop
        if self.failing:
            self.abandoned = self.pending
        self._close()

    def _write_queued(self) -> None:
        while True:
            if self._line is None:
                if not self._queue:
                    return
                self._line = self._queue.popleft()
            try:
                self.sink.write(self._line)
            except (OSError, ValueError) as err:  # disk full, closed pipe: kept, retried later
                self.errors += 1
                if log.doubled(self.errors - 1, self.errors):
                    log.warning(
                        f"a result sink failed ({self.name}: {err}); its lines are kept and retried "
                        f"[{self.errors} errors]"
                    )
                self.failing = True
                return
            except Exception as err:  # a bug in a sink: that line is lost, the sink goes on
                self.errors += 1
                self.dropped += 1
                log.error(f"a result sink could not write a result ({self.name}: {type(err).__name__}: {err})")
            else:
                self.written += 1
            self._line = None
            if self.failing:
                self.failing = False
                lost = f" ({self.dropped} dropped meanwhile)" if self.dropped else ""
                log.info(f"a result sink works again ({self.name}); the lines it kept follow, in order{lost}")

    def _close(self) -> None:
        try:
            self.sink.close()
        except OSError as err:
            log.error(f"closing a result sink failed ({self.name}: {err})")
        self._closed = True
