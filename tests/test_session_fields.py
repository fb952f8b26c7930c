"""Every field a replay reads from a session is checked: each damaged field or file of a real
recorded session is one line naming ``file:line`` and the field, from the loader and from
``edgefusion demo --source replay:DIR`` (exit 2, no traceback)."""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from cli_check import cli, refused

from edgefusion.errors import SessionError
from edgefusion.session.layout import AUDIO_FILE, EVENTS_FILE, SESSION_FILE, load_session

DELETE = object()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    pytest.importorskip("pyrealsense2")  # the camera file is a RealSense recording
    out = tmp_path_factory.mktemp("fields") / "session"
    r = cli("record", "--out", str(out), "--seconds", "2.5", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    return out


def _events(folder: Path) -> list[bytes]:
    return (folder / EVENTS_FILE).read_bytes().split(b"\n")


def _set(kind: str, name: str, value, nth: int = 0):
    """Damage: field ``name`` of the ``nth`` event of ``kind`` set to ``value`` (DELETE: removed).
    Returns the damaged line's ``events.jsonl:N``."""

    def damage(folder: Path) -> str:
        lines = _events(folder)
        numbers = [i for i, line in enumerate(lines) if line and json.loads(line)["kind"] == kind]
        i = numbers[nth]
        event = json.loads(lines[i])
        if value is DELETE:
            del event[name]
        else:
            event[name] = value(event) if callable(value) else value
        lines[i] = json.dumps(event).encode()
        (folder / EVENTS_FILE).write_bytes(b"\n".join(lines))
        return f"{EVENTS_FILE}:{i + 1}"

    return damage


def _previous(kind: str, name: str, nth: int):
    """The value of ``name`` in the event of ``kind`` before the ``nth`` (for times out of order)."""

    def value_in(folder: Path):
        events = [json.loads(line) for line in _events(folder) if line]
        return [e for e in events if e["kind"] == kind][nth - 1][name]

    return value_in


def _replace_line(nth: int, text: bytes):
    def damage(folder: Path) -> str:
        lines = _events(folder)
        lines[nth] = text
        (folder / EVENTS_FILE).write_bytes(b"\n".join(lines))
        return f"{EVENTS_FILE}:{nth + 1}"

    return damage


def _window_end_back(folder: Path) -> str:
    """The second window ends where the first did."""
    first_end = _previous("window", "end", 1)(folder)
    return _set("window", "end", first_end, nth=1)(folder)


def _tick_back(folder: Path) -> str:
    """The eleventh tick is stamped at the time of the fourth."""
    earlier = _previous("tick", "t", 4)(folder)
    return _set("tick", "t", earlier, nth=10)(folder)


def _sample_t(change):
    return lambda e: change(dict(e["sample_t"]))


FIELD_CASES = {
    # the start event (line 1): the session's facts
    "sample_rate-abc": (_set("start", "sample_rate", "abc"), ("'sample_rate'", "not a whole number")),
    "sample_rate-zero": (_set("start", "sample_rate", 0), ("'sample_rate'", "at least 1000")),
    "sample_rate-float": (_set("start", "sample_rate", 16000.5), ("'sample_rate'",)),
    "sample_rate-bool": (_set("start", "sample_rate", True), ("'sample_rate'",)),
    "sample_rate-missing": (_set("start", "sample_rate", DELETE), ("'sample_rate'", "missing")),
    "start-t-string": (_set("start", "t", "noon"), ("'t'", "not a number")),
    "offsets-list": (_set("start", "offsets_ms", [1, 2]), ("'offsets_ms'", "not a JSON object")),
    "offset-string": (_set("start", "offsets_ms", {"audio": "x"}), ("'offsets_ms.audio'", "not a number")),
    "offset-huge": (_set("start", "offsets_ms", {"audio": 1e9}), ("'offsets_ms.audio'", "out of range")),
    "offset-unknown": (_set("start", "offsets_ms", {"nose": 1}), ("'offsets_ms.nose'", "not one of")),
    "format-number": (_set("start", "format", 7), ("'format'", "session format 7")),
    # audio windows: where each ends in audio.wav
    "end-5": (_set("window", "end", 5), ("'end'", "at least 16000")),
    "end-string": (_set("window", "end", "16000"), ("'end'", "not a whole number")),
    "end-list": (_set("window", "end", [16000]), ("'end'", "not a whole number")),
    "end-past-wav": (_set("window", "end", 10**9), ("'end'", "past the end of audio.wav")),
    "end-goes-back": (_window_end_back, ("'end'", "does not come after")),
    "window-t-string": (_set("window", "t", "x"), ("'t'", "not a number")),
    "window-t-missing": (_set("window", "t", DELETE), ("'t'", "missing")),
    "window-t-1e300": (_set("window", "t", 1e300), ("'t'", "from the events before it")),
    # ticks: when the recorded run ticked and the samples it used
    "tick-t-1e300": (_set("tick", "t", 1e300, nth=10), ("'t'", "from the events before it")),
    "tick-t-before-start": (_set("tick", "t", -1e6), ("'t'",)),
    "tick-t-bool": (_set("tick", "t", True), ("'t'", "not a number")),
    "tick-t-goes-back": (_tick_back, ("'t'", "before the previous tick, label or state event")),
    "sample_t-list": (_set("tick", "sample_t", [1.0, 2.0]), ("'sample_t'", "not a JSON object")),
    "sample_t-string": (_set("tick", "sample_t", "now"), ("'sample_t'", "not a JSON object")),
    "sample_t-rgb-string": (
        _set("tick", "sample_t", _sample_t(lambda s: {**s, "rgb": "x"}), nth=20),
        ("'sample_t.rgb'", "not a number"),
    ),
    "sample_t-audio-missing": (
        _set("tick", "sample_t", _sample_t(lambda s: {k: v for k, v in s.items() if k != "audio"})),
        ("'sample_t.audio'", "missing"),
    ),
    "sample_t-depth-inf": (
        _set("tick", "sample_t", _sample_t(lambda s: {**s, "depth": 1e999}), nth=20),
        ("not a JSON line",),
    ),
    # states and labels
    "state-modality": (_set("state", "modality", "nose"), ("'modality'", "not one of rgb, depth, audio")),
    "state-modality-list": (_set("state", "modality", ["rgb"]), ("'modality'", "not a string")),
    "state-value": (_set("state", "state", "GREAT"), ("'state'", "not one of")),
    "state-t-goes-back": (_set("state", "t", lambda e: e["t"] - 5, nth=-1), ("'t'", "before the previous")),
    "label-number": (_set("label", "label", 5), ("'label'", "not a string")),
    # the lines themselves
    "kind-number": (_set("tick", "kind", 5), ("'kind'", "not a string")),
    "kind-missing": (_set("tick", "kind", DELETE), ("'kind'", "missing")),
    "first-not-start": (_set("start", "kind", "tick"), ("'kind'", "not 'start'")),
    "line-array": (_replace_line(3, b"[1, 2]"), ("not a JSON object",)),
    "line-garbage": (_replace_line(3, b"{garbage"), ("not a JSON line",)),
}


@pytest.mark.parametrize("case", FIELD_CASES)
def test_a_damaged_event_field_is_one_line_naming_file_line_and_field(recorded, tmp_path, case):
    damage, words = FIELD_CASES[case]
    copy = tmp_path / "damaged"
    shutil.copytree(recorded, copy)
    where = damage(copy)
    with pytest.raises(SessionError) as err:
        load_session(copy)
    message = str(err.value)
    assert where in message and "\n" not in message, message
    for w in words:
        assert w in message, message
    refused(cli("demo", "--source", f"replay:{copy}", "--max-speed"), where, *words)


def test_a_tick_at_1e300_cannot_make_a_real_time_replay_last_forever(recorded, tmp_path):
    copy = tmp_path / "far"
    shutil.copytree(recorded, copy)
    where = _set("tick", "t", 1e300, nth=-1)(copy)  # the very last event: nothing after it to compare
    refused(cli("demo", "--source", f"replay:{copy}", timeout=60), where, "'t'")


def _folder_in_place(name):
    def damage(folder: Path) -> str:
        target = folder / name
        target.unlink()
        target.mkdir()
        return name

    return damage


def _rewrite(name: str, text=lambda old: b""):
    """Damage: file ``name`` rewritten as ``text(its bytes)``."""

    def damage(folder: Path) -> str:
        (folder / name).write_bytes(text((folder / name).read_bytes()))
        return name

    return damage


def _unlink(name: str, where: str):
    def damage(folder: Path) -> str:
        (folder / name).unlink()
        return where

    return damage


def _camera(folder: Path) -> Path:
    return next(folder.glob("camera.*"))


FILE_CASES = {
    "events-folder": (_folder_in_place(EVENTS_FILE), ("a folder where a file should be",)),
    "audio-folder": (_folder_in_place(AUDIO_FILE), ("a folder where a file should be",)),
    "camera-folder": (lambda d: _folder_in_place(_camera(d).name)(d), ("a folder where a file should be",)),
    "summary-folder": (_folder_in_place(SESSION_FILE), ("a folder where a file should be",)),
    "summary-not-json": (_rewrite(SESSION_FILE, lambda _: b"{"), ("not JSON",)),
    "summary-not-complete": (
        _rewrite(SESSION_FILE, lambda _: b'{\n  "format": "edgefusion-session/1",\n  "complete": false\n}'),
        (f"{SESSION_FILE}:3", "'complete'"),
    ),
    "summary-list": (_rewrite(SESSION_FILE, lambda _: b"[1]"), (f"{SESSION_FILE}:1", "'format'")),
    "audio-missing": (_unlink(AUDIO_FILE, f"{EVENTS_FILE}:"), ("'end'", "audio.wav (missing)")),
    "events-missing": (_unlink(EVENTS_FILE, EVENTS_FILE), ("missing", SESSION_FILE)),
    "events-cut-mid-line": (
        _rewrite(EVENTS_FILE, lambda old: old[:-40]),
        ("not a JSON line",),
    ),
    "audio-not-wav": (_rewrite(AUDIO_FILE, lambda _: b"RIFX"), ("not a WAV file",)),
    "audio-other-rate": (
        _set("start", "sample_rate", 8000),
        ("audio.wav", "16000 Hz", "'sample_rate' 8000"),
    ),
}


@pytest.mark.parametrize("case", FILE_CASES)
def test_a_damaged_or_misplaced_file_is_one_line_naming_it(recorded, tmp_path, case):
    damage, words = FILE_CASES[case]
    copy = tmp_path / "damaged"
    shutil.copytree(recorded, copy)
    where = damage(copy)
    with pytest.raises(SessionError) as err:
        load_session(copy)
    for w in (where, *words):
        assert w in str(err.value), str(err.value)
    refused(cli("demo", "--source", f"replay:{copy}", "--max-speed"), where, *words)


@contextlib.contextmanager
def _as_service_user():
    """Act as an unprivileged user, as the service does: root reads every file whatever its mode."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.mark.parametrize("name", [EVENTS_FILE, SESSION_FILE, AUDIO_FILE, "camera", "the folder"])
def test_a_session_file_the_service_user_cannot_read_is_one_line_with_the_fix(recorded, name):
    root = Path(tempfile.mkdtemp(prefix="edgefusion-unreadable-"))  # not under root's private tmp
    try:
        root.chmod(0o755)
        copy = root / "session"
        shutil.copytree(recorded, copy)
        copy.chmod(0o755)
        for f in copy.iterdir():
            f.chmod(0o644)
        targets = {"camera": _camera(copy), "the folder": copy}
        target = targets.get(name, copy / name)
        target.chmod(0o700 if os.geteuid() == 0 else 0)  # owned by root, or closed to its owner
        load_session(recorded)  # every module the loader needs is imported before the user changes
        with _as_service_user(), pytest.raises(SessionError) as err:
            load_session(copy)
        message = str(err.value)
        fix = "chmod a+rx" if target.is_dir() else "chmod a+r"
        assert target.name in message and "permission denied" in message and fix in message, message
        if os.geteuid() != 0:  # root's interpreter lives where another user cannot run it
            refused(cli("demo", "--source", f"replay:{copy}", "--max-speed"), target.name, fix)
        target.chmod(0o755)  # for rmtree
    finally:
        shutil.rmtree(root)


def test_record_without_pyrealsense2_says_so_before_anything_starts(tmp_path, monkeypatch):
    """The camera file is a RealSense recording: without the SDK, record refuses at once and
    writes nothing (the same whether or not pyrealsense2 is installed here: it is hidden)."""
    hidden = tmp_path / "hide"
    hidden.mkdir()
    (hidden / "pyrealsense2.py").write_text('raise ImportError("No module named pyrealsense2 (hidden)")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(hidden), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "session"
    r = cli("record", "--out", str(out), "--seconds", "5", env=env)
    refused(r, "record writes the camera as a RealSense recording", "pyrealsense2", "pip install")
    assert not out.exists(), "nothing written"
