"""Bad inputs by class, through the real CLI: every config key with every wrong type and absurd
value, broken config files, bad flag values, unknown and missing flags, bad paths. Each must be
one line on stderr naming what is wrong, exit status 2, no traceback, nothing written.

The config table is generated from the config's own dataclasses, so a key added later is
covered without anyone remembering to list it here."""

from __future__ import annotations

import dataclasses

import pytest
from cli_check import cli, export_cli, refused, snapshot

from edgefusion.config import LIMITS, Config

SECTIONS = {
    "runtime": "runtime",
    "source": "source",
    "output": "output",
    "camera": "camera",
    "microphone": "microphone",
    "thermal": "thermal",
    "tensorrt": "tensorrt",
    "sensors.rgb": "sensors",
    "output.zenoh": "output.zenoh",
}


def _fields():
    """(TOML table, its dataclass, field name, default) for every key of the config; a table
    inside a table ([output.zenoh]) is a table of its own."""
    cfg = Config()
    for table, attr in SECTIONS.items():
        if attr == "sensors":
            section = cfg.sensors["rgb"]
        else:
            section = cfg
            for part in attr.split("."):
                section = getattr(section, part)
        for f in dataclasses.fields(section):
            default = getattr(section, f.name)
            if not dataclasses.is_dataclass(default):
                yield table, type(section), f.name, default


def _bad_values(cls, key: str, default) -> list[str]:
    """TOML values that must be refused for this key: wrong types, then absurd numbers."""
    if isinstance(default, bool):
        return ['"yes"', "1", "[true]"]
    if isinstance(default, str):
        return ["5", '["a"]', "{ a = 1 }"]
    if isinstance(default, tuple):
        return ['"spatial"', "[1]", "{ a = 1 }"]
    lo, hi, _ = LIMITS[cls][key]
    if isinstance(default, float):
        absurd = ["nan", "inf", "-inf", "1e300", "-1e300", "1e-300" if lo > 0 else "-1e-300" if lo == 0 else "-1e299"]
        return ['"30"', "[1.0]", "true", *absurd, "1" + "0" * 400]  # an integer beyond any float
    return ['"3"', "{ a = 1 }", "2.5", str(int(lo) - 1), str(int(hi) + 1), str(10**30), "-" + str(10**30)]


CONFIG_CASES = [
    pytest.param(table, key, value, id=f"[{table}] {key} = {value[:20]}")
    for table, cls, key, default in _fields()
    for value in _bad_values(cls, key, default)
]


def test_every_number_in_the_config_has_a_range():
    """A numeric key without a LIMITS entry would let NaN, inf and 1e300 through."""
    numeric = [
        (cls.__name__, key)
        for _, cls, key, default in _fields()
        if isinstance(default, (int, float)) and not isinstance(default, bool)
    ]
    assert numeric and all(key in LIMITS.get(_cls(name), {}) for name, key in numeric)


def _cls(name: str):
    return next(cls for _, cls, _, _ in _fields() if cls.__name__ == name)


def _refused_with_nothing_written(tmp_path, args: list[str], *words: str, runner=cli, **kw) -> str:
    """``runner(*args)`` is refused in one line naming ``words``, and tmp_path is unchanged."""
    before = snapshot(tmp_path)
    line = refused(runner(*args, **kw), *words)
    assert snapshot(tmp_path) == before, "a refused command writes nothing"
    return line


@pytest.mark.parametrize("table, key, value", CONFIG_CASES)
def test_a_bad_config_value(tmp_path, table, key, value):
    cfg = tmp_path / "robot.toml"
    cfg.write_text(f"[{table}]\n{key} = {value}\n")
    args = ["run", "--config", str(cfg), "--seconds", "1"]
    line = _refused_with_nothing_written(tmp_path, args, str(cfg), f"[{table}]", key)
    assert "must be" in line


@pytest.mark.parametrize(
    "toml, words",
    [
        ('[runtime]\nprecision = "fp8"', ("precision must be one of",)),
        ('[runtime]\nbackend = "tensorflow"', ("backend must be one of", "onnxruntime, tensorrt")),
        ('[source]\nkind = "lidar"', ("kind must be one of",)),
        ('[source]\nfaults = "rgb:melt@1-2"', ("unknown kind 'melt'",)),
        ('[source]\nkind = "replay"\npath = "s"\nfaults = "rgb:stop@1-2"', ("faults must be empty",)),
        ('[camera]\nfilters = ["sharpen"]', ("sharpen",)),
        ("[microphone]\nrate = 500", ("rate must be 0",)),
        ("[thermal]\nthrottle_c = 70\nresume_c = 80", ("resume_c must be below throttle_c",)),
        ("runtime = 5", ("[runtime] must be a table",)),
        ("sensors = 5", ("sensors must be tables",)),
        ("[sensors]\nrgb = 5", ("[sensors.rgb] must be a table",)),
        ("[sensors.lidar]\nmax_age_ms = 5", ("unknown sensor [sensors.lidar]",)),
        ("[gpu]\nx = 1", ("unknown section [gpu]",)),
        ("[runtime]\ntick = 30", ("unknown key 'tick'", "valid keys")),
        ("[runtime]\ntick_hz = 30\ntick_hz = 31", ("not valid TOML",)),
        ("[runtime\n", ("not valid TOML",)),
        ("x = " + "[" * 100_000 + "]" * 100_000, ("not valid TOML",)),
        ("[runtime]\nthreads = " + "9" * 5000, ("not valid TOML", "number too long")),
    ],
    ids=lambda v: v[:30] if isinstance(v, str) else None,
)
def test_a_bad_config_file(tmp_path, toml, words):
    cfg = tmp_path / "robot.toml"
    cfg.write_text(toml)
    _refused_with_nothing_written(tmp_path, ["run", "--config", str(cfg), "--seconds", "1"], str(cfg), *words)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: None, ("no such config file",)),
        (lambda p: p.mkdir(), ("cannot read", "Is a directory")),
        (lambda p: p.write_bytes(b"\x00\xff\xfe\x80 binary"), ("not UTF-8",)),
        (lambda p: p.write_bytes(b"tick_hz = 30\x00"), ("not valid TOML",)),
    ],
    ids=["missing", "a folder", "binary", "a NUL byte"],
)
def test_an_unusable_config_file(tmp_path, make, words):
    cfg = tmp_path / "robot.toml"
    make(cfg)
    for command in (["run", "--config", str(cfg)], ["record", "--out", str(tmp_path / "s"), "--config", str(cfg)]):
        _refused_with_nothing_written(tmp_path, [*command, "--seconds", "1"], str(cfg), *words)


NUMBERS = ["nan", "inf", "-inf", "1e300", "-1", "abc", ""]


@pytest.mark.parametrize(
    "args, words",
    [
        *[(["demo", f"--seconds={v}"], ("--seconds", "must be a number")) for v in [*NUMBERS, "0", "1e-300"]],
        *[(["run", "--config", "x.toml", "--seconds", v], ("--seconds",)) for v in ("nan", "0", "-5")],
        *[(["record", "--out", "s", "--seconds", v], ("--seconds",)) for v in ("inf", "0")],
        *[(["demo", "--seed", v], ("--seed", "whole number")) for v in ("-1", "1.5", str(10**30), "x")],
        *[(["bench", "--ticks", v], ("--ticks",)) for v in ("5", "1e9", "nan", "100.5")],
        (["bench", "--alloc-ticks", "0"], ("--alloc-ticks",)),
        *[(["bench", "--threads", v], ("--threads",)) for v in ("-1", "100000")],
        *[(["eval", "--samples", v], ("--samples",)) for v in ("3", "-7", "1e6", "many")],
        (["demo", "--precision", "fp8"], ("--precision", "invalid choice")),
        (["bench", "--precision", "bf16"], ("--precision", "invalid choice")),
        (["demo", "--rig", "lidar"], ("--rig", "invalid choice")),
        (["demo", "--faults", "rgb:stop@4"], ("STREAM:KIND@START-END",)),
        (["demo", "--faults", "lidar:stop@1-2"], ("lidar",)),
        (["demo", "--source", "lidar"], ("--source",)),
        (["demo", "--source", "replay:"], ("replay:DIR",)),
        (["demo", "--max-speed"], ("--max-speed",)),
        (["record", "--out", "x", "--source", "replay:y"], ("not from a replay",)),
        (["demo", "--bogus"], ("unrecognized arguments: --bogus",)),
        (["info", "--json", "extra"], ("unrecognized arguments: extra",)),
        (["teleport"], ("invalid choice: 'teleport'",)),
        ([], ("required",)),
        (["run"], ("required", "--config")),
        (["record"], ("required", "--out")),
        (["calibrate-offset"], ("required", "--session")),
        (["run", "--config"], ("--config", "expected one argument")),
        (["calibrate-offset", "--session", "/nonexistent"], ("no such session folder",)),
        (["eval", "--plot", "p.png", "--no-noise"], ("drop --no-noise",)),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_a_bad_flag(tmp_path, args, words):
    _refused_with_nothing_written(tmp_path, args, *words, cwd=tmp_path)


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "--fusion", "transformer"], ("unknown fusion 'transformer'",)),
        (["train", "--epochs", "0"], ("--epochs",)),
        (["all", "--epochs", "nan", "--out", "b"], ("--epochs",)),
        (["train", "--train-size", "10"], ("--train-size",)),
        (["compare", "--heldout-size", "3"], ("--heldout-size",)),
        (["all", "--heldout-size", "1e9", "--out", "b"], ("--heldout-size",)),
        (["bundle", "--out", "b", "--name", ""], ("--name",)),
        (["bundle", "--out", "b", "--name", "a\nb"], ("--name",)),
        (["bundle"], ("required", "--out")),
        (["bundle", "--out", "missing/b"], ("--out", "does not exist")),
        (["all", "--fusion", "late", "--out", "b"], ("include lmf",)),
        (["quantize", "--nope"], ("unrecognized arguments",)),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_a_bad_export_flag(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    _refused_with_nothing_written(tmp_path, args, *words, runner=export_cli)


def test_a_checkpoint_that_is_not_one(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "runs" / "lmf").mkdir(parents=True)
    (tmp_path / "runs" / "lmf" / "checkpoint.pt").write_bytes(b"PK\x03\x04 cut short")
    args = ["export", "--runs", str(tmp_path / "runs"), "--fusion", "lmf"]
    _refused_with_nothing_written(tmp_path, args, "checkpoint.pt", "not a checkpoint", runner=export_cli)


def test_export_runs_that_is_a_file_or_under_one(tmp_path):
    """Refused before the minutes of training whose result could not be kept."""
    pytest.importorskip("torch")
    runs = tmp_path / "runs"
    runs.write_text("x")
    for args, words in (
        (["export", "--runs", str(runs)], ("a file is there",)),
        (["train", "--runs", str(runs / "inner")], ("is not a folder",)),
    ):
        _refused_with_nothing_written(tmp_path, args, "--runs", *words, runner=export_cli)


def _bundle_cases(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    return {"missing": tmp_path / "nope", "a file": a_file, "an empty folder": empty}


@pytest.mark.parametrize("case", ["missing", "a file", "an empty folder"])
@pytest.mark.parametrize("command", [["info"], ["demo", "--seconds", "1"], ["eval", "--no-noise"], ["bench"]])
def test_a_bad_bundle_path(tmp_path, case, command):
    bundle = _bundle_cases(tmp_path)[case]
    _refused_with_nothing_written(tmp_path, [*command, "--bundle", str(bundle)], str(bundle))


@pytest.mark.parametrize(
    "args, words",
    [
        (lambda t: ["record", "--out", str(t / "file" / "s")], ("--out", "is a file")),
        (lambda t: ["record", "--out", str(t / "file")], ("--out", "a file is there")),
        (lambda t: ["record", "--out", str(t / "no" / "such" / "s")], ("--out", "does not exist")),
        (lambda t: ["eval", "--plot", str(t)], ("--plot", "a folder")),
        (lambda t: ["eval", "--plot", str(t / "no" / "p.png")], ("--plot", "does not exist")),
        (lambda t: ["bench", "--checkpoint", str(t / "none.pt")], ("--checkpoint", "no such file")),
        (lambda t: ["bench", "--checkpoint", str(t)], ("--checkpoint", "is a folder")),
        (lambda t: ["calibrate-offset", "--session", str(t / "file")], ("file",)),
    ],
    ids=[
        "record into a file's child",
        "record onto a file",
        "record under a missing folder",
        "plot onto a folder",
        "plot under a missing folder",
        "missing checkpoint",
        "checkpoint a folder",
        "session a file",
    ],
)
def test_a_bad_path(tmp_path, args, words):
    (tmp_path / "file").write_text("x")
    _refused_with_nothing_written(tmp_path, args(tmp_path), *words)


def test_results_into_a_folder_that_cannot_be_one(tmp_path):
    for file in (tmp_path / "file" / "results.jsonl", tmp_path):  # under a file; a folder itself
        (tmp_path / "file").write_text("x")
        cfg = tmp_path / "robot.toml"
        cfg.write_text(f'[output]\nstdout = false\nfile = "{file}"\n')
        _refused_with_nothing_written(tmp_path, ["run", "--config", str(cfg), "--seconds", "1"], str(file))


def test_eval_precisions_not_in_the_bundle(tmp_path):
    args = ["eval", "--precisions", "fp32,bf16"]
    _refused_with_nothing_written(tmp_path, args, "'bf16'", "fp32, fp16, int8", cwd=tmp_path)
