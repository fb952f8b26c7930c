"""Recordings made by other tools, replayed as sessions: a robotics team's archive of RealSense
recordings (realsense-viewer, ``rs-record``: ``.bag`` or ``.db3``, the camera's resolution) and
WAVs from any recorder.

What is read: a ``.bag``/``.db3`` or ``.wav`` file itself, or a folder without an event log that
holds at most one recording and at most one WAV (more would be a guess: replay one by its path).
Frames are brought to the bundle's sizes as the live driver brings them (``frames.Resample``:
block mean or nearest for colour, nearest for depth; depth is not aligned to colour); the WAV is
mixed to mono and resampled to the bundle's rate with soxr, cut into windows of the bundle's
length every 1/rate_hz; a stream with no file (or a modality whose stream the recording lacks)
is absent throughout. Without a bundle (``specs`` None) frames and audio keep their recorded
size and rate, in 1 s windows every 0.1 s.

Alignment: a RealSense recording's timestamps are its device's clock and a WAV has no clock at
all, so nothing relates the two but where each starts: the first frame of the recording and the
first sample of the WAV are both t = 0, and ``[sensors.<stream>] offset_ms`` (the time-offset
calibration's key) moves a stream later (positive) or earlier. A frame's timestamp that goes
back, or jumps more than ``MAX_GAP_S`` ahead, is refused: a replay must end with its files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgefusion.errors import SessionError
from edgefusion.modalities import STREAMS, ModalitySpec
from edgefusion.session.camera_file import read_camera_file
from edgefusion.session.files import read_bytes
from edgefusion.session.layout import EVENTS_FILE, MAX_GAP_S, RECORDED_WINDOW_S, Session, camera_sizes
from edgefusion.session.wav import read_wav, to_rate

RECORDING_FORMAT = "recording"  # the facts' format of a session made from other tools' files
CAMERA_SUFFIXES = (".bag", ".db3")
AUDIO_SUFFIX = ".wav"
HOP_S = 0.1  # without a bundle: a new audio window every 100 ms, as the demo's microphone hands them out


def load_recording(path: Path, specs: tuple[ModalitySpec, ...] | None, offsets_ms: dict[str, float]) -> Session:
    """A recording and/or a WAV as a session without events: its ticks are made at replay time."""
    camera, wav = _pick_files(path)
    shift = {m: offsets_ms.get(m, 0.0) / 1000.0 for m in STREAMS}
    frames: dict[str, list[tuple[float, np.ndarray]]] = {"rgb": [], "depth": []}
    warnings: list[str] = []
    if camera is not None:
        recording = read_camera_file(camera, camera_sizes(specs))
        firsts = [f[0][0] for f in recording.values() if f]
        if not firsts:
            raise SessionError(f"{camera}: no colour or depth frame in it; record with a colour or depth stream")
        for m, stream in recording.items():
            _check_in_order(camera, m, stream)
            frames[m] = [(t - min(firsts) + shift[m], frame) for t, frame in stream]
    audio, windows, ends, rate = None, [], [], None
    if wav is not None:
        spec = next((s for s in specs or () if s.sensor == "audio"), None)
        audio, rate = _model_audio(wav, spec.sample_rate if spec is not None else None, warnings)
        window_s = spec.window_s if spec is not None and spec.window_s is not None else RECORDED_WINDOW_S
        window = int(round(window_s * rate))
        hop = int(round((1.0 / spec.rate_hz if spec is not None else HOP_S) * rate))
        ends = list(range(window, len(audio) + 1, hop))
        if not ends:
            warnings.append(f"{wav}: shorter than one {window_s:g} s audio window; audio replays as absent")
        # A window's time is its last sample's, as the microphone stamps it.
        windows = [(shift["audio"] + (end - 1) / rate, audio[end - window : end]) for end in ends]
    if specs is not None:
        recorded = {m for m, f in frames.items() if f} | ({"audio"} if windows else set())
        warnings += [
            f"{path}: no {s.sensor} in this recording; modality {s.name!r} replays as absent"
            for s in specs
            if s.sensor not in recorded
        ]
    firsts = [s[0][0] for s in (*frames.values(), windows) if s]
    facts = {
        "t": min([0.0, *firsts]),
        "kind": "start",
        "format": RECORDING_FORMAT,
        "sample_rate": rate,
        "source": "recording",
        "camera": None if camera is None else str(camera),
        "audio": None if wav is None else str(wav),
        "offsets_ms": {m: shift[m] * 1000.0 for m in STREAMS},
    }
    return Session(path, True, facts, frames, windows, audio, ends, warnings=warnings)


def _pick_files(path: Path) -> tuple[Path | None, Path | None]:
    """(the recording, the WAV) that ``path`` is or holds."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in CAMERA_SUFFIXES:
            return path, None
        if suffix == AUDIO_SUFFIX:
            return None, path
        raise SessionError(f"{path}: not a session folder nor a recording; give a folder, a .bag, .db3 or .wav")
    try:
        names = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as err:
        raise SessionError(f"{path}: cannot list the folder ({err.strerror}); chmod a+rx it") from None
    cameras = [p for p in names if p.suffix.lower() in CAMERA_SUFFIXES]
    wavs = [p for p in names if p.suffix.lower() == AUDIO_SUFFIX]
    if not cameras and not wavs:
        raise SessionError(
            f"{path}: not a session folder (no {EVENTS_FILE}) nor a recording (no .bag, .db3 or .wav in it); "
            "record one with `edgefusion record --out DIR`"
        )
    for kind, found in (("RealSense recordings", cameras), ("WAV files", wavs)):
        if len(found) > 1:
            raise SessionError(
                f"{path}: holds {len(found)} {kind} ({', '.join(p.name for p in found)}); a folder replays one "
                "recording and one WAV: give one with --source replay:FILE, or put each pair in its own folder"
            )
    return next(iter(cameras), None), next(iter(wavs), None)


def _check_in_order(camera: Path, modality: str, stream: list[tuple[float, np.ndarray]]) -> None:
    """A replay finds a frame by time: times that go back (a device clock reset mid-recording)
    would hand out the wrong frames, and a jump of hours would stretch a real-time replay."""
    for i in range(1, len(stream)):
        step = stream[i][0] - stream[i - 1][0]
        if not 0 <= step <= MAX_GAP_S:
            raise SessionError(
                f"{camera}: {modality} frame {i}'s timestamp is {step * 1000:+.6g} ms from the one before it "
                f"(allowed: 0 to {MAX_GAP_S:g} s); the recording's clock is damaged: cut the file there"
            )


def _model_audio(path: Path, model_rate: int | None, warnings: list[str]) -> tuple[np.ndarray, int]:
    """The WAV as the model hears it, and its rate: mono, at ``model_rate`` (None: the file's),
    in whole 16-bit steps."""
    wav = read_wav(path, read_bytes(path))
    if len(wav.samples) < wav.declared_frames:
        warnings.append(f"{path}: cut short ({len(wav.samples)} of {wav.declared_frames} samples); replaying those")
    rate = model_rate or wav.rate
    return to_rate(path, wav.samples.mean(axis=1, dtype=np.float32), wav.rate, rate), rate
