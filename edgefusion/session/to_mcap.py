"""``edgefusion export-mcap``: a recorded session as one MCAP file, to scrub through in Foxglove.

Topics: ``/edgefusion/result`` (the recorded ticks: label, probs, what was present, the samples
used), ``/edgefusion/events`` (every other event of the log: start, labels, sensor states, audio
windows, stop), ``/camera/rgb`` and ``/camera/depth`` (``foxglove.RawImage``: rgb8, and depth as
16UC1 millimetres, at most ``frames_hz`` a stream) and ``/audio`` (``foxglove.RawAudio``, pcm-s16
blocks of ``AUDIO_BLOCK_S``). JSON messages, binary fields base64, as Foxglove's JSON schemas say.

The session is read as a replay reads it (``load_session``), so a missing, damaged or foreign
folder is the same one line; a session cut short exports what it holds, said in a line. The
times are wall clock: the start event's ``wall_t`` where the recorder wrote one, else the event
log's modification time taken as the time of its last event (a copy that did not keep it shifts
every time, not their spacing). The file is written beside ``out`` and renamed when complete.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import orjson

from edgefusion import log
from edgefusion.atomic import atomic_write
from edgefusion.errors import SessionError
from edgefusion.mcap_log import RESULT_TOPIC, compression, import_mcap, register_json
from edgefusion.sensors.frames import depth_z16, pcm16, rgb8
from edgefusion.session.files import is_present
from edgefusion.session.layout import EVENTS_FILE, Session, load_session

EVENTS_TOPIC = "/edgefusion/events"
AUDIO_TOPIC = "/audio"
AUDIO_BLOCK_S = 0.1
_TIME = {
    "type": "object",
    "title": "time",
    "properties": {"sec": {"type": "integer", "minimum": 0}, "nsec": {"type": "integer", "minimum": 0}},
}
_BYTES = {"type": "string", "contentEncoding": "base64"}
RECORDED_TICK_SCHEMA = {
    "title": "edgefusion.RecordedTick",
    "description": "A tick of a recorded session: its intent, probabilities, the streams present and the samples used",
    "type": "object",
    "properties": {
        "t": {"type": "number", "description": "the tick's time, on the recording's monotonic clock"},
        "label": {"type": ["string", "null"]},
        "probs": {"type": ["object", "null"], "additionalProperties": {"type": ["number", "null"]}},
        "present": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "sample_t": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
    },
    "required": ["t", "label", "probs", "present"],
}
EVENT_SCHEMA = {
    "title": "edgefusion.SessionEvent",
    "description": "An event of a session's log (start, label, state, window, stop) as recorded",
    "type": "object",
    "properties": {"t": {"type": "number"}, "kind": {"type": "string"}},
    "required": ["t", "kind"],
}
RAW_IMAGE_SCHEMA = {  # Foxglove's own, by the name its image panel looks for
    "title": "foxglove.RawImage",
    "type": "object",
    "properties": {
        "timestamp": _TIME,
        "frame_id": {"type": "string"},
        "width": {"type": "integer", "minimum": 0},
        "height": {"type": "integer", "minimum": 0},
        "encoding": {"type": "string"},
        "step": {"type": "integer", "minimum": 0},
        "data": _BYTES,
    },
    "required": ["timestamp", "frame_id", "width", "height", "encoding", "step", "data"],
}
RAW_AUDIO_SCHEMA = {
    "title": "foxglove.RawAudio",
    "type": "object",
    "properties": {
        "timestamp": _TIME,
        "data": _BYTES,
        "format": {"type": "string"},
        "sample_rate": {"type": "integer", "minimum": 0},
        "number_of_channels": {"type": "integer", "minimum": 0},
    },
    "required": ["timestamp", "data", "format", "sample_rate", "number_of_channels"],
}


def export_session(root: str | Path, out: str | Path, frames_hz: float = 5.0) -> dict:
    """Write the session at ``root`` to ``out``: the messages written, by topic."""
    writer_module = import_mcap()
    root = Path(root)
    if root.is_file():
        raise SessionError(f"{root}: a file, not a session folder (record one with `edgefusion record --out DIR`)")
    if root.is_dir() and not is_present(root / EVENTS_FILE):
        raise SessionError(f"{root}: no {EVENTS_FILE}, so not a session recorded by `edgefusion record`")
    session = load_session(root)  # no folder at all, or a damaged one, is said there
    for warning in session.warnings:
        log.warning(warning)
    offset_ns = _wall_offset_ns(session)
    counts: dict[str, int] = {}
    with atomic_write(out) as f:
        writer = writer_module.Writer(f, compression=compression())
        writer.start(profile="", library="edgefusion export-mcap")

        def channel(topic: str, schema: dict):
            channel_id = register_json(writer, topic, schema)
            counts[topic] = 0

            def add(t: float, message: dict) -> None:
                ns = max(0, offset_ns + round(t * 1e9))
                writer.add_message(channel_id, ns, orjson.dumps(message), ns, sequence=counts[topic])
                counts[topic] += 1

            return add

        result, event = channel(RESULT_TOPIC, RECORDED_TICK_SCHEMA), channel(EVENTS_TOPIC, EVENT_SCHEMA)
        for e in _events(root / EVENTS_FILE):
            (result if e["kind"] == "tick" else event)(e["t"], e)
        if frames_hz > 0:
            for stream, frames in session.frames.items():
                image = channel(f"/camera/{stream}", RAW_IMAGE_SCHEMA)
                for t, frame in _every(frames, 1.0 / frames_hz):
                    image(t, _raw_image(stream, t + offset_ns / 1e9, frame))
        if session.audio is not None and session.window_ends:
            audio = channel(AUDIO_TOPIC, RAW_AUDIO_SCHEMA)
            for t, message in _audio_blocks(session, offset_ns):
                audio(t, message)
        writer.finish()
    return counts


def _events(path: Path):
    """The log's events in order; a last line cut short (a recorder killed mid-write) is left
    out, as the replay leaves it (``load_session`` has checked every other line)."""
    for line in path.read_bytes().split(b"\n"):
        if line.strip():
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                return


def _wall_offset_ns(session: Session) -> int:
    """Wall-clock ns minus the recording's monotonic ns (see the module docstring)."""
    wall = session.facts.get("wall_t")
    if isinstance(wall, (int, float)) and not isinstance(wall, bool):
        return round((wall - session.t_start) * 1e9)
    mtime = (session.root / EVENTS_FILE).stat().st_mtime
    return round((mtime - session.t_end) * 1e9)


def _every(frames: list[tuple[float, np.ndarray]], period_s: float):
    """The frames at most one per ``period_s``, the first included."""
    next_t = -np.inf
    for t, frame in frames:
        if t >= next_t:
            next_t = t + period_s
            yield t, frame


def _stamp(wall_s: float) -> dict:
    ns = max(0, round(wall_s * 1e9))
    return {"sec": ns // 1_000_000_000, "nsec": ns % 1_000_000_000}


def _raw_image(stream: str, wall_s: float, frame: np.ndarray) -> dict:
    """A model-format frame (rgb: 3×H×W, 0..255; depth: 1×H×W metres) as a RawImage."""
    if stream == "depth":
        pixels, encoding, size = depth_z16(frame[0]), "16UC1", 2
    else:
        pixels, encoding, size = np.ascontiguousarray(rgb8(frame).transpose(1, 2, 0)), "rgb8", 3
    h, w = pixels.shape[:2]
    return {
        "timestamp": _stamp(wall_s),
        "frame_id": stream,
        "width": w,
        "height": h,
        "encoding": encoding,
        "step": w * size,
        "data": base64.b64encode(pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()).decode(),
    }


def _audio_blocks(session: Session, offset_ns: int):
    """audio.wav in blocks, each timed from the recorded windows (a window's time is when its
    last sample arrived), from the first window's start to the last window's end."""
    rate = session.facts["sample_rate"]
    t_last, end_last = session.windows[-1][0], session.window_ends[-1]
    block = max(1, round(AUDIO_BLOCK_S * rate))
    start = max(0, session.window_ends[0] - len(session.windows[0][1]))
    for first in range(start, min(end_last, len(session.audio)), block):
        t = t_last - (end_last - first) / rate
        samples = pcm16(session.audio[first : first + block]).astype("<i2")
        message = {
            "timestamp": _stamp(t + offset_ns / 1e9),
            "data": base64.b64encode(samples.tobytes()).decode(),
            "format": "pcm-s16",
            "sample_rate": rate,
            "number_of_channels": 1,
        }
        yield t, message
