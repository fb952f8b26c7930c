"""``edgefusion record``: a rig's samples into a session folder, written off the capture threads.

The sensors' taps only copy each new sample into a bounded queue; one writer thread turns the
queue into the camera recording, the WAV and the event log. Nothing is held back for the end:
every event line is flushed as written and the WAV header is rewritten after every block, so a
killed recorder leaves what it had written readable. ``session.json`` is written last
(atomically) and marks a session as complete.
"""

from __future__ import annotations

import queue
import threading
import time
import wave
from pathlib import Path

import orjson

from edgefusion.atomic import atomic_write
from edgefusion.errors import EdgefusionError
from edgefusion.modalities import MODALITIES
from edgefusion.rigs import Truth
from edgefusion.sensors.base import SampleSource
from edgefusion.sensors.frames import pcm16
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
    """Attach to a rig's sensors before they connect; ``close`` after they disconnect."""

    def __init__(
        self,
        out: str | Path,
        sensors: dict[str, SampleSource],
        sample_rate: int,
        facts: dict,
        truth: Truth | None = None,
        label: str | None = None,
    ):
        """``truth`` (a rig that knows what the person means) or ``label`` (one intent for the
        whole session, said by whoever records it) become the session's label events."""
        self.out = Path(out)
        if self.out.exists() and any(self.out.iterdir()):
            raise EdgefusionError(f"{self.out} already exists and is not empty: record into a new folder")
        self.sensors = sensors
        self.sample_rate = sample_rate
        self.facts = facts
        self.truth, self.label = truth, label
        self.t0 = 0.0
        self.dropped = 0  # samples the writer could not keep up with (counted in session.json)
        self.written = dict.fromkeys(MODALITIES, 0)
        self._queue: queue.Queue = queue.Queue(maxsize=1024)
        self._thread = threading.Thread(target=self._write_loop, name="session-recorder", daemon=True)
        self._audio_end = 0  # samples in audio.wav so far: where the next window ends
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
        self.event("start", t0, format=SESSION_FORMAT, sample_rate=self.sample_rate, **self.facts)
        for m, sensor in self.sensors.items():
            sensor.on_sample = self._tap(m)
            if isinstance(sensor, MicrophoneSensor):
                sensor.on_block = lambda block, t: self._put(("block", block.copy()))
        self._thread.start()

    def _tap(self, modality: str):
        if modality == "audio":
            return lambda s: self._put(("window", s.t))
        return lambda s: self._put(("frame", modality, s.data.copy(), s.t))

    def _put(self, item) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

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

    def _write(self, item) -> None:
        kind = item[0]
        if kind == "event":
            self._events.write(orjson.dumps(item[1]) + b"\n")
        elif kind == "frame":
            _, modality, data, t = item
            if self._camera is None:
                self._camera = CameraFileWriter(self.out / camera_file_name(), data.shape[-2:])
            self._camera.write(modality, data, t)
            self.written[modality] += 1
        elif kind == "block":
            if self._wav is None:
                self._wav = wave.open(str(self.out / AUDIO_FILE), "wb")  # noqa: SIM115 (closed in close())
                self._wav.setnchannels(1)
                self._wav.setsampwidth(2)
                self._wav.setframerate(self.sample_rate)
            self._wav.writeframes(pcm16(item[1]).tobytes())  # rewrites the header's sizes each time
            self._audio_end += len(item[1])
        elif kind == "window":
            self.written["audio"] += 1
            self._events.write(orjson.dumps({"t": item[1], "kind": "window", "end": self._audio_end}) + b"\n")

    def close(self) -> dict:
        """Detach, write what is queued, finalise the files, then mark the session complete."""
        for sensor in self.sensors.values():
            sensor.on_sample = None
            if isinstance(sensor, MicrophoneSensor):
                sensor.on_block = None
        self.event("stop", time.monotonic())
        self._queue.put(None)
        self._thread.join()
        if self._camera is not None:
            self._camera.close()
        if self._wav is not None:
            self._wav.close()
        if self._events is not None:
            self._events.close()
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
        for m, state in result["sensors"].items():
            if self._states.get(m) != state:
                self._states[m] = state
                rec.event("state", t, modality=m, state=state)
        fields = {k: result[k] for k in ("label", "probs", "present", "sample_t")}
        rec.event("tick", t, **fields)

    def close(self) -> None:
        pass
