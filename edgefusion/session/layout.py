"""A session folder's files, and reading them back with clear errors (see the package docstring)."""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from edgefusion.errors import EdgefusionError, SessionError
from edgefusion.modalities import STREAMS, ModalitySpec
from edgefusion.sensors.base import SensorState
from edgefusion.sensors.frames import CAMERAS
from edgefusion.session.camera_file import CameraFileWriter, camera_file_name, find_camera_file, read_camera_file
from edgefusion.session.files import is_present, read_bytes
from edgefusion.session.wav import read_wav, to_rate

SESSION_FORMAT = "edgefusion-session/1"
AUDIO_FILE = "audio.wav"
EVENTS_FILE = "events.jsonl"
SESSION_FILE = "session.json"
# A recorder writes a tick every 1/tick_hz and a window every 0.1 s: an event this long after
# everything before it (or before the start) is a damaged clock, and would stretch a real-time
# replay without end. Sensor offsets (within ±10 s) may put a sample before the start.
MAX_GAP_S = 60.0
SAMPLE_RATES = (1000, 384_000)  # Hz: what any microphone delivers
MAX_OFFSET_MS = 10_000  # as [sensors.*] offset_ms
MAX_WINDOW_S = 10.0  # as a bundle's audio window_s
# Sessions recorded before the start event said its window (and its streams) were the demo's:
# 1 s windows of all three streams.
RECORDED_WINDOW_S = 1.0
DAMAGED_LOG = "the event log is damaged: repair that line or record the session again"
ORDERED_WITH_TICKS = ("tick", "label", "state")  # written in time order by the recorder's result sink

__all__ = [
    "AUDIO_FILE",
    "EVENTS_FILE",
    "SESSION_FILE",
    "SESSION_FORMAT",
    "CameraFileWriter",
    "Session",
    "SessionError",
    "camera_file_name",
    "load_session",
]


@dataclass
class Session:
    root: Path
    complete: bool  # False: the recorder was cut short (no session.json)
    facts: dict  # the start event: format, sample rate, source, bundle...
    frames: dict[str, list[tuple[float, np.ndarray]]]  # rgb, depth: (t, float32 frame), in time order
    windows: list[tuple[float, np.ndarray]]  # (t, float32 audio window), in time order
    audio: np.ndarray | None = None  # all of audio.wav, float32 in 16-bit steps, at facts["sample_rate"]
    window_ends: list[int] = field(default_factory=list)  # the sample of ``audio`` each window ends at
    states: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # stream → (t, state) changes
    labels: list[tuple[float, str]] = field(default_factory=list)  # (t, intent from then on)
    ticks: list[dict] = field(default_factory=list)  # the recorded run's results (t, label, probs, present)
    warnings: list[str] = field(default_factory=list)  # what was cut short, said once

    @property
    def t_start(self) -> float:
        return self.facts["t"]

    @property
    def t_end(self) -> float:
        """The last thing recorded: a tick, a frame or an audio window."""
        last = [self.ticks[-1]["t"]] if self.ticks else []
        last += [f[-1][0] for f in self.frames.values() if f] + ([self.windows[-1][0]] if self.windows else [])
        return max(last, default=self.t_start)

    def label_at(self, t: float) -> str | None:
        """The recorded intent at ``t`` (None before the first label)."""
        current = None
        for tl, name in self.labels:
            if tl > t:
                break
            current = name
        return current


def load_session(
    root: str | Path, specs: tuple[ModalitySpec, ...] | None = None, offsets_ms: dict[str, float] | None = None
) -> Session:
    """Everything a replay needs, in memory. A session may lack the camera or the audio (those
    streams replay as absent); it may not lack its event log, which holds the times.

    ``specs`` (a bundle's modalities) brings every stream to the size and rate of the modality it
    feeds: frames resized as the live driver resizes them, audio resampled with soxr, windows of
    the modality's length ending where the recorded ones end. A stream a modality needs that the
    recording lacks replays as absent throughout, said in ``warnings``. None keeps what was
    recorded.

    A folder without an event log that holds a RealSense recording and/or a WAV (made by other
    tools), or such a file itself, is read as a recording (``foreign.load_recording``), its
    streams shifted by ``offsets_ms``; a session's own times already include its offsets."""
    root = Path(root)
    if not root.is_dir():
        if root.is_file():
            from edgefusion.session.foreign import load_recording

            return load_recording(root, specs, offsets_ms or {})
        raise SessionError(f"{root}: no such session folder (record one with `edgefusion record --out DIR`)")
    complete = is_present(root / SESSION_FILE)
    if not is_present(root / EVENTS_FILE):
        if complete:
            raise SessionError(f"{root / EVENTS_FILE}: missing, though {SESSION_FILE} is there; the session is damaged")
        from edgefusion.session.foreign import load_recording

        return load_recording(root, specs, offsets_ms or {})
    if complete:
        _check_summary(root / SESSION_FILE)
    lines = _read_events(root / EVENTS_FILE, complete)
    if not lines:
        raise SessionError(f"{root / EVENTS_FILE}: empty (no start event); not an edgefusion session")
    start = lines[0]
    if start.event["kind"] != "start":
        raise start.fail("kind", "is not 'start', as a session's first event is", start.event["kind"])
    if start.event.get("format") != SESSION_FORMAT:
        raise SessionError(
            f"{start.at}: session format {reprlib.repr(start.event.get('format'))} (the start event's 'format'), "
            f"this edgefusion reads {SESSION_FORMAT!r}; replay it with the version that recorded it"
        )
    streams = _recorded_streams(start)
    # A session without audio has no rate: its windows (none) are one sample long.
    rate = start.integer("sample_rate", *SAMPLE_RATES) if "audio" in streams else 1
    window_s = RECORDED_WINDOW_S
    if "window_s" in start.event:
        window_s = start.number("window_s", start.event, 1 / rate, MAX_WINDOW_S, key="window_s")
    offsets = start.field("offsets_ms", dict, optional=True) or {}
    for m in offsets:
        start.number(f"offsets_ms.{m}", offsets, -MAX_OFFSET_MS, MAX_OFFSET_MS, key=m, keys=STREAMS)
    session = Session(root, complete, start.event, {m: [] for m in CAMERAS if m in streams}, [])
    if not complete:
        session.warnings.append(f"{root}: incomplete session (no {SESSION_FILE}: the recorder was cut short)")

    camera = find_camera_file(root)
    if camera is not None:
        try:
            recorded = read_camera_file(camera, camera_sizes(specs))
        except EdgefusionError as err:
            if complete:
                raise
            # Cut short with the recorder: the rest of the session still replays, camera absent.
            session.warnings.append(f"{err}; the camera replays as absent")
        else:
            session.frames.update({m: f for m, f in recorded.items() if m in session.frames})

    session.audio = _read_audio(root / AUDIO_FILE, start, complete, session.warnings) if "audio" in streams else None
    _read_log(session, lines, int(round(window_s * rate)), streams)
    if specs is not None:
        _fit_audio(session, specs, root / AUDIO_FILE, rate)
        _say_missing(session, specs, streams)
    return session


def camera_sizes(specs: tuple[ModalitySpec, ...] | None) -> dict[str, tuple[int, int]] | None:
    """Stream → the (h, w) its modality takes, for the camera streams of ``specs`` (None: as recorded)."""
    return None if specs is None else {s.sensor: (s.height, s.width) for s in specs if s.sensor in CAMERAS}


def _recorded_streams(start: _Line) -> tuple[str, ...]:
    """The streams the session's rig delivered (every one, in a session from before this was said)."""
    if "streams" not in start.event:
        return STREAMS
    streams = start.event["streams"]
    if not isinstance(streams, list) or not all(isinstance(m, str) and m in STREAMS for m in streams):
        raise start.fail("streams", f"is not a list of {', '.join(STREAMS)}", streams)
    return tuple(m for m in STREAMS if m in streams)


def _fit_audio(session: Session, specs: tuple[ModalitySpec, ...], path: Path, rate: int) -> None:
    """The windows at the audio modality's rate and length, ending where the recorded ones end
    (a window that would reach before the first sample of audio.wav is left out)."""
    spec = next((s for s in specs if s.sensor == "audio"), None)
    if spec is None or session.audio is None or spec.sample_rate is None:
        return
    window = spec.samples
    if spec.sample_rate == rate and all(len(w) == window for _, w in session.windows):
        return
    audio = to_rate(path, session.audio, rate, spec.sample_rate)
    windows, ends = [], []
    for (t, _), end in zip(session.windows, session.window_ends):
        end = min(round(end * spec.sample_rate / rate), len(audio))
        if end >= window:
            windows.append((t, audio[end - window : end]))
            ends.append(end)
    session.facts = {**session.facts, "sample_rate": spec.sample_rate, "recorded_sample_rate": rate}
    session.audio, session.windows, session.window_ends = audio, windows, ends


def _say_missing(session: Session, specs: tuple[ModalitySpec, ...], streams: tuple[str, ...]) -> None:
    for spec in specs:
        if spec.sensor not in streams:
            session.warnings.append(
                f"{session.root}: no {spec.sensor} stream was recorded; modality {spec.name!r} replays as absent"
            )


def _read_log(session: Session, lines: list[_Line], window: int, streams: tuple[str, ...]) -> None:
    """Each event's fields checked as they are taken in: a damaged one is named by file:line."""
    audio = session.audio
    latest = {"window": -math.inf, "tick, label or state": -math.inf, "end": window - 1}
    newest = lines[0].t
    for line in lines[1:]:
        kind, t = line.event["kind"], line.t
        if not session.t_start - MAX_GAP_S <= t <= newest + MAX_GAP_S:
            raise line.fail("t", f"is {t - newest:+.6g} s from the events before it", t)
        newest = max(newest, t)
        # Each writer's events come in time order: the microphone's windows, and the results'
        # ticks with the labels and state changes they carry. A replay finds them by time.
        stream = "window" if kind == "window" else "tick, label or state" if kind in ORDERED_WITH_TICKS else None
        if stream is not None:
            if t < latest[stream]:
                raise line.fail("t", f"is before the previous {stream} event's ({latest[stream]})", t)
            latest[stream] = t
        if kind == "window":
            end = line.integer("end", window, 2**62, "one window's length")
            if end <= latest["end"]:
                raise line.fail("end", f"does not come after the previous window's end ({latest['end']})", end)
            latest["end"] = end
            if audio is None or end > len(audio):
                if session.complete:
                    what = "missing" if audio is None else f"holds {len(audio)} samples"
                    raise line.fail("end", f"is past the end of {AUDIO_FILE} ({what})", end)
                continue  # not written before the recorder died; later labels and ticks still count
            session.windows.append((t, audio[end - window : end]))
            session.window_ends.append(end)
        elif kind == "state":
            modality = line.choice("modality", STREAMS)
            state = line.choice("state", tuple(s.value for s in SensorState))
            session.states.setdefault(modality, []).append((t, state))
        elif kind == "label":
            line.field("label", str, optional=True)
            session.labels.append((t, line.event["label"]))
        elif kind == "tick":
            if "sample_t" in line.event:
                sample_t = line.field("sample_t", dict)
                for m in streams:
                    line.number(f"sample_t.{m}", sample_t, -math.inf, math.inf, key=m, optional=True)
            session.ticks.append(line.event)


class _Line:
    """One event of the log, for taking its fields: a field that is missing, of the wrong type or
    out of range is one error naming ``file:line`` and the field."""

    def __init__(self, path: Path, number: int, event: dict):
        self.at, self.event = f"{path}:{number}", event
        self.t = self.number("t", event, -math.inf, math.inf, key="t")

    def fail(self, name: str, problem: str, value) -> SessionError:
        kind = self.event.get("kind")
        what = f"the {kind} event's" if isinstance(kind, str) else "the event's"
        return SessionError(f"{self.at}: {what} {name!r} {problem} (got {reprlib.repr(value)}); {DAMAGED_LOG}")

    def field(self, name: str, kind: type[dict] | type[str], optional: bool = False):
        if name not in self.event:
            if optional:
                return None
            raise self.fail(name, "is missing", None)
        value = self.event[name]
        if value is None and optional:
            return None
        if not isinstance(value, kind):
            raise self.fail(name, f"is not a {'JSON object' if kind is dict else 'string'}", value)
        return value

    def number(self, name, table: dict, lo, hi, key: str, optional=False, keys=None):
        """``table[key]`` (the event itself, or an object in it), finite and within [lo, hi];
        ``optional``: it may be null (a tick that used no sample of a modality)."""
        if keys is not None and key not in keys:
            raise self.fail(name, f"is not one of {', '.join(keys)}", key)
        if key not in table:
            raise self.fail(name, "is missing", None)
        value = table[key]
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(name, "is not a number", value)
        if not (math.isfinite(value) and lo <= value <= hi):
            raise self.fail(name, f"is out of range ({'finite' if math.isinf(hi) else f'{lo}..{hi}'})", value)
        return value

    def integer(self, name: str, lo: int, hi: int, lo_means: str = "") -> int:
        value = self.event.get(name)
        if name not in self.event:
            raise self.fail(name, "is missing", None)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, "is not a whole number", value)
        if not lo <= value <= hi:
            bound = f"at least {lo}{f' ({lo_means})' if lo_means else ''}" if value < lo else f"at most {hi}"
            raise self.fail(name, f"must be {bound}", value)
        return value

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.field(name, str)
        if value not in allowed:
            raise self.fail(name, f"is not one of {', '.join(allowed)}", value)
        return value


def _read_events(path: Path, complete: bool) -> list[_Line]:
    raw = read_bytes(path)
    lines = raw.split(b"\n")
    events = []
    for i, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            if i == len(lines) and not complete:
                break  # the line being written when the recorder died
            raise SessionError(f"{path}:{i}: not a JSON line; {DAMAGED_LOG}") from None
        if not isinstance(event, dict):
            raise SessionError(f"{path}:{i}: not a JSON object; {DAMAGED_LOG}")
        line = _Line(path, i, event)
        line.field("kind", str)
        events.append(line)
    return events


def _check_summary(path: Path) -> None:
    """session.json marks a clean close: it must say so, in this format."""
    raw = read_bytes(path)
    try:
        summary = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise SessionError(f"{path}: not JSON; the session is damaged (delete it to replay as incomplete)") from None
    wanted = {"format": SESSION_FORMAT, "complete": True}
    for name, value in wanted.items():
        got = summary.get(name) if isinstance(summary, dict) else summary
        if got != value or type(got) is not type(value):
            line = raw[: raw.find(f'"{name}"'.encode())].count(b"\n") + 1 if f'"{name}"'.encode() in raw else 1
            raise SessionError(
                f"{path}:{line}: {name!r} is {reprlib.repr(got)}, not {value!r}; the session is damaged "
                "(delete it to replay as incomplete)"
            )


def _read_audio(path: Path, start: _Line, complete: bool, warnings: list[str]) -> np.ndarray | None:
    """audio.wav, which the recorder wrote: mono 16-bit PCM at the start event's sample rate."""
    if not is_present(path):
        return None
    wav = read_wav(path, read_bytes(path))
    rate = start.event["sample_rate"]
    if (wav.channels, wav.bits, wav.is_float, wav.rate) != (1, 16, False, rate):
        raise SessionError(
            f"{path}: {wav.kind}, but {start.at} says 'sample_rate' {rate} and a session's audio is mono "
            "16-bit PCM at that rate; the session is damaged"
        )
    got, n = len(wav.samples), wav.declared_frames
    if got < n:
        if complete:
            raise SessionError(f"{path}: truncated ({got} of {n} samples); the session is damaged")
        warnings.append(f"{path}: {got} of {n} samples were written")
    return wav.samples[:, 0]
