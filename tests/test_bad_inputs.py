"""Bad inputs, as a user meets them on the command line: one line saying what is wrong and what
to do, exit status 2, no traceback, no file half-written. (The loader- and driver-level checks
behind each are tested in test_bundle, test_config_and_faults, test_realsense, test_pyaudio_mic
and test_session; the README's troubleshooting table lists them.)"""

import json
import shutil

import pytest
from cli_check import cli as _cli
from cli_check import refused as _refused

from edgefusion.bundle import default_bundle_path


@pytest.mark.parametrize(
    "toml, words",
    [
        ("[runtime\ntick_hz = 30", ("not valid TOML",)),
        ("[runtime]\ntick = 30", ("unknown key 'tick'", "valid keys")),
        ('[runtime]\ntick_hz = "fast"', ("tick_hz must be a float",)),
        ("[runtime]\ntick_hz = 0", ("tick_hz must be between 0.01 and 1000",)),
        ('[source]\nkind = "replay"', ("path must be a session folder",)),
        ('[camera]\nfilters = ["sharpen"]', ("unknown RealSense filter 'sharpen'",)),
        ("[microphone]\nrate = 5", ("rate must be 0",)),
    ],
)
def test_a_bad_config(tmp_path, toml, words):
    cfg = tmp_path / "robot.toml"
    cfg.write_text(toml)
    _refused(_cli("run", "--config", str(cfg), "--seconds", "1"), str(cfg), *words)


def _damaged_bundle(tmp_path, damage) -> str:
    copy = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), copy)
    damage(copy)
    return str(copy)


def _truncate(path):
    path.write_bytes(path.read_bytes()[:999])


def _version(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda c: (c / "fp32" / "rgb.onnx").unlink(), ("fp32/rgb.onnx",)),
        (
            lambda c: _truncate(c / "fp16" / "head.onnx"),
            ("fp16/head.onnx",),
        ),
        (_version, ("format version",)),
    ],
    ids=["missing file", "truncated onnx", "unknown format version"],
)
def test_a_bad_bundle(tmp_path, damage, words):
    bundle = _damaged_bundle(tmp_path, damage)
    _refused(_cli("demo", "--seconds", "1", "--bundle", bundle), *words)


def test_record_into_an_unwritable_place_leaves_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _refused(_cli("record", "--out", str(blocker / "session"), "--seconds", "1"), "session")
    assert blocker.read_text() == "x"


def test_named_devices_that_are_not_there(tmp_path):
    pytest.importorskip("pyrealsense2")
    pytest.importorskip("pyaudio")
    cfg = tmp_path / "robot.toml"
    cfg.write_text('[source]\nkind = "realsense"\n[camera]\nserial = "012345678901"\n')
    _refused(_cli("run", "--config", str(cfg), "--seconds", "1"), "012345678901", "not connected")
    cfg.write_text('[source]\nkind = "realsense"\n[microphone]\ndevice = "Studio Mic 7"\n')
    _refused(_cli("run", "--config", str(cfg), "--seconds", "1"), "Studio Mic 7", "available input devices")


def test_a_rate_the_microphone_cannot_give(tmp_path):
    pytest.importorskip("pyaudio")
    pytest.importorskip("pyrealsense2")
    if shutil.which("pulseaudio") is None:
        pytest.skip("needs pulseaudio")
    import os

    from edgefusion.sim.pulse import PulseServer

    cfg = tmp_path / "robot.toml"
    cfg.write_text('[source]\nkind = "realsense"\n[microphone]\nrate = 1000000\n')
    with PulseServer():  # a real capture device, so the rate is what is refused
        r = _cli("run", "--config", str(cfg), "--seconds", "1", env=dict(os.environ))
    _refused(r, "1000000 Hz", "rate = 0")


@pytest.mark.parametrize(
    "args, words",
    [
        (["demo", "--faults", "rgb:stop@4"], ("STREAM:KIND@START-END",)),
        (["demo", "--rig", "virtual", "--faults", "audio:nan@1-2"], ("cannot do audio:nan",)),
        (["demo", "--max-speed"], ("--max-speed",)),
        (["demo", "--source", "replay:"], ("replay:DIR",)),
        (["record", "--out", "x", "--source", "replay:y"], ("not from a replay",)),
        (["calibrate-offset", "--session", "/nonexistent"], ("no such session folder",)),
    ],
)
def test_bad_arguments(args, words):
    _refused(_cli(*args), *words)
