"""The watchdog gate: WATCHDOG=1 only while ticks progress, and the health as STATUS=.

systemd restarts a service whose pings stop. Pinging from a timer alone would keep a hung loop
alive forever, so each ping is earned: the loop must have ticked since the last one. The same
thread writes a one-line health summary (``systemctl status`` shows it) at each beat.
"""

from __future__ import annotations

import threading
import time

import orjson

from edgefusion import log
from edgefusion.backends.fallback import degraded_mark
from edgefusion.modalities import STREAMS
from edgefusion.service.notify import Notifier
from edgefusion.sinks import Sink


class LastLine(Sink):
    """A result sink that keeps only the newest line, for the status (read every few seconds,
    parsed then; the tick keeps no result alive for it)."""

    def __init__(self):
        self.line: str | None = None

    def write(self, line: str) -> None:
        self.line = line

    def close(self) -> None:
        pass


def sensor_events(sensors: dict) -> str:
    """What the sensors have been through, for STATUS: each one's non-zero event counters and
    drops by kind, e.g. ``rgb reconnects 2, device_errors 2, frozen dropped 41``; "" if none.

    Keyed by stream (``sensors`` is the rig's), like the config's sections and the fault specs:
    these are the hardware's events, whichever modality the stream feeds."""
    parts = []
    for m in STREAMS:
        source = sensors.get(m)
        if source is None:
            continue
        events = [f"{k} {n}" for k, n in sorted(source.counters.items()) if n]
        events += [f"{k} dropped {n}" for k, n in source.dropped.items() if n]
        if events:
            parts.append(f"{m} {', '.join(events)}")
    return "; ".join(parts)


def status_line(runtime, last_line: str | None, rate_hz: float, telemetry=None) -> str:
    """The health in one line; a backend that is not what the config asked for is said first
    ("DEGRADED onnxruntime int8 (asked for tensorrt int8); ..."): `systemctl status` cuts long lines."""
    mark = degraded_mark(runtime.backend)
    if last_line is None:
        return "; ".join(x for x in (mark, "starting: no tick yet") if x)
    last = orjson.loads(last_line)
    sensors = ", ".join(f"{m} {state}" for m, state in last["sensors"].items())  # by modality name
    if last["label"] is None:  # no answer: its reason, not a confidence
        intent = f"intent - ({last['reason']})"
    else:
        intent = f"intent {last['label']} {last['confidence']:.0%}"
    line = (
        (f"{mark}; " if mark else "") + f"{rate_hz:.1f} ticks/s; {sensors}; {intent}; "
        f"latency {last['latency_ms']:.2f} ms; late {runtime.late}, overruns {runtime.overruns}"
    )
    events = sensor_events(runtime.sensors)
    if events:
        line += f"; {events}"
    if telemetry is not None:
        line += f"; {telemetry.latest.line()}" + (" (throttled)" if telemetry.throttled else "")
    return line


class Heartbeat:
    def __init__(
        self,
        notifier: Notifier,
        runtime,
        interval_s: float | None,
        last: LastLine,
        status_every_s: float = 5.0,
        telemetry=None,
    ):
        """``interval_s``: how often to ping (half the watchdog timeout), None for no watchdog;
        ``last``: a sink of the runtime's, for the status line."""
        self.notifier, self.runtime, self.last, self.telemetry = notifier, runtime, last, telemetry
        self.interval_s, self.status_every_s = interval_s, status_every_s
        self.pings = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        if self.notifier.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        try:
            self._beat()
        except OSError as err:  # systemd's socket is gone: no more pings, so systemd acts
            log.error(f"watchdog and status pings stopped: {err}")

    def _beat(self) -> None:
        period = min(x for x in (self.interval_s, self.status_every_s) if x is not None)
        ticks, t_status, t_ticks = self.runtime.ticks, 0.0, time.monotonic()
        while not self._stop.wait(period):
            now, n = time.monotonic(), self.runtime.ticks
            if self.interval_s is not None and n > ticks:  # earned: the loop moved since the last ping
                self.notifier.watchdog()
                self.pings += 1
            if now - t_status >= self.status_every_s:
                rate = (n - ticks) / max(now - t_ticks, 1e-9)
                self.notifier.status(status_line(self.runtime, self.last.line, rate, self.telemetry))
                t_status = now
            ticks, t_ticks = n, now
