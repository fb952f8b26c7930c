"""ModalitySpecs for the sensor, rig and session tests: the demo bundle's, and others of any
size, rate or name (what a bundle's manifest declares, without a bundle)."""

from __future__ import annotations

from edgefusion.modalities import ModalitySpec


def camera(name: str, sensor: str, height: int, width: int, rate_hz: float = 30.0) -> ModalitySpec:
    channels = 3 if sensor == "rgb" else 1
    return ModalitySpec(name, sensor, (channels, height, width), name, f"p_{name}", (4, 32), rate_hz)


def audio(name: str = "audio", sample_rate: int = 16000, window_s: float = 1.0, rate_hz: float = 10.0) -> ModalitySpec:
    samples = round(sample_rate * window_s)
    return ModalitySpec(name, "audio", (samples,), name, f"p_{name}", (4, 32), rate_hz, sample_rate, window_s)


DEMO = (camera("rgb", "rgb", 48, 64), camera("depth", "depth", 48, 64), audio())
# Not the demo's: only depth and audio, sizes and rate of their own, names apart from their streams.
DEPTH_AUDIO = (camera("range", "depth", 120, 160), audio("speech", 8000, 0.5))
