"""The demo's live terminal view: sensor states, the intent, confidence, latency.

On a terminal one status line is redrawn in place and sensor state changes are printed as
events; when stdout is not a terminal (a log, journald) the status is printed once a second
instead, with no control characters.
"""

from __future__ import annotations

import sys
from typing import TextIO

_SHORT = {"OK": "ok", "STALE": "stale", "FAILED": "FAILED", "RECONNECTING": "reconn"}


class LiveView:
    def __init__(self, truth=None, stream: TextIO | None = None):
        self.t0 = 0.0  # set to the rig clock's start when the run begins
        self.truth = truth  # rigs.Truth, where the rig knows what the person means
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._states: dict[str, str] = {}
        self._last_print = -1.0

    def __call__(self, r: dict) -> None:
        t = r["t"] - self.t0
        for m, state in r["sensors"].items():  # the bundle's modalities, in its order
            if self._states.get(m) != state:
                if m in self._states:
                    self._line(f"{t:6.1f}s  {m:<5} {self._states[m]} -> {state}")
                self._states[m] = state
        if t - self._last_print < (0.1 if self.tty else 1.0):
            return
        self._last_print = t
        # A modality whose sensor is fine but whose samples are not used (e.g. NaN) shows "-".
        sensors = " ".join(f"{m}:{_SHORT[r['sensors'][m]] + ('' if r['present'][m] else '-'):<7}" for m in r["sensors"])
        if r["label"] is None:  # no answer: say why instead of a confidence
            answer = f"intent (none)    {r['reason']}"
        else:
            answer = f"intent {r['label']:<9} {r['confidence']:5.0%}"
        status = f"{t:6.1f}s  {sensors} {answer}  {r['latency_ms']:5.2f} ms"
        if self.truth is not None:
            status += f"  (asked: {self.truth(t)[0]})"
        if self.tty:
            self.stream.write("\r\x1b[K" + status)
            self.stream.flush()
        else:
            self.stream.write(status + "\n")

    def _line(self, text: str) -> None:
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()
