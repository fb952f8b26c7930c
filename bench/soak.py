"""Soak: the runtime on the simulated rig with random faults for a long time (a benchmark, not a test).

    python bench/soak.py --minutes 10 [--seed 1] [--json]

Every few seconds a random fault (stop, stall, frozen, nan, noise, jump) hits a random modality
for 0.5-4 s. Reports RSS over time (it must stay flat: bounded queues, no leak per fault), the
tick rate, faults injected, recoveries seen (a modality present again after a fault), results
written and dropped, and samples dropped by kind.
"""

from __future__ import annotations

import argparse
import json
import resource
import threading
import time

import numpy as np

from edgefusion.backends import make_backend
from edgefusion.bundle import default_bundle_path, load_bundle
from edgefusion.config import Config
from edgefusion.loop import Runtime
from edgefusion.modalities import MODALITIES
from edgefusion.rigs import make_rig
from edgefusion.sensors.faults import FAULT_KINDS
from edgefusion.sinks import Sink


def random_faults(seconds: float, seed: int) -> str:
    rng = np.random.default_rng(seed)
    items, t = [], 3.0
    while t < seconds - 5:
        length = float(rng.uniform(0.5, 4.0))
        items.append(f"{rng.choice(MODALITIES)}:{rng.choice(FAULT_KINDS)}@{t:.2f}-{t + length:.2f}")
        t += length + float(rng.uniform(1.0, 6.0))
    return ",".join(items)


class _Counter(Sink):
    """Counts lines and presence recoveries, holding nothing per tick."""

    def __init__(self):
        self.lines = 0
        self.recoveries = dict.fromkeys(MODALITIES, 0)
        self._absent = dict.fromkeys(MODALITIES, False)

    def write(self, line: str) -> None:
        self.lines += 1
        present = json.loads(line)["present"]
        for m in MODALITIES:
            if present[m] and self._absent[m]:
                self.recoveries[m] += 1
            self._absent[m] = not present[m]

    def close(self) -> None:
        pass


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def soak(minutes: float, seed: int) -> dict:
    seconds = minutes * 60
    cfg = Config()
    cfg.source.faults = random_faults(seconds, seed)
    bundle = load_bundle(default_bundle_path())
    rig = make_rig(cfg, bundle.modalities, bundle.labels)
    backend = make_backend("onnxruntime", bundle, "fp32")
    counter = _Counter()
    runtime = Runtime(backend, rig.sensors, cfg.max_age_s(), cfg.runtime.tick_hz, (counter,))
    stop = threading.Event()
    rss: list[tuple[float, float]] = []

    def sample_rss() -> None:
        while not stop.wait(10.0):
            rss.append((round(time.monotonic() - t0, 1), round(rss_mb(), 1)))

    backend.activate()
    t0 = rig.start()
    runtime.start()
    threading.Thread(target=sample_rss, daemon=True).start()
    try:
        runtime.run(stop, seconds)
    finally:
        stop.set()
        runtime.stop()
        rig.close()
    elapsed = time.monotonic() - t0
    steady = [mb for t, mb in rss if t >= 60] or [mb for _, mb in rss]
    return {
        "minutes": round(elapsed / 60, 2),
        "faults_injected": len(cfg.source.faults.split(",")),
        "ticks": runtime.ticks,
        "tick_rate_hz": round(runtime.ticks / elapsed, 3),
        "overruns": runtime.overruns,
        "results_written": counter.lines,
        "results_dropped": runtime.writer.results_lost,
        "recoveries": counter.recoveries,
        "samples_dropped": {m: dict(s.dropped) for m, s in rig.sensors.items()},
        "rss_mb": rss,
        # After the first minute (imports, arenas, caches): a leak shows as a trend, not a range.
        "rss_range_after_1_min_mb": round(max(steady) - min(steady), 1) if steady else None,
        "rss_end_minus_1_min_mb": round(steady[-1] - steady[0], 1) if steady else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    r = soak(args.minutes, args.seed)
    if args.json:
        print(json.dumps(r))
        return
    print(
        f"{r['minutes']} min, {r['faults_injected']} faults: {r['ticks']} ticks at {r['tick_rate_hz']} Hz "
        f"({r['overruns']} overruns); results written {r['results_written']}, dropped {r['results_dropped']}"
    )
    print(f"recoveries {r['recoveries']}; samples dropped {r['samples_dropped']}")
    print(
        f"RSS MB over time {r['rss_mb']}; after the first minute: range {r['rss_range_after_1_min_mb']} MB, "
        f"end minus start {r['rss_end_minus_1_min_mb']} MB"
    )


if __name__ == "__main__":
    main()
