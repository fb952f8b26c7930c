"""The run's health as data, for whatever publishes it beside the results (the Zenoh bus, an MCAP
log): the same facts systemd's STATUS line says, as a dict a program can read.

``HealthBeat`` takes one snapshot every period on a thread of its own and hands it to each
consumer (an object with ``health(snapshot)``): the tick never computes any of it.
"""

from __future__ import annotations

import threading
import time

from edgefusion import log
from edgefusion.backends.fallback import degraded_mark


def snapshot(runtime, rate_hz: float, telemetry=None) -> dict:
    """Sensor states (by stream, with the reason and event counters), the backend and whether it
    is degraded, the loop's counters, what the sinks wrote and lost, and the board's telemetry."""
    sensors = {}
    for stream, sensor in runtime.sensors.items():
        state, why = sensor.state(runtime.max_age_s[stream])
        sensors[stream] = {
            "state": state.value,
            "reason": why or None,
            "counters": {k: n for k, n in sorted(sensor.counters.items()) if n},
            "dropped": {k: n for k, n in sensor.dropped.items() if n},
        }
    backend = runtime.backend
    writer = runtime.writer
    health = {
        "t": time.time(),
        "ticks": runtime.ticks,
        "rate_hz": round(rate_hz, 3),
        "late": runtime.late,
        "overruns": runtime.overruns,
        "invalid": runtime.invalid,
        "backend": {
            "name": backend.name,
            "precision": backend.precision,
            "failed": runtime.backend_failed,
            "degraded": degraded_mark(backend) or None,
        },
        "sensors": sensors,
        "degraded": sorted(m for m, s in sensors.items() if s["state"] != "OK"),
        "results_lost": writer.results_lost if writer is not None else 0,
        "sinks": writer.stats() if writer is not None else [],
    }
    if telemetry is not None:
        latest = telemetry.latest
        health["telemetry"] = {
            "temperatures_c": latest.temperatures_c,
            "gpu_load": latest.gpu_load,
            "power_w": latest.total_w if latest.power_w else None,
            "throttled": telemetry.throttled,
        }
    return health


class HealthBeat:
    """Every ``period_s``, a snapshot to each consumer. A consumer that raises is said once per
    kind of error and kept: the next beat tries it again."""

    def __init__(self, runtime, consumers: tuple, period_s: float, telemetry=None):
        self.runtime, self.consumers, self.period_s, self.telemetry = runtime, consumers, period_s, telemetry
        self._stop = threading.Event()
        self._said: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def start(self) -> None:
        if self.consumers:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        ticks, t_ticks = self.runtime.ticks, time.monotonic()
        while not self._stop.wait(self.period_s):
            now, n = time.monotonic(), self.runtime.ticks
            rate = (n - ticks) / max(now - t_ticks, 1e-9)
            ticks, t_ticks = n, now
            try:
                health = snapshot(self.runtime, rate, self.telemetry)
            except Exception as err:  # a bug here must not end the beat for good
                self._say(f"the health could not be taken: {type(err).__name__}: {err}")
                continue
            for consumer in self.consumers:
                try:
                    consumer.health(health)
                except Exception as err:
                    self._say(f"the health could not be published ({consumer.name}: {type(err).__name__}: {err})")

    def _say(self, line: str) -> None:
        key = line.split(":", 1)[0] + line.split("(")[-1].split(":")[0]
        if key not in self._said:
            self._said.add(key)
            log.warning(line)
