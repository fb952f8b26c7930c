"""The built-in task's vocabulary and the code that ties cues to intents.

A person tells the robot what to do with three cues at once: a spoken word (audio), an arm
gesture (depth) and the object they show (rgb). Each cue alone is ambiguous; any two decide.
That is exactly a (3, 2) MDS code over Z_7: with the intent ``y`` and a free "style" symbol
``s`` (how this person happens to phrase it), the cues are

    word = s,   gesture = y + s,   object = 2y + s   (mod 7)

so every pair of cues determines ``y`` (2 is invertible mod 7) while a single cue is uniform
over the intents. Fusion is therefore necessary (a single modality is at chance) and absence
is survivable (any one sensor may die). A late-fusion model that multiplies per-modality
beliefs cannot solve it at all, which the compare report shows.
"""

from __future__ import annotations

N_SYMBOLS = 7

INTENTS = ("fetch", "stop", "follow", "hand_over", "inspect", "go_left", "go_right")
WORDS = ("go", "stop", "take", "give", "look", "come", "wait")
GESTURES = (
    "point_left",
    "point_right",
    "raised_palm",
    "both_arms_up",
    "arms_out",
    "point_forward",
    "arms_down",
)
OBJECTS = ("cup", "box", "ball", "bottle", "ring", "cone", "cross")

_INV2 = 4  # 2 * 4 == 1 (mod 7)


def encode(intent: int, style: int) -> tuple[int, int, int]:
    """Cue indices (word, gesture, object) that express ``intent`` in ``style``."""
    n = N_SYMBOLS
    return style % n, (intent + style) % n, (2 * intent + style) % n


def decode_pair(word: int | None, gesture: int | None, obj: int | None) -> int:
    """The intent that two (or three) known cues determine: the ground truth of the code."""
    n = N_SYMBOLS
    if word is not None and gesture is not None:
        return (gesture - word) % n
    if gesture is not None and obj is not None:
        return (obj - gesture) % n
    if word is not None and obj is not None:
        return (_INV2 * (obj - word)) % n
    raise ValueError("decode_pair needs at least two cues")
