"""The runtime's TOML configuration, checked before anything starts.

Every setting, its default and its meaning is in the README ("Configuration"). A wrong key, a
wrong type or an impossible value is one line naming the key and what would be accepted.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefusion.backends.tensorrt.options import TensorRTOptions
from edgefusion.bus.config import ZenohSection
from edgefusion.errors import ConfigError, EdgefusionError
from edgefusion.modalities import STREAMS
from edgefusion.sensors.microphone import MicrophoneConfig
from edgefusion.sensors.realsense import RealSenseConfig
from edgefusion.service.telemetry import ThermalPolicy

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib


@dataclass
class RuntimeSection:
    bundle: str = ""  # empty: the demo bundle shipped in the package
    backend: str = "onnxruntime"
    precision: str = "fp32"
    tick_hz: float = 30.0
    threads: int = 1
    deadline_ms: float = 20.0  # a tick's work taking longer is reported (and counted)

    def check(self, at: str) -> None:
        from edgefusion.backends import BACKENDS

        _require(self.precision in ("fp32", "fp16", "int8"), at, "precision", "one of fp32, fp16, int8")
        _require(self.backend in BACKENDS, at, "backend", "one of " + ", ".join(BACKENDS))


SOURCE_KINDS = ("simulated", "virtual", "realsense", "replay")


@dataclass
class SourceSection:
    kind: str = "simulated"
    seed: int = 0  # simulated, virtual: the scenario
    faults: str = ""  # simulated, virtual: a fault script (STREAM:KIND@START-END,...)
    path: str = ""  # replay: the session folder
    realtime: bool = True  # replay: at the recorded pace (false: as fast as the ticks run)

    def check(self, at: str) -> None:
        _require(self.kind in SOURCE_KINDS, at, "kind", "one of " + ", ".join(f'"{k}"' for k in SOURCE_KINDS))
        _require(self.kind != "replay" or bool(self.path), at, "path", "a session folder when kind is replay")
        if self.faults:
            from edgefusion.sensors.faults import parse_faults

            _require(self.kind in ("simulated", "virtual"), at, "faults", "empty unless kind is simulated or virtual")
            parse_faults(self.faults)


@dataclass
class SensorSection:
    max_age_ms: float = 100.0  # older than this: the modality counts as absent
    offset_ms: float = 0.0  # added to the sensor's timestamps (from time-offset calibration)


@dataclass
class OutputSection:
    stdout: bool = True
    file: str = ""  # a JSON-lines file, rotated by size; empty: no file
    max_bytes: int = 10_000_000
    backups: int = 3
    flush_ms: float = 50.0  # results reach the sinks in batches at most this old
    health_s: float = 1.0  # how often the health goes to the sinks that take it (Zenoh, MCAP)
    mcap: str = ""  # an .mcap log of results and health (Foxglove opens it); empty: none
    mcap_inputs_hz: float = 0.0  # the model's inputs into the .mcap this often; 0: none
    zenoh: ZenohSection = field(default_factory=ZenohSection)  # the [output.zenoh] table


def _default_sensors() -> dict[str, SensorSection]:
    return {"rgb": SensorSection(100.0), "depth": SensorSection(100.0), "audio": SensorSection(250.0)}


@dataclass
class Config:
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    source: SourceSection = field(default_factory=SourceSection)
    sensors: dict[str, SensorSection] = field(default_factory=_default_sensors)
    output: OutputSection = field(default_factory=OutputSection)
    camera: RealSenseConfig = field(default_factory=RealSenseConfig)  # source kind "realsense"
    microphone: MicrophoneConfig = field(default_factory=MicrophoneConfig)  # source kind "realsense"
    thermal: ThermalPolicy = field(default_factory=ThermalPolicy)
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)  # [runtime] backend "tensorrt"
    # The tables the file gave ("camera", "sensors.rgb", ...): one for a stream the bundle does
    # not use is ignored with a warning (rigs.py); defaults are never warned about.
    given: frozenset[str] = frozenset()

    def max_age_s(self) -> dict[str, float]:
        return {m: s.max_age_ms / 1000 for m, s in self.sensors.items()}


# Every number of every table, with the range a run can live with (both ends included): NaN, inf,
# 1e-300 ticks per second, a negative count or 10**18 backups are refused here, in one line,
# not found out later as an overflow, a hang or a traceback. A test checks that no number is left out.
LIMITS: dict[type, dict[str, tuple[float, float, str]]] = {
    RuntimeSection: {
        "tick_hz": (0.01, 1000, "ticks per second"),
        "threads": (0, 256, "0 = the library's default"),
        "deadline_ms": (0.001, 60_000, "milliseconds"),
    },
    SourceSection: {"seed": (0, 2**31 - 1, "a scenario seed")},
    SensorSection: {
        "max_age_ms": (1, 60_000, "milliseconds"),
        "offset_ms": (-10_000, 10_000, "milliseconds"),
    },
    OutputSection: {
        "max_bytes": (1024, 2**40, "bytes"),
        "backups": (0, 1000, "rotated files kept"),
        "flush_ms": (1, 1000, "milliseconds"),
        "health_s": (0.1, 3600, "seconds"),
        "mcap_inputs_hz": (0, 30, "input snapshots per second; 0 = none"),
    },
    ZenohSection: {
        "queue": (1, 1_000_000, "results"),
        "ros2_domain": (0, 232, "a ROS_DOMAIN_ID"),
    },
    RealSenseConfig: {
        "width": (1, 4096, "pixels; a mode the camera has, e.g. 640"),
        "height": (1, 4096, "pixels; a mode the camera has, e.g. 480"),
        "fps": (1, 1000, "frames per second; a mode the camera has, e.g. 30"),
        "retries": (1, 1000, "frame timeouts in a row"),
    },
    MicrophoneConfig: {
        "rate": (0, 1_000_000, "Hz; 0 = the device's own"),
        "channels": (1, 32, "channels"),
        "block_ms": (1, 100, "milliseconds"),
        "stall_ms": (500, 3_600_000, "milliseconds"),
    },
    ThermalPolicy: {
        "throttle_c": (-40, 150, "°C"),
        "resume_c": (-40, 150, "°C"),
        "throttled_hz": (0.01, 1000, "ticks per second"),
    },
    TensorRTOptions: {
        "workspace_mb": (16, 1 << 20, "MiB of builder workspace"),
        "max_cache_mb": (64, 1 << 22, "MiB of cached engines"),
    },
}


def _check_limits(cls, values: dict, at: str) -> None:
    """Each number in its range; NaN and inf fail every range."""
    for key, value in values.items():
        if key in LIMITS.get(cls, {}):
            lo, hi, unit = LIMITS[cls][key]
            _require(lo <= value <= hi, at, key, f"between {_number(lo)} and {_number(hi)} ({unit}), got {value!r}")


def _number(x: float) -> str:
    """A range's end as written in LIMITS: 1048576 in full, not 1.04858e+06."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _require(ok: bool, at: str, key: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"{at}: {key} must be {what}")


_TYPE_NAMES = {float: "a float", int: "an int", str: "a str", bool: "a bool", tuple: "a list of strings"}


def _as_float(value: int) -> float:
    """A TOML integer where a float goes; one beyond float's range is infinite (and refused)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _section(cls, raw: Any, at: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{at} must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{at}: unknown key {unknown[0]!r}; valid keys: {', '.join(fields)}")
    values = {}
    for name, value in raw.items():
        expected = type(getattr(cls(), name))
        if expected is float and type(value) is int:
            value = _as_float(value)
        if expected is tuple and type(value) is list:  # a TOML array
            if not all(isinstance(x, str) for x in value):
                raise ConfigError(f"{at}: {name} must be a list of strings, got {value!r}")
            value = tuple(value)
        if type(value) is not expected:
            raise ConfigError(f"{at}: {name} must be {_TYPE_NAMES[expected]}, got {type(value).__name__} {value!r}")
        values[name] = value
    _check_limits(cls, values, at)
    section = cls(**values)
    try:
        if hasattr(section, "check"):  # the rules beyond each number's range
            section.check(at)
    except EdgefusionError as err:  # a driver's own type raises its own error, a fault script's names no file
        message = str(err)
        raise ConfigError(message if message.startswith(at) else f"{at}: {message}") from None
    return section


def parse_config(raw: dict, where: str = "config") -> Config:
    tables = {
        "runtime": RuntimeSection,
        "source": SourceSection,
        "output": OutputSection,
        "camera": RealSenseConfig,
        "microphone": MicrophoneConfig,
        "thermal": ThermalPolicy,
        "tensorrt": TensorRTOptions,
    }
    unknown = sorted(set(raw) - {*tables, "sensors"})
    if unknown:
        raise ConfigError(f"{where}: unknown section [{unknown[0]}]; valid: {', '.join([*tables, 'sensors'])}")
    nested = {}  # tables inside a table: [output.zenoh]
    if isinstance(raw.get("output"), dict) and "zenoh" in raw["output"]:
        raw = {**raw, "output": dict(raw["output"])}
        nested["zenoh"] = _section(ZenohSection, raw["output"].pop("zenoh"), f"{where}: [output.zenoh]")
    cfg = Config(**{k: _section(cls, raw[k], f"{where}: [{k}]") for k, cls in tables.items() if k in raw})
    if nested:
        cfg.output.zenoh = nested["zenoh"]
    sensors = raw.get("sensors", {})
    if not isinstance(sensors, dict):
        raise ConfigError(f"{where}: sensors must be tables like [sensors.rgb]")
    cfg.given = frozenset([*(k for k in tables if k in raw), *(f"sensors.{m}" for m in sensors)])
    for m, table in sensors.items():
        if m not in STREAMS:
            raise ConfigError(f"{where}: unknown sensor [sensors.{m}]; valid: {', '.join(STREAMS)}")
        defaults = dataclasses.asdict(cfg.sensors[m])
        cfg.sensors[m] = _section(
            SensorSection, {**defaults, **table} if isinstance(table, dict) else table, f"{where}: [sensors.{m}]"
        )
    return cfg


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file; see the README's Configuration section") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; give a TOML config file") from None
    except ValueError:  # a number of thousands of digits: too long for int()
        raise ConfigError(f"{path}: not valid TOML: a number too long to read; give numbers of sane size") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply; give a TOML config file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror}); give a readable TOML config file") from None
    return parse_config(raw, str(path))


def set_sensor_offset(path: str | Path, modality: str, offset_ms: float) -> None:
    """Write ``[sensors.<modality>] offset_ms`` into a config file, keeping the rest of it (and
    its comments) as it is; the result is validated before it replaces the file."""
    from edgefusion.atomic import atomic_write

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    lines = text.splitlines()
    header, line = f"[sensors.{modality}]", f"offset_ms = {offset_ms:.2f}"
    starts = [i for i, x in enumerate(lines) if x.split("#")[0].strip() == header]
    if not starts:
        lines += ["", header, line]
    else:
        end = next((j for j in range(starts[0] + 1, len(lines)) if lines[j].lstrip().startswith("[")), len(lines))
        keys = [j for j in range(starts[0] + 1, end) if lines[j].split("=")[0].strip() == "offset_ms"]
        if keys:
            lines[keys[0]] = line
        else:
            lines.insert(starts[0] + 1, line)
    new = "\n".join(lines).lstrip("\n") + "\n"
    try:
        parse_config(tomllib.loads(new), str(path))
    except tomllib.TOMLDecodeError as err:  # the file's own TOML was read fine: the edit is what failed
        raise ConfigError(
            f"{path}: cannot add the offset to this file's layout ({err}); write {header} {line} by hand"
        ) from None
    try:
        with atomic_write(path) as f:
            f.write(new.encode())
    except OSError as err:
        raise ConfigError(f"{path}: cannot write: {err}") from None
