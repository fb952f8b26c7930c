"""Configuration and fault scripts: wrong input is one clear line, right input is taken as written."""

import pytest

from edgefusion.config import load_config, parse_config
from edgefusion.errors import ConfigError, EdgefusionError
from edgefusion.sensors.faults import Fault, active_fault, parse_faults


def test_fault_spec_parses():
    faults = parse_faults("rgb:stop@4-9, audio:nan@6-7.5")
    assert faults == (Fault("rgb", "stop", 4.0, 9.0), Fault("audio", "nan", 6.0, 7.5))
    assert active_fault(faults, "rgb", 4.0) == "stop" and active_fault(faults, "rgb", 9.0) is None
    assert parse_faults("") == ()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("rgb-stop@4-9", "not STREAM:KIND@START-END"),
        ("lidar:stop@1-2", "unknown stream 'lidar'"),
        ("rgb:explode@1-2", "unknown kind 'explode'"),
        ("rgb:stop@5-2", "START < END"),
        ("rgb:stop@a-b", "not STREAM:KIND@START-END"),
        ("rgb:stop@1-3,rgb:nan@2-4", r"fault 'rgb:nan@2-4' overlaps rgb:stop@1-3: one fault at a time per stream"),
        ("audio:frozen@1-9,audio:frozen@2-3", "overlaps audio:frozen@1-9"),
        ("depth:noise@4-6,rgb:stop@0-9,depth:stall@0-4.5", "overlaps depth:noise@4-6"),
    ],
)
def test_bad_fault_spec_is_one_clear_line(spec, message):
    with pytest.raises(EdgefusionError, match=message) as err:
        parse_faults(spec)
    assert "\n" not in str(err.value)


def test_faults_may_meet_on_one_modality_and_overlap_across_modalities():
    faults = parse_faults("rgb:stop@1-3,rgb:frozen@3-4,audio:frozen@2-5,depth:nan@0-9")
    assert [active_fault(faults, "rgb", t) for t in (2.9, 3.0, 4.0)] == ["stop", "frozen", None]
    assert active_fault(faults, "audio", 2.5) == "frozen" and active_fault(faults, "depth", 2.5) == "nan"


def test_overlapping_faults_are_refused_by_the_cli_in_one_line(tmp_path):
    from cli_check import cli, refused

    refused(cli("demo", "--faults", "rgb:stop@1-3,rgb:frozen@2-4", "--seconds", "1"), "overlaps rgb:stop@1-3")
    config = tmp_path / "robot.toml"
    config.write_text('[source]\nfaults = "audio:nan@0-2,audio:stall@1-3"\n[output]\nstdout = false\n')
    refused(cli("run", "--config", str(config), "--seconds", "1"), "audio:stall@1-3", "overlaps audio:nan@0-2")


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


def test_sections_and_faults_for_streams_the_bundle_does_not_use_are_ignored_with_one_warning(capsys):
    from stream_specs import DEPTH_AUDIO

    from edgefusion.rigs import make_rig

    cfg = parse_config(
        {
            "source": {"faults": "rgb:stop@1-2,depth:stop@1-2"},
            "sensors": {"rgb": {"offset_ms": 20}, "depth": {"offset_ms": 30}},
            "camera": {"width": 848},
        },
        "robot.toml",
    )
    assert cfg.given == {"source", "camera", "sensors.rgb", "sensors.depth"}
    rig = make_rig(cfg, DEPTH_AUDIO, ("a", "b"))
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "ignored" in line] == [
        "edgefusion: config [sensors.rgb] ignored: the bundle uses no rgb stream",
        "edgefusion: faults on rgb ignored: the bundle uses no rgb stream (it uses depth, audio)",
    ]
    assert set(rig.sensors) == {"depth", "audio"} and rig.sensors["depth"].offset_s == pytest.approx(0.03)
    assert [f.stream for f in rig.sensors["depth"]._stream.faults] == ["depth"]
