"""A session folder's files, and reading them back with clear errors (see the package docstring)."""

from __future__ import annotations

import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from edgefusion.errors import EdgefusionError, SessionError
from edgefusion.sensors.base import SensorState
from edgefusion.session.camera_file import CameraFileWriter, camera_file_name, find_camera_file, read_camera_file
from edgefusion.task import AUDIO_WINDOW_S

SESSION_FORMAT = "edgefusion-session/1"
AUDIO_FILE = "audio.wav"
EVENTS_FILE = "events.jsonl"
SESSION_FILE = "session.json"

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
    audio: np.ndarray | None = None  # all of audio.wav, float32 in 16-bit steps
    window_ends: list[int] = field(default_factory=list)  # the sample of ``audio`` each window ends at
    states: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # modality → (t, state) changes
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


def load_session(root: str | Path, window_s: float = AUDIO_WINDOW_S) -> Session:
    """Everything a replay needs, in memory. A session may lack the camera or the audio (those
    modalities replay as absent); it may not lack its event log, which holds the times."""
    root = Path(root)
    if not root.is_dir():
        raise SessionError(f"{root}: no such session folder (record one with `edgefusion record --out DIR`)")
    complete = (root / SESSION_FILE).is_file()
    events = _read_events(root / EVENTS_FILE, complete)
    if not events or events[0].get("kind") != "start":
        raise SessionError(f"{root / EVENTS_FILE}: does not begin with a start event; not an edgefusion session")
    facts = events[0]
    if facts.get("format") != SESSION_FORMAT:
        raise SessionError(
            f"{root}: session format {facts.get('format')!r}, this edgefusion reads {SESSION_FORMAT!r}; "
            "replay it with the version that recorded it"
        )
    session = Session(root, complete, facts, {"rgb": [], "depth": []}, [])
    if not complete:
        session.warnings.append(f"{root}: incomplete session (no {SESSION_FILE}: the recorder was cut short)")

    camera = find_camera_file(root)
    if camera is not None:
        try:
            session.frames.update(read_camera_file(camera))
        except EdgefusionError as err:
            if complete:
                raise
            # Cut short with the recorder: the rest of the session still replays, camera absent.
            session.warnings.append(f"{err}; the camera replays as absent")

    rate = int(facts.get("sample_rate", 0))
    window = int(round(window_s * rate))
    audio = session.audio = _read_wav(root / AUDIO_FILE, rate, complete, session.warnings)
    for e in events[1:]:
        kind, t = e["kind"], e["t"]
        try:
            if kind == "window":
                end = e["end"]
                if audio is None or end > len(audio):
                    if complete:
                        what = "missing" if audio is None else "shorter than its events say"
                        raise SessionError(f"{root / AUDIO_FILE}: {what}; the session is damaged")
                    continue  # not written before the recorder died; later labels and ticks still count
                session.windows.append((t, audio[end - window : end]))
                session.window_ends.append(end)
            elif kind == "state":
                session.states.setdefault(e["modality"], []).append((t, SensorState(e["state"]).value))
            elif kind == "label":
                session.labels.append((t, e["label"]))
            elif kind == "tick":
                session.ticks.append(e)
        except (KeyError, TypeError, ValueError) as err:
            raise SessionError(
                f"{root / EVENTS_FILE}: the {kind} event at t={t} is malformed ({err!r}); the event log is damaged"
            ) from None
    return session


def _read_events(path: Path, complete: bool) -> list[dict]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SessionError(f"{path.parent}: not a session folder (no {EVENTS_FILE})") from None
    lines = raw.split(b"\n")
    events = []
    for i, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            if i == len(lines) and not complete:
                break  # the line being written when the recorder died
            raise SessionError(f"{path}:{i}: not a JSON line; the event log is damaged") from None
        if not (isinstance(event, dict) and isinstance(event.get("t"), (int, float)) and "kind" in event):
            raise SessionError(f"{path}:{i}: not an event (an object with a time t and a kind); the log is damaged")
        events.append(event)
    return events


def _read_wav(path: Path, rate: int, complete: bool, warnings: list[str]) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        with wave.open(str(path), "rb") as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, rate):
                raise SessionError(
                    f"{path}: {w.getnchannels()} channel(s), {8 * w.getsampwidth()}-bit, {w.getframerate()} Hz; "
                    f"a session's audio is mono 16-bit at {rate} Hz"
                )
            n = w.getnframes()
            data = w.readframes(n)
    except (wave.Error, EOFError) as err:
        raise SessionError(f"{path}: not a readable WAV file ({err})") from None
    got = len(data) // 2
    if got < n:
        if complete:
            raise SessionError(f"{path}: truncated ({got} of {n} samples); the session is damaged")
        warnings.append(f"{path}: {got} of {n} samples were written")
    return np.frombuffer(data[: 2 * got], np.int16).astype(np.float32)
