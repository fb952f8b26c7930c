"""The built-in task's vocabulary and the code that ties cues to intents.

A person tells the robot what to do with three cues at once: a spoken word (audio), an arm
gesture (depth) and the object they show (rgb). Each intent has a plain way of saying it (the
word, gesture and object listed at the same index below), but people often use another "style"
in which the cues only make sense together. With the intent ``y`` and the style ``s``:

    word = y + s,   gesture = y + 2s,   object = y + 3s   (mod 7)

Any two cues determine both ``y`` and ``s`` (every pair of coefficients has a non-zero
determinant mod 7), so any one sensor may die. A single cue is right only when the style is the
plain one (``PLAIN_STYLE_P`` = 40 % of the time): fusion is necessary, and a lone sensor still
gives a weak, honest guess. A late-fusion model that multiplies per-modality beliefs cannot
decode the other styles at all, which the compare report shows.
"""

from __future__ import annotations

import numpy as np

N_SYMBOLS = 7
PLAIN_STYLE_P = 0.4

INTENTS = ("fetch", "stop", "follow", "hand_over", "inspect", "go_away", "wait")
WORDS = ("take", "stop", "come", "give", "look", "go", "wait")
GESTURES = (
    "point_forward",
    "raised_palm",
    "point_left",
    "arms_out",
    "point_right",
    "both_arms_up",
    "arms_down",
)
OBJECTS = ("cup", "cross", "ring", "box", "bottle", "cone", "ball")

_INV2 = 4  # 2 * 4 == 1 (mod 7)


def style_probabilities() -> np.ndarray:
    p = np.full(N_SYMBOLS, (1 - PLAIN_STYLE_P) / (N_SYMBOLS - 1))
    p[0] = PLAIN_STYLE_P
    return p


def encode(intent: int, style: int) -> tuple[int, int, int]:
    """Cue indices (word, gesture, object) that express ``intent`` in ``style``."""
    n = N_SYMBOLS
    return (intent + style) % n, (intent + 2 * style) % n, (intent + 3 * style) % n


def decode_pair(word: int | None, gesture: int | None, obj: int | None) -> int:
    """The intent that two (or three) known cues determine: the ground truth of the code."""
    n = N_SYMBOLS
    if word is not None and gesture is not None:
        return (2 * word - gesture) % n
    if gesture is not None and obj is not None:
        return (gesture - 2 * (obj - gesture)) % n
    if word is not None and obj is not None:
        return (word - _INV2 * (obj - word)) % n
    raise ValueError("decode_pair needs at least two cues")
