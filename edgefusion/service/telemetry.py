"""Jetson telemetry (temperatures, GPU load, power) on a background thread, and the thermal policy.

jetson-stats (jtop) is used when its daemon runs (an optional extra: it is AGPL-3.0, and its
group is root-equivalent, so the service user is never added to it by default); otherwise the
kernel's own files: thermal zones, the GPU's devfreq load, the INA3221 power monitor's rails.
Readings go into one small snapshot the loop may read at any time; the loop never waits for a
read. Above ``throttle_c`` the policy lowers the tick rate and says so; below ``resume_c`` (a
hysteresis, so it does not flap) the configured rate returns.
"""

from __future__ import annotations

import glob
import os
import threading
from dataclasses import dataclass, field

from edgefusion import log
from edgefusion.errors import ConfigError


@dataclass
class Snapshot:
    temperatures_c: dict[str, float] = field(default_factory=dict)  # thermal zone type → °C
    gpu_load: float | None = None  # 0..1
    power_w: dict[str, float] = field(default_factory=dict)  # rail → W
    source: str = "none"

    @property
    def total_w(self) -> float:
        """The module's input where a rail measures it (VDD_IN on Orin: the others are part of
        it, so a sum would count them twice); the sum of the rails where none does."""
        return self.power_w.get("VDD_IN", sum(self.power_w.values()))

    @property
    def hottest_c(self) -> float | None:
        return max(self.temperatures_c.values(), default=None)

    def line(self) -> str:
        parts = []
        if self.hottest_c is not None:
            parts.append(f"{self.hottest_c:.0f} °C")
        if self.gpu_load is not None:
            parts.append(f"GPU {self.gpu_load:.0%}")
        if self.power_w:
            parts.append(f"{self.total_w:.1f} W")
        return ", ".join(parts) or "no telemetry"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


class SysfsReader:
    """The kernel's files under ``root`` (``/`` on a robot; a fake tree in the tests)."""

    def __init__(self, root: str = "/"):
        self.root = root

    def _glob(self, pattern: str) -> list[str]:
        return sorted(glob.glob(os.path.join(self.root, pattern.lstrip("/"))))

    def read(self) -> Snapshot:
        snap = Snapshot(source="sysfs")
        for zone in self._glob("/sys/class/thermal/thermal_zone*"):
            kind, temp = _read(f"{zone}/type"), _read(f"{zone}/temp")
            if kind and temp and temp.lstrip("-").isdigit() and int(temp) > -40000:  # -40 °C: a zone that is off
                snap.temperatures_c[kind] = int(temp) / 1000
        for path in self._glob("/sys/devices/platform/*gpu*/load") + self._glob("/sys/devices/platform/*/*gpu*/load"):
            load = _read(path)
            if load and load.isdigit():
                snap.gpu_load = int(load) / 1000  # per mille
                break
        for hwmon in self._glob("/sys/bus/i2c/drivers/ina3221*/*/hwmon/hwmon*"):
            for label_path in glob.glob(f"{hwmon}/in*_label"):
                n = label_path.rsplit("/in", 1)[1].split("_")[0]
                label, mv, ma = _read(label_path), _read(f"{hwmon}/in{n}_input"), _read(f"{hwmon}/curr{n}_input")
                if label and mv and ma and mv.isdigit() and ma.isdigit():
                    snap.power_w[label] = int(mv) * int(ma) / 1e6
        return snap


class JtopReader:
    """jetson-stats, where its service runs; raises at construction where it does not."""

    def __init__(self):
        from jtop import jtop  # optional, AGPL-3.0: only where the user installed it

        self._jtop = jtop()
        self._jtop.start()  # JtopException when jtop.service is not active

    def read(self) -> Snapshot:
        j = self._jtop
        snap = Snapshot(source="jtop")
        if not j.ok():
            return snap
        snap.temperatures_c = {k: float(v["temp"]) for k, v in j.temperature.items() if v.get("online", True)}
        loads = [g["status"]["load"] for g in j.gpu.values()]
        snap.gpu_load = max(loads) / 100 if loads else None
        snap.power_w = {k: v["power"] / 1000 for k, v in j.power.get("rail", {}).items()}
        return snap


def make_reader(root: str = "/"):
    try:
        return JtopReader()
    except Exception:  # not installed, no daemon, version mismatch: the kernel's files will do
        return SysfsReader(root)


@dataclass(frozen=True)
class ThermalPolicy:
    """The config's ``[thermal]`` table."""

    throttle_c: float = 85.0  # hottest zone at or above this: tick at throttled_hz
    resume_c: float = 80.0  # at or below this again: the configured rate
    throttled_hz: float = 15.0

    def check(self, at: str) -> None:
        if not self.resume_c < self.throttle_c:
            raise ConfigError(f"{at}: resume_c must be below throttle_c (a hysteresis), got {self.resume_c:g}")
        if not 0 < self.throttled_hz <= 1000:
            raise ConfigError(f"{at}: throttled_hz must be between 0 and 1000")


class Telemetry:
    """Reads every ``period_s`` on its own thread; applies the thermal policy to ``runtime``."""

    def __init__(self, reader, runtime=None, policy: ThermalPolicy = ThermalPolicy(), period_s: float = 1.0):
        self.reader, self.runtime, self.policy, self.period_s = reader, runtime, policy, period_s
        self.latest = Snapshot()
        self.throttled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def step(self) -> None:
        """One read and one policy decision (the thread's body; tests call it directly)."""
        try:
            self.latest = self.reader.read()
        except Exception as err:  # telemetry must never take the service down
            log.warning(f"telemetry read failed: {type(err).__name__}: {err}")
            return
        hot = self.latest.hottest_c
        if self.runtime is None or hot is None:
            return
        if not self.throttled and hot >= self.policy.throttle_c:
            self.throttled = True
            self.runtime.set_rate(min(self.policy.throttled_hz, self.runtime.tick_hz))
            log.warning(f"{hot:.0f} °C >= {self.policy.throttle_c:g} °C: ticking at {self.runtime.rate_hz:g} Hz")
        elif self.throttled and hot <= self.policy.resume_c:
            self.throttled = False
            self.runtime.set_rate(self.runtime.tick_hz)
            log.notice(f"{hot:.0f} °C <= {self.policy.resume_c:g} °C: back to {self.runtime.tick_hz:g} Hz")

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.step()
