"""One measured run of the real loop on a HIL rig: the runtime as ``edgefusion run`` assembles it
(rig, backend, sensors, sink writer), with the rig's faults acting, every result line kept, and the
machine's temperature and power read once a second beside it.

``recovery_s`` and ``detection_s`` read a run's results the way a robot team asks about a fault:
how long until the runtime saw it, and how long after the device came back until its modalities were
present for good.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from edgefusion.backends.base import Backend
from edgefusion.bundle import Bundle
from edgefusion.config import Config
from edgefusion.hil.rigs import FaultWindow, HilRig
from edgefusion.loop import Runtime
from edgefusion.rigs import make_rig
from edgefusion.service.telemetry import Snapshot, Telemetry, make_reader
from edgefusion.sinks import Sink

TELEMETRY_PERIOD_S = 1.0


class _Collect(Sink):
    def __init__(self):
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)

    def close(self) -> None:
        pass


@dataclass
class LoopRun:
    results: list[dict]  # every result line, in tick order
    t0: float  # the rig's start on the monotonic clock; faults are timed from it
    runtime: Runtime  # stopped: its counters (ticks, overruns, late, sensors' dropped) stay readable
    streams: dict[str, str]  # modality name -> the stream feeding it
    telemetry: list[tuple[float, Snapshot]] = field(default_factory=list)  # (s from t0, what was read)

    def at(self) -> list[tuple[float, dict]]:
        """(seconds from t0, result) per tick."""
        return [(r["t"] - self.t0, r) for r in self.results]

    def modalities(self, streams: Sequence[str]) -> list[str]:
        """The bundle's modalities those streams feed."""
        return [m for m, s in self.streams.items() if s in streams]

    def latencies_ms(self, since_s: float = 0.0, until_s: float = float("inf")) -> list[float]:
        return [r["latency_ms"] for t, r in self.at() if since_s <= t < until_s]


def run_loop(
    rig: HilRig,
    bundle: Bundle,
    backend: Backend,
    seconds: float,
    faults: Sequence[FaultWindow] = (),
    base: Config | None = None,
) -> LoopRun:
    """Run the loop on ``rig`` for ``seconds`` with ``faults``; ``backend`` is activated and
    deactivated here. An exception from the loop is raised (the test fails); the rig's devices are
    given back and its processes stopped whatever happens.

    The service's telemetry thread reads the machine once a second, but its thermal policy is not
    applied: the loop ticks at the configured rate, so a run's tick count and latencies say what
    the hardware did at that rate, and the readings show any heat that built up meanwhile."""
    plan = rig.plan(faults, base)
    try:
        cfg = plan.config
        parts = make_rig(cfg, bundle.modalities, bundle.labels)
        try:  # the rig's devices exist from here (the virtual one's sound server runs): closed whatever fails
            collect = _Collect()
            runtime = Runtime(
                backend,
                plan.wrap(parts.sensors),
                cfg.max_age_s(),
                cfg.runtime.tick_hz,
                (collect,),
                flush_s=cfg.output.flush_ms / 1000,
                deadline_ms=cfg.runtime.deadline_ms,
            )
            reader = make_reader()  # before the clock starts: connecting to jtop's daemon takes a while
            try:
                runtime.start()  # the backend first (TensorRT may build engines for minutes): faults count from t0
                t0 = parts.start()
                plan.start(t0)
                readings: list[tuple[float, Snapshot]] = []
                telemetry = Telemetry(_Recorded(reader, t0, readings), period_s=TELEMETRY_PERIOD_S)
                telemetry.start()
                try:  # until ``seconds`` after t0, the clock the faults keep
                    runtime.run(threading.Event(), seconds - (time.monotonic() - t0))
                finally:
                    telemetry.stop()
            finally:
                runtime.stop()
        finally:
            parts.close()
    finally:
        plan.close()
    results = [orjson.loads(line) for line in collect.lines]
    streams = {s.name: s.sensor for s in bundle.modalities}
    return LoopRun(results, t0, runtime, streams, readings)


class _Recorded:
    """A telemetry reader that keeps every reading with its time from ``t0``: the service's
    ``Telemetry`` keeps only the latest."""

    def __init__(self, reader, t0: float, out: list[tuple[float, Snapshot]]):
        self.reader, self.t0, self.out = reader, t0, out

    def read(self) -> Snapshot:
        snap = self.reader.read()
        self.out.append((time.monotonic() - self.t0, snap))
        return snap


def _names(run: LoopRun, streams: Sequence[str]) -> list[str]:
    """The modalities ``streams`` feed; none is an error: every test of "all of them" would hold at once."""
    names = run.modalities(streams)
    if not names:
        raise ValueError(f"the bundle has no modality fed by {', '.join(streams)}")
    return names


def detection_s(run: LoopRun, streams: Sequence[str], fault_s: float) -> float | None:
    """Seconds from ``fault_s`` to the first tick on which every modality ``streams`` feed is absent."""
    names = _names(run, streams)
    for t, r in run.at():
        if t >= fault_s and not any(r["present"][m] for m in names):
            return t - fault_s
    return None


def recovery_s(run: LoopRun, streams: Sequence[str], back_s: float) -> float | None:
    """Seconds from ``back_s`` (the device given back) to the first tick from which every modality
    ``streams`` feed stays present to the end of the run; None if they never all came back."""
    names = _names(run, streams)
    first = None
    for t, r in run.at():
        if t < back_s:
            continue
        if all(r["present"][m] for m in names):
            first = t if first is None else first
        else:
            first = None
    return None if first is None else first - back_s
