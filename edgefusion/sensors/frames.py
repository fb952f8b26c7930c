"""What every camera and microphone hands the model: the values a real device gives.

Frames are float32 at the model's size, but hold what a RealSense delivers: RGB in whole 8-bit
steps, depth in whole Z16 steps times the depth scale. Audio blocks hold whole 16-bit steps.
Simulated devices quantize the same way, so a recorded session (RGB8, Z16, 16-bit WAV) holds
exactly the values the run saw, and its replay reproduces the run's logits.
"""

from __future__ import annotations

import numpy as np

DEPTH_SCALE = 0.001  # metres per Z16 step: the RealSense default (the D400 series' depth units)
CAMERAS = ("rgb", "depth")
# What a device of each modality can deliver at all (depth: Z16 at up to 1 mm per step).
VALID_RANGE = {"rgb": (0.0, 255.0), "depth": (0.0, 65.535), "audio": (-32768.0, 32767.0)}


def depth_metres(z16: np.ndarray, scale: float = DEPTH_SCALE, out: np.ndarray | None = None) -> np.ndarray:
    """Z16 → metres, in float32 arithmetic: the same steps live, recorded and replayed."""
    return np.multiply(z16, np.float32(scale), out=out, dtype=np.float32)


def depth_z16(metres: np.ndarray, scale: float = DEPTH_SCALE) -> np.ndarray:
    return np.clip(np.rint(metres / np.float32(scale)), 0, 65535).astype(np.uint16)


def rgb8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def pcm16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)
