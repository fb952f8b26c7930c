"""Configuration and fault scripts: wrong input is one clear line, right input is taken as written."""

import pytest

from edgefusion.config import ConfigError, load_config, parse_config
from edgefusion.errors import EdgefusionError
from edgefusion.sensors.faults import Fault, active_fault, parse_faults


def test_fault_spec_parses():
    faults = parse_faults("rgb:stop@4-9, audio:nan@6-7.5")
    assert faults == (Fault("rgb", "stop", 4.0, 9.0), Fault("audio", "nan", 6.0, 7.5))
    assert active_fault(faults, "rgb", 4.0) == "stop" and active_fault(faults, "rgb", 9.0) is None
    assert parse_faults("") == ()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("rgb-stop@4-9", "not MODALITY:KIND@START-END"),
        ("lidar:stop@1-2", "unknown modality 'lidar'"),
        ("rgb:explode@1-2", "unknown kind 'explode'"),
        ("rgb:stop@5-2", "START < END"),
        ("rgb:stop@a-b", "not MODALITY:KIND@START-END"),
    ],
)
def test_bad_fault_spec_is_one_clear_line(spec, message):
    with pytest.raises(EdgefusionError, match=message) as err:
        parse_faults(spec)
    assert "\n" not in str(err.value)


def test_config_defaults_and_overrides(tmp_path):
    path = tmp_path / "edgefusion.toml"
    path.write_text('[runtime]\ntick_hz = 15\nprecision = "int8"\n[sensors.audio]\nmax_age_ms = 400\n')
    cfg = load_config(path)
    assert cfg.runtime.tick_hz == 15.0 and cfg.runtime.precision == "int8"
    assert cfg.sensors["audio"].max_age_ms == 400 and cfg.sensors["rgb"].max_age_ms == 100
    assert cfg.max_age_s()["audio"] == pytest.approx(0.4)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"runtime": {"tick_hz": 0}}, r"\[runtime\]: tick_hz must be between 0.01 and 1000"),
        ({"runtime": {"tick_hz": "fast"}}, "tick_hz must be a float, got str"),
        ({"runtime": {"tickhz": 30}}, "unknown key 'tickhz'; valid keys: bundle, backend"),
        ({"runtime": {"precision": "fp8"}}, "precision must be one of fp32, fp16, int8"),
        ({"sensorz": {}}, r"unknown section \[sensorz\]"),
        ({"sensors": {"lidar": {}}}, r"unknown sensor \[sensors.lidar\]"),
        ({"sensors": {"rgb": {"max_age_ms": -1}}}, "max_age_ms must be between 1 and 60000"),
        ({"output": {"stdout": "yes"}}, "stdout must be a bool"),
    ],
)
def test_bad_config_is_one_clear_line(raw, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_config(raw, "edgefusion.toml")
    assert "\n" not in str(err.value) and str(err.value).startswith("edgefusion.toml")


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[runtime\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
