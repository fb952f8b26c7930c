"""An MCAP log of a run (``[output] mcap``): every result and the run's health, which Foxglove opens.

Topics: ``/edgefusion/result`` (each result line as written to the other sinks) and
``/edgefusion/health`` (``health.snapshot`` every ``[output] health_s``), JSON messages with a
JSON Schema each (``jsonschema`` encoding: Foxglove's plots and raw-message panels read them).

Times: a message's log and publish time are wall-clock nanoseconds, as Foxglove expects. The
results' ``t`` is on ``time.monotonic``'s clock, so the sink takes the offset between the wall
clock and the monotonic clock once, when it opens, and adds it to every ``t`` (and to the
monotonic time a health snapshot arrives): one clock for both topics, which NTP stepping the
wall clock mid-run does not tear apart. A replay's ticks are on its recording's clock: they keep
their spacing, shifted by the two boots' difference in uptime.

No half-written ``.mcap``: the log is written to ``FILE.mcap.<start>-<pid>.part`` beside it and
renamed to ``FILE.mcap`` when the sink closes (a clean stop, SIGTERM included), so a file named
``.mcap`` is always complete and indexed. A crash (SIGKILL, a power cut) leaves the ``.part``:
every chunk written so far (a chunk is closed at least every ``FLUSH_S``), without the summary
at the end; ``mcap recover`` (the mcap CLI) or ``mcap.stream_reader.StreamReader`` reads its
records up to the cut. The next start says in one line that it is
there and leaves it alone. ``[output] backups`` earlier runs are kept, as ``FILE.1.mcap``...

A full disk: the mcap writer writes into memory (``_Spool``) and the sink hands those bytes to
the file itself, so a failed write loses nothing. ``write`` raises OSError, without taking the
line, while bytes are still owed to the file (the sink's writer keeps the line and retries); at
most one chunk waits in memory meanwhile.
"""

from __future__ import annotations

import errno
import glob
import importlib.util
import os
import threading
import time
from pathlib import Path

import orjson

from edgefusion import log
from edgefusion.errors import EdgefusionError
from edgefusion.sinks import Sink

RESULT_TOPIC = "/edgefusion/result"
HEALTH_TOPIC = "/edgefusion/health"
FLUSH_S = 5.0  # a chunk is closed at least this often: what a crash can lose, at most
_NUMBER_OR_NULL = {"type": ["number", "null"]}

RESULT_SCHEMA = {
    "title": "edgefusion.Result",
    "description": "One tick's result, as the JSON lines on stdout and in [output] file",
    "type": "object",
    "properties": {
        "t": {"type": "number", "description": "the tick's time, time.monotonic seconds"},
        "tick": {"type": "integer", "minimum": 0},
        "label": {"type": ["string", "null"], "description": "the intent; null when there is none (see reason)"},
        "confidence": _NUMBER_OR_NULL,
        "probs": {"type": ["object", "null"], "additionalProperties": _NUMBER_OR_NULL},
        "reason": {"type": ["string", "null"], "description": "why there is no label"},
        "present": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "fresh": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "sensors": {"type": "object", "additionalProperties": {"type": "string"}},
        "latency_ms": {"type": "number"},
        "sample_t": {"type": "object", "additionalProperties": _NUMBER_OR_NULL},
    },
    "required": [
        "t",
        "tick",
        "label",
        "confidence",
        "probs",
        "reason",
        "present",
        "fresh",
        "sensors",
        "latency_ms",
        "sample_t",
    ],
}

HEALTH_SCHEMA = {
    "title": "edgefusion.Health",
    "description": "The run's health (what systemd's STATUS line says), every [output] health_s",
    "type": "object",
    "properties": {
        "t": {"type": "number", "description": "wall clock, seconds since the epoch"},
        "ticks": {"type": "integer"},
        "rate_hz": {"type": "number"},
        "late": {"type": "integer"},
        "overruns": {"type": "integer"},
        "invalid": {"type": "integer"},
        "backend": {"type": "object"},
        "sensors": {"type": "object", "additionalProperties": {"type": "object"}},
        "degraded": {"type": "array", "items": {"type": "string"}},
        "results_lost": {"type": "integer"},
        "sinks": {"type": "array", "items": {"type": "object"}},
        "telemetry": {"type": "object"},
    },
    "required": ["t", "ticks", "rate_hz", "backend", "sensors", "degraded", "results_lost"],
}


def compression():
    """zstd, else lz4, else none: whichever compressor is installed (mcap asks for both, but a
    robot's image may have installed it without its dependencies)."""
    from mcap.writer import CompressionType

    for module, kind in (("zstandard", CompressionType.ZSTD), ("lz4", CompressionType.LZ4)):
        if importlib.util.find_spec(module) is not None:
            return kind
    return CompressionType.NONE


def import_mcap():
    try:
        import mcap.writer
    except ImportError:
        raise EdgefusionError(
            "[output] mcap needs the mcap package: pip install 'edgefusion[mcap]' (or empty [output] mcap)"
        ) from None
    return mcap.writer


def register_json(writer, topic: str, schema: dict) -> int:
    """A channel of JSON messages on ``topic``, described by ``schema``: its id."""
    schema_id = writer.register_schema(schema["title"], "jsonschema", orjson.dumps(schema))
    return writer.register_channel(topic, "json", schema_id)


class _Spool:
    """The stream the mcap writer writes to: bytes kept in memory until the sink hands them to
    the file, so a write the disk refuses loses nothing and is simply tried again."""

    def __init__(self):
        self.pending = bytearray()
        self.position = 0  # bytes the writer has written (the file's size once all are handed over)

    def write(self, data: bytes) -> int:
        self.pending += data
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass


class McapSink(Sink):
    """Results (``write``) and health snapshots (``health``) into an MCAP file; see the module
    docstring. ``write`` runs on the sink's writer thread and ``health`` on the health thread:
    one lock keeps the writer whole."""

    def __init__(self, path: str | os.PathLike, backups: int = 3, inputs_hz: float = 0.0, flush_s: float = FLUSH_S):
        writer_module = import_mcap()
        self.path = Path(path)
        self.backups, self.flush_s = backups, flush_s
        if inputs_hz:
            log.warning(f"[output] mcap_inputs_hz = {inputs_hz:g}: the model's inputs are not logged yet (not built)")
        _say_leftovers(self.path)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        self.part = self.path.with_name(f"{self.path.name}.{stamp}-{os.getpid()}.part")
        try:
            if self.path.is_dir():
                raise IsADirectoryError(errno.EISDIR, "a folder is there")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as err:
            raise EdgefusionError(
                f"cannot write the MCAP log to {self.path}: {err.strerror}; choose a writable path ([output] mcap)"
            ) from None
        self._lock = threading.Lock()
        self._spool = _Spool()
        self._offset_ns = time.time_ns() - time.monotonic_ns()
        self._writer = writer_module.Writer(self._spool, compression=compression())
        self._writer.start(profile="", library="edgefusion")
        self._results = register_json(self._writer, RESULT_TOPIC, RESULT_SCHEMA)
        self._health = register_json(self._writer, HEALTH_TOPIC, HEALTH_SCHEMA)
        self._sequence = {self._results: 0, self._health: 0}
        self._flushed = time.monotonic()
        self.skipped_health = 0  # snapshots not logged while the disk refused writes
        try:
            self._drain()
        except OSError as err:
            self._abandon()
            raise EdgefusionError(f"cannot write the MCAP log to {self.path}: {err.strerror}") from None

    @property
    def name(self) -> str:
        return str(self.path)

    def write(self, line: str) -> None:
        with self._lock:
            self._drain()  # OSError: the disk still refuses; the line is not taken, and retried
            t = orjson.loads(line)["t"]
            self._add(self._results, self._offset_ns + round(t * 1e9), line.encode())

    def health(self, snapshot: dict) -> None:
        """One snapshot; while the disk refuses writes it is skipped (the next one says the same,
        newer) and the OSError goes to the health beat, which says it once."""
        with self._lock:
            try:
                self._drain()
            except OSError:
                self.skipped_health += 1
                raise
            self._add(self._health, self._offset_ns + time.monotonic_ns(), orjson.dumps(snapshot))

    def _add(self, channel: int, log_time: int, data: bytes) -> None:
        """Into the chunk being built; the chunk is closed every ``flush_s`` (or when full) and
        what it took is handed to the file. A failure to hand it over is left for the next write
        to raise: this message is in, and must not be retried."""
        log_time = max(0, log_time)
        self._writer.add_message(channel, log_time, data, log_time, sequence=self._sequence[channel])
        self._sequence[channel] += 1
        if time.monotonic() - self._flushed >= self.flush_s:
            self._writer.flush()
            self._flushed = time.monotonic()
        try:
            self._drain()
        except OSError:
            pass

    def _drain(self) -> None:
        """Hand the spooled bytes to the file, keeping whatever the disk did not take."""
        pending = self._spool.pending
        while pending:
            written = os.write(self._fd, pending)
            del pending[:written]

    def close(self) -> None:
        """Finish the file (its summary and indexes), fsync it, keep the earlier runs' logs as
        backups and rename it to its name. OSError (a full disk) leaves the ``.part``."""
        with self._lock:
            if self._fd < 0:
                return
            self._writer.finish()
            try:
                self._drain()
                os.fsync(self._fd)
            except OSError as err:
                raise OSError(err.errno, f"{err.strerror}; {self.part} is left incomplete") from None
            os.close(self._fd)
            self._fd = -1
            _shift_backups(self.path, self.backups)
            os.replace(self.part, self.path)
            _fsync_folder(self.path.parent)

    def _abandon(self) -> None:
        os.close(self._fd)
        self._fd = -1
        self.part.unlink(missing_ok=True)


def backup_name(path: Path, n: int) -> Path:
    """``run.mcap`` → ``run.1.mcap``: a backup Foxglove still opens by its extension."""
    return path.with_name(f"{path.stem}.{n}{path.suffix}")


def _shift_backups(path: Path, backups: int) -> None:
    """As the rotating results file does: the last ``backups`` runs' logs are kept, the oldest
    dropped, so a service restarting in a loop never fills the disk with logs."""
    if backups < 1 or not path.exists():
        return  # none kept: the rename replaces it
    for n in range(backups - 1, 0, -1):
        if backup_name(path, n).exists():
            os.replace(backup_name(path, n), backup_name(path, n + 1))
    os.replace(path, backup_name(path, 1))


def _say_leftovers(path: Path) -> None:
    """One line when an earlier run left its ``.part`` (it did not stop cleanly); kept as it is."""
    try:
        parts = sorted(path.parent.glob(f"{glob.escape(path.name)}.*.part"))  # a [ in a name is no pattern
    except OSError:
        return
    if parts:
        more = f" (and {len(parts) - 1} more)" if len(parts) > 1 else ""
        log.warning(
            f"{parts[-1]}{more}: left by a run that did not stop cleanly; `mcap recover` may read its chunks; "
            "it is kept as it is"
        )


def _fsync_folder(folder: Path) -> None:
    """The rename itself survives a power cut once the folder is synced."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
