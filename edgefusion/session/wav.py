"""WAV files of any common kind, read with numpy: PCM 8/16/24/32-bit, IEEE float 32/64-bit, plain
or WAVE_FORMAT_EXTENSIBLE, any channel count and rate.

Python 3.11's ``wave`` reads PCM only, and not the EXTENSIBLE header that most recorders write
for 24-bit or multichannel audio, so the RIFF chunks are read here. Samples come out as float32
in 16-bit steps (the model's audio unit), still at the file's rate and channel count.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefusion.errors import EdgefusionError, SessionError
from edgefusion.sensors.frames import pcm16

PCM, IEEE_FLOAT, EXTENSIBLE = 0x0001, 0x0003, 0xFFFE


@dataclass
class Wav:
    rate: int
    channels: int
    bits: int
    is_float: bool
    samples: np.ndarray  # (frames, channels) float32 in 16-bit steps (±32768 full scale)
    declared_frames: int  # what the header says: more than ``len(samples)`` when the file was cut short

    @property
    def kind(self) -> str:
        return f"{self.channels} channel(s), {self.bits}-bit {'float' if self.is_float else 'PCM'}, {self.rate} Hz"


def read_wav(path: Path, data: bytes) -> Wav:
    """``data`` is the whole file (read by the caller, who says why it could not be read)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SessionError(f"{path}: not a WAV file (no RIFF/WAVE header); give a .wav recording")
    fmt, body, declared = None, None, 0
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        start = pos + 8
        if chunk == b"fmt ":
            fmt = data[start : start + size]
        elif chunk == b"data":
            declared = size
            body = data[start : start + size]  # shorter than ``size`` when cut short
            break
        pos = start + size + (size & 1)  # chunks are padded to an even size
    if fmt is None or len(fmt) < 16:
        raise SessionError(f"{path}: not a readable WAV file (no format chunk); re-export it as a plain WAV")
    if body is None:
        raise SessionError(f"{path}: not a readable WAV file (no data chunk); re-export it as a plain WAV")
    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # the sub-format GUID begins with the plain tag
    sample_bytes = bits // 8
    supported = (tag == PCM and bits in (8, 16, 24, 32)) or (tag == IEEE_FLOAT and bits in (32, 64))
    if not supported or channels < 1 or not 1 <= rate <= 1_000_000 or block_align != channels * sample_bytes:
        raise SessionError(
            f"{path}: WAV format tag {tag:#06x}, {bits}-bit, {channels} channel(s), {rate} Hz is not supported; "
            "convert it to PCM or float (e.g. sox in.wav -b 16 out.wav)"
        )
    frames = len(body) // block_align
    raw = np.frombuffer(body, np.uint8, frames * block_align)
    return Wav(
        rate,
        channels,
        bits,
        tag == IEEE_FLOAT,
        _to_steps(raw, tag, bits).reshape(frames, channels),
        declared // block_align,
    )


def _to_steps(raw: np.ndarray, tag: int, bits: int) -> np.ndarray:
    """Little-endian samples to float32 in 16-bit steps (8-bit PCM is unsigned, the rest signed)."""
    if tag == IEEE_FLOAT:
        values = raw.view("<f4" if bits == 32 else "<f8").astype(np.float64) * 32768.0
        return np.nan_to_num(values, nan=0.0, posinf=32767.0, neginf=-32768.0).astype(np.float32)
    if bits == 8:
        return (raw.astype(np.float32) - 128.0) * 256.0
    if bits == 24:
        triples = raw.reshape(-1, 3).astype(np.int32)
        signed = (triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)) << 8 >> 8  # sign-extend
        return (signed / 256.0).astype(np.float32)
    if bits == 16:
        return raw.view("<i2").astype(np.float32)
    return (raw.view("<i4") / 65536.0).astype(np.float32)


def to_rate(path: Path, mono: np.ndarray, rate: int, model_rate: int) -> np.ndarray:
    """Mono audio of ``path`` at the model's rate, in whole 16-bit steps: resampled with soxr
    (band-limited) where the rates differ, which needs soxr installed."""
    if rate != model_rate and len(mono):
        try:
            import soxr
        except ImportError as err:
            raise EdgefusionError(
                f"{path}: {rate} Hz audio needs soxr to resample to the bundle's {model_rate} Hz ({err}): "
                "pip install 'edgefusion[sensors]'"
            ) from err
        mono = soxr.resample(mono, rate, model_rate, quality="HQ")
    return pcm16(mono).astype(np.float32)
