"""What a session did: rate, latency, caching, and accuracy against the truth where a rig knows it.

Accuracy counts only settled ticks that gave an answer. With no sensor present a tick says "no
answer" rather than guessing; and for the first second after the person changes intent the
audio window still holds the previous word, so those ticks measure the scenario, not the model.
"""

from __future__ import annotations

import numpy as np

from edgefusion.modalities import pattern_name

SETTLE_S = 1.0


class SessionSummary:
    def __init__(self, truth):
        self.t0 = 0.0  # set to the rig clock's start when the run begins
        self.truth = truth  # rigs.Truth: t from the start → (intent, seconds since it began)
        self.latency: list[float] = []
        self.by_pattern: dict[str, list[int]] = {}
        self.first_t: float | None = None
        self.last_t = 0.0

    def add(self, r: dict) -> None:
        t = r["t"] - self.t0
        self.first_t = t if self.first_t is None else self.first_t
        self.last_t = t
        self.latency.append(r["latency_ms"])
        if self.truth is None or r["label"] is None:  # no truth known, or no answer given
            return
        expected, since = self.truth(t)
        if expected is None or since < SETTLE_S:
            return
        pattern = pattern_name(list(r["present"]), list(r["present"].values()))  # the bundle's modalities
        hits = self.by_pattern.setdefault(pattern, [0, 0])
        hits[0] += r["label"] == expected
        hits[1] += 1

    def report(self, runtime) -> dict:
        backend = runtime.backend  # the one running at the end: a reload may have replaced a degraded one
        stats = backend.stats
        seconds = self.last_t - (self.first_t or 0.0)
        runs = sum(stats.encoder_runs.values())
        lat = np.array(self.latency or [0.0])
        writer = runtime.writer
        return {
            "backend": backend.name,
            "precision": backend.precision,
            "degraded": backend.degraded,  # None: what was asked for; else what was asked, what runs, and why
            "seconds": seconds,
            "ticks": runtime.ticks,
            "tick_rate_hz": (runtime.ticks - 1) / seconds if seconds > 0 else 0.0,
            "overruns": runtime.overruns,
            "late_ticks": runtime.late,
            "latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p99": float(np.percentile(lat, 99)),
            "encoder_runs": dict(stats.encoder_runs),
            "head_runs": stats.head_runs,
            "encoder_runs_saved": 1 - runs / max(1, len(stats.encoder_runs) * stats.head_runs),
            "dropped": {stream: dict(s.dropped) for stream, s in runtime.sensors.items()},  # the hardware's
            "invalid_ticks": runtime.invalid,
            "backend_failed": runtime.backend_failed,
            "backend_restarts": runtime.backend_restarts,
            "sinks": writer.stats() if writer is not None else [],
            "results_lost": writer.results_lost if writer is not None else 0,
            "accuracy_by_pattern": {
                p: {"accuracy": h[0] / h[1], "ticks": h[1]}
                for p, h in sorted(self.by_pattern.items(), key=lambda kv: -kv[1][1])
            },
        }
