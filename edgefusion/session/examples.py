"""Recorded sessions as training and calibration data, labelled by their label events.

One example per audio window (10 Hz): the window, and the newest RGB and depth frames captured
no later than it and no more than ``max_age_s`` before it, labelled with the intent the person
meant then. A window that ends within ``settle_s`` of an intent change still holds the previous
word, so it is left out, as it is when a modality is missing or the label is unknown. The cues
(what each modality alone says) are unknown in a recording: they are -1.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edgefusion.errors import SessionError
from edgefusion.session.layout import Session, load_session
from edgefusion.task import TaskBatch

UNKNOWN_CUE = -1


def session_batch(
    roots: Iterable[str | Path],
    labels: tuple[str, ...],
    max_examples: int | None = None,
    settle_s: float = 1.0,
    max_age_s: float = 0.1,
) -> TaskBatch:
    """The examples of every session, spread evenly over them when ``max_examples`` is set
    (neighbouring windows are near copies of each other: spreading keeps the set diverse)."""
    rows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    for root in roots:
        rows.extend(_examples(load_session(root), labels, settle_s, max_age_s))
    if not rows:
        raise SessionError(
            "the sessions hold no labelled example with all three modalities: record with the camera "
            "and microphone working, and with --label where the rig cannot know the intent"
        )
    if max_examples is not None and len(rows) > max_examples:
        rows = [rows[i] for i in np.linspace(0, len(rows) - 1, max_examples).round().astype(int)]
    intent, rgb, depth, audio = zip(*rows)
    return TaskBatch(
        np.array(intent, np.int64),
        np.full((len(rows), 3), UNKNOWN_CUE, np.int64),
        np.stack(rgb),
        np.stack(depth),
        np.stack(audio),
    )


def _examples(session: Session, labels: tuple[str, ...], settle_s: float, max_age_s: float):
    label_times = [t for t, _ in session.labels]
    frames = {m: ([t for t, _ in f], [d for _, d in f]) for m, f in session.frames.items()}
    for t, window in session.windows:
        i = bisect.bisect_right(label_times, t) - 1
        if i < 0 or t - label_times[i] < settle_s or session.labels[i][1] not in labels:
            continue
        picked = []
        for m in ("rgb", "depth"):
            times, data = frames[m]
            j = bisect.bisect_right(times, t) - 1
            if j < 0 or t - times[j] > max_age_s:
                break
            picked.append(data[j])
        else:
            yield labels.index(session.labels[i][1]), picked[0], picked[1], np.asarray(window, np.float32)
