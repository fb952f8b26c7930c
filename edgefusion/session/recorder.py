"""``edgefusion record``: a rig's samples into a session folder, written off the capture threads.

The sensors' taps only copy each new sample into a bounded queue; one writer thread turns the
queue into the camera recording, the WAV and the event log. Nothing is held back for the end:
every event line is flushed as written and the WAV header is rewritten after every block, so a
killed recorder leaves what it had written readable. ``session.json`` is written last
(atomically) and marks a session as complete.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import wave
from pathlib import Path

import orjson

from edgefusion.atomic import atomic_write
from edgefusion.errors import EdgefusionError
from edgefusion.modalities import ModalitySpec
from edgefusion.rigs import Truth
from edgefusion.sensors.base import SampleSource
from edgefusion.sensors.frames import CAMERAS, pcm16
from edgefusion.sensors.microphone import MicrophoneSensor
from edgefusion.session.layout import (
    AUDIO_FILE,
    EVENTS_FILE,
    SESSION_FILE,
    SESSION_FORMAT,
    CameraFileWriter,
    camera_file_name,
)
from edgefusion.sinks import Sink


class SessionRecorder:
    """Attach to a rig's sensors before they connect; ``close`` after they disconnect.

    Each stream is recorded as the bundle's modality it feeds takes it (``specs``: frames at
    its size, audio at its rate, windows of its length); the start event says which streams,
    the rate and the window, and each modality's name, stream and shape. Result lines (keyed
    by modality name) are kept keyed by stream, as everything else in a session is."""

    def __init__(
        self,
        out: str | Path,
        sensors: dict[str, SampleSource],
        specs: tuple[ModalitySpec, ...],
        facts: dict,
        truth: Truth | None = None,
        label: str | None = None,
    ):
        """``sensors``: the rig's, by stream. ``truth`` (a rig that knows what the person means)
        or ``label`` (one intent for the whole session, said by whoever records it) become the
        session's label events."""
        self.out = Path(out)
        try:
            used = self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir()))
        except OSError as err:
            raise EdgefusionError(f"cannot record into {self.out}: {err.strerror}; choose a writable folder") from None
        if used:
            raise EdgefusionError(f"{self.out} already exists and is not an empty folder: record into a new folder")
        self.sensors = sensors
        used = [s for s in specs if s.sensor in sensors]
        audio = next((s for s in used if s.sensor == "audio"), None)
        self.sample_rate = audio.sample_rate if audio is not None else None
        self._sizes = {s.sensor: (s.height, s.width) for s in used if s.sensor in CAMERAS}
        # The camera file needs pyrealsense2 (camera_file_name asks the SDK which format it writes):
        # without it, say so here, before the rig starts and anything is written.
        try:
            self._camera_path = self.out / camera_file_name() if self._sizes else None
        except EdgefusionError as err:
            raise EdgefusionError(f"record writes the camera as a RealSense recording: {err}") from None
        self._stream_of = {s.name: s.sensor for s in used}
        self.facts = {
            **facts,
            "streams": [s.sensor for s in used],
            "modalities": [{"name": s.name, "sensor": s.sensor, "shape": list(s.shape)} for s in used],
        }
        if audio is not None:
            self.facts.update(sample_rate=audio.sample_rate, window_s=audio.window_s)
        self.truth, self.label = truth, label
        self.t0 = 0.0
        self.dropped = 0  # samples the writer could not keep up with (counted in session.json)
        self.written = dict.fromkeys(sensors, 0)
        self._queue: queue.Queue = queue.Queue(maxsize=1024)
        self._thread = threading.Thread(target=self._write_loop, name="session-recorder", daemon=True)
        # Counted on the microphone's capture thread, in the order it hands blocks and windows
        # over: samples queued for audio.wav so far (where a window ends in it), and where the
        # last block the queue had no room for was (a window spanning it is not in the file).
        self._audio_queued = 0
        self._audio_gap_at = -1
        self._camera: CameraFileWriter | None = None
        self._wav: wave.Wave_write | None = None
        self._events = None
        self._error: BaseException | None = None

    # -- capture side (sensor threads) ------------------------------------------------------------
    def start(self, t0: float) -> None:
        """Begin (before the sensors connect): ``t0`` is the rig clock's start."""
        self.t0 = t0
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._events = open(self.out / EVENTS_FILE, "wb", buffering=0)  # noqa: SIM115 (closed in close())
        except OSError as err:
            raise EdgefusionError(f"cannot record into {self.out}: {err.strerror}; choose a writable folder") from None
        # wall_t: the wall clock at t0, so an export can put the session's times on the calendar.
        wall_t = time.time() - (time.monotonic() - t0)
        self.event("start", t0, format=SESSION_FORMAT, wall_t=wall_t, **self.facts)
        for m, sensor in self.sensors.items():
            sensor.on_sample = self._tap(m)
            if isinstance(sensor, MicrophoneSensor):
                sensor.on_block = self._on_block
        self._thread.start()

    def _tap(self, modality: str):
        if modality == "audio":
            return self._on_window
        return lambda s: self._put(("frame", modality, s.data.copy(), s.t))

    def _on_block(self, block, t: float) -> None:
        if self._put(("block", block.copy())):
            self._audio_queued += len(block)
        else:
            self._audio_gap_at = self._audio_queued

    def _on_window(self, sample) -> None:
        end = self._audio_queued
        if end - len(sample.data) >= self._audio_gap_at:  # all of it reaches the file
            self._put(("window", sample.t, end))

    def _put(self, item) -> bool:
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            self.dropped += 1  # approximate: taps on several threads count here
            return False

    def event(self, kind: str, t: float, **fields) -> None:
        self._put(("event", {"t": t, "kind": kind, **fields}))

    def sink(self) -> Sink:
        """A result sink: every tick's line goes into the event log, its state changes too."""
        return _TickSink(self)

    # -- writer thread -----------------------------------------------------------------------------
    def _write_loop(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                self._write(item)
        except BaseException as err:  # reported by close(): the capture threads must not see it
            self._error = err
            while self._queue.get() is not None:  # keep draining: close() waits to put its None
                pass

    def _write(self, item) -> None:
        kind = item[0]
        if kind == "event":
            self._events.write(orjson.dumps(item[1]) + b"\n")
        elif kind == "frame":
            _, modality, data, t = item
            if self._camera is None:
                assert self._camera_path is not None  # frames come only from the camera streams recorded
                self._camera = CameraFileWriter(self._camera_path, self._sizes)
            self._camera.write(modality, data, t)
            self.written[modality] += 1
        elif kind == "block":
            if self._wav is None:
                self._wav = wave.open(str(self.out / AUDIO_FILE), "wb")  # noqa: SIM115 (closed in close())
                self._wav.setnchannels(1)
                self._wav.setsampwidth(2)
                assert self.sample_rate is not None  # blocks come only from the microphone recorded
                self._wav.setframerate(self.sample_rate)
            self._wav.writeframes(pcm16(item[1]).tobytes())  # rewrites the header's sizes each time
        elif kind == "window":
            self.written["audio"] += 1
            self._events.write(orjson.dumps({"t": item[1], "kind": "window", "end": item[2]}) + b"\n")

    def close(self) -> dict:
        """Detach, write what is queued, finalise the files, then mark the session complete."""
        for sensor in self.sensors.values():
            sensor.on_sample = None
            if isinstance(sensor, MicrophoneSensor):
                sensor.on_block = None
        self.event("stop", time.monotonic())
        self._queue.put(None)
        self._thread.join()
        try:
            with contextlib.ExitStack() as files:  # every file is closed even if one fails to
                for f in (self._events, self._wav, self._camera):
                    if f is not None:
                        files.callback(f.close)
        except OSError as err:  # a full disk at the last flush: said as the writer's errors are
            self._error = self._error or err
        if self._error is not None:
            raise EdgefusionError(f"recording into {self.out} failed: {self._error}") from self._error
        summary = {"format": SESSION_FORMAT, "complete": True, "samples": self.written, "dropped": self.dropped}
        with atomic_write(self.out / SESSION_FILE) as f:
            f.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        return summary


class _TickSink(Sink):
    """Runs on the runtime's sink-writer thread: tick lines and sensor-state changes as events."""

    def __init__(self, recorder: SessionRecorder):
        self.recorder = recorder
        self._states: dict[str, str] = {}
        self._label: str | None = None

    def write(self, line: str) -> None:
        result = orjson.loads(line)
        t = result["t"]
        rec = self.recorder
        label = rec.truth(t - rec.t0)[0] if rec.truth is not None else rec.label
        if label != self._label:
            self._label = label
            rec.event("label", t, label=label)
        stream = rec._stream_of
        for name, state in result["sensors"].items():
            m = stream[name]
            if self._states.get(m) != state:
                self._states[m] = state
                rec.event("state", t, modality=m, state=state)
        fields = {k: result[k] for k in ("label", "probs", "present")}
        sample_t = {stream[name]: v for name, v in result["sample_t"].items()}
        rec.event("tick", t, sample_t=sample_t, **fields)

    def close(self) -> None:
        pass
