"""MCAP logs, for real: ``edgefusion run`` with [output] mcap read back with the mcap reader, a
SIGTERM and a SIGKILL mid-run, a full disk, and ``export-mcap`` of a recorded session."""

import base64
import json
import signal
import subprocess
import sys
import time

import pytest
from cli_check import cli, refused, snapshot
from waiting import wait_for

mcap_reader = pytest.importorskip("mcap.reader")

from mcap.exceptions import EndOfFile  # noqa: E402
from mcap.records import Channel, Message  # noqa: E402
from mcap.stream_reader import StreamReader  # noqa: E402

from edgefusion.mcap_log import HEALTH_TOPIC, RESULT_TOPIC, McapSink, backup_name  # noqa: E402
from edgefusion.sinks import SinkWriter  # noqa: E402

try:
    import jsonschema
except ImportError:  # not a dependency: the schemas are then only checked to be JSON
    jsonschema = None


def read_mcap(path) -> dict[str, list]:
    """Topic → [(schema, log_time, message as parsed JSON, raw bytes)], through the file's index."""
    with open(path, "rb") as f:
        reader = mcap_reader.make_reader(f)
        assert reader.get_summary() is not None, "the file has its summary: it was finished"
        topics: dict[str, list] = {}
        for schema, channel, message in reader.iter_messages(log_time_order=False):
            assert channel.message_encoding == "json" and schema.encoding == "jsonschema"
            topics.setdefault(channel.topic, []).append(
                (schema, message.log_time, json.loads(message.data), message.data)
            )
        return topics


def check_against_schemas(topics: dict[str, list]) -> None:
    """Each schema is JSON (a valid JSON Schema where jsonschema is installed) and every message fits it."""
    for entries in topics.values():
        schema = json.loads(entries[0][0].data)
        if jsonschema is None:
            continue
        validator = jsonschema.validators.validator_for(schema)
        validator.check_schema(schema)
        for _, _, message, _ in entries:
            validator(schema).validate(message)


def config(tmp_path, **output) -> tuple:
    out = {"stdout": False, "file": str(tmp_path / "results.jsonl"), "mcap": str(tmp_path / "run.mcap")}
    out.update(output)
    cfg = tmp_path / "robot.toml"
    cfg.write_text("[output]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in out.items()))
    return cfg, tmp_path / "results.jsonl", tmp_path / "run.mcap"


def start_run(cfg):
    return subprocess.Popen(
        [sys.executable, "-m", "edgefusion.cli", "run", "--config", str(cfg)], stderr=subprocess.PIPE, text=True
    )


def line_count(path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def assert_holds_every_result(mcap, results) -> dict[str, list]:
    topics = read_mcap(mcap)
    lines = results.read_bytes().splitlines()
    logged = topics[RESULT_TOPIC]
    assert [raw for *_, raw in logged] == lines, "every result, the same bytes, in order"
    times = [t for _, t, _, _ in logged]
    assert times == sorted(times) and len(set(times)) == len(times)
    return topics


def test_a_run_logs_every_result_and_its_health(tmp_path):
    cfg, results, mcap = config(tmp_path, health_s=0.2)
    before = time.time_ns()
    r = cli("run", "--config", str(cfg), "--seconds", "3")
    after = time.time_ns()
    assert r.returncode == 0, r.stderr
    assert f"results to: {results}, MCAP log {mcap}" in r.stderr
    topics = assert_holds_every_result(mcap, results)
    logged = topics[RESULT_TOPIC]
    assert len(logged) >= 60
    assert all(before <= t <= after for _, t, _, _ in logged), "log times are wall-clock ns of the run"
    health = topics[HEALTH_TOPIC]
    assert len(health) >= 5, "a snapshot every 0.2 s"
    assert all(h["backend"]["name"] == "onnxruntime" and "rgb" in h["sensors"] for _, _, h, _ in health)
    assert all(before <= t <= after for _, t, _, _ in health)
    check_against_schemas(topics)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl", "robot.toml", "run.mcap"], "no .part"
    with open(mcap, "rb") as f:
        chunks = list(mcap_reader.make_reader(f).get_summary().chunk_indexes)
    assert chunks and all(c.compression == "zstd" for c in chunks)


def test_sigterm_mid_run_leaves_a_complete_file(tmp_path):
    cfg, results, mcap = config(tmp_path)
    proc = start_run(cfg)
    try:
        assert wait_for(lambda: line_count(results) >= 30, timeout=60), "the run never wrote 30 results"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert len(assert_holds_every_result(mcap, results)[RESULT_TOPIC]) >= 30
    assert not list(tmp_path.glob("*.part"))


def test_a_killed_run_leaves_a_part_the_next_start_reports_and_keeps(tmp_path):
    cfg, results, mcap = config(tmp_path)
    proc = start_run(cfg)
    try:
        # The first chunk is written after FLUSH_S: before it the .part holds its header only.
        assert wait_for(lambda: sum(p.stat().st_size for p in tmp_path.glob("*.part")) > 1000, timeout=60)
        proc.kill()  # SIGKILL: nothing runs at exit
        proc.wait(timeout=30)
    finally:
        proc.kill()
    (part,) = tmp_path.glob("run.mcap.*.part")
    assert not mcap.exists(), "a .mcap is only ever a complete file"
    left = part.read_bytes()
    recovered, results_channel = [], None
    with pytest.raises(EndOfFile), open(part, "rb") as f:  # the records up to the cut are readable
        for record in StreamReader(f).records:
            if isinstance(record, Channel) and record.topic == RESULT_TOPIC:
                results_channel = record.id
            elif isinstance(record, Message) and record.channel_id == results_channel:
                recovered.append(record.data)
    assert recovered and recovered == results.read_bytes().splitlines()[: len(recovered)]
    results.unlink()
    r = cli("run", "--config", str(cfg), "--seconds", "1")
    assert r.returncode == 0, r.stderr
    said = [line for line in r.stderr.splitlines() if str(part) in line]
    assert len(said) == 1 and "did not stop cleanly" in said[0] and "kept" in said[0], r.stderr
    assert part.read_bytes() == left, "the leftover is not touched"
    assert_holds_every_result(mcap, results)


def test_earlier_runs_are_kept_as_backups(tmp_path):
    path = tmp_path / "run.mcap"
    for run in range(4):
        sink = McapSink(path, backups=2)
        sink.write(json.dumps({"t": 1.0, "run": run}))
        sink.close()
    runs = [read_mcap(p)[RESULT_TOPIC][0][2]["run"] for p in (path, backup_name(path, 1), backup_name(path, 2))]
    assert runs == [3, 2, 1] and not backup_name(path, 3).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.1.mcap", "run.2.mcap", "run.mcap"]


@pytest.mark.parametrize("where", ["under-a-file", "a-folder"])
def test_an_unwritable_path_is_one_line_at_start(tmp_path, where):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "dir.mcap").mkdir()
    target = tmp_path / ("file.txt/run.mcap" if where == "under-a-file" else "dir.mcap")
    cfg, _, _ = config(tmp_path, file="", mcap=str(target))
    before = snapshot(tmp_path)
    r = cli("run", "--config", str(cfg), "--seconds", "1")
    refused(r, "cannot write the MCAP log", str(target), "[output] mcap")
    assert snapshot(tmp_path) == before


def test_a_full_disk_loses_no_result_once_space_returns(tiny_disk):
    filler = tiny_disk / "filler"
    filler.write_bytes(b"x" * 40_000)
    path = tiny_disk / "run.mcap"
    sink = McapSink(path, flush_s=0.0)  # a chunk per message: every write reaches the disk
    writer = SinkWriter((sink,), json.dumps, interval_s=0.01)
    pad = "p" * 200
    n = 0
    while writer.errors == 0:  # until the disk is full
        writer.put({"t": n / 30, "tick": n, "pad": pad})
        n += 1
        writer.wait_written()
        assert n < 1000, "the disk never filled"
    with pytest.raises(OSError):
        sink.health({"t": 0.0})
    for _ in range(20):  # results go on arriving while the disk is full
        writer.put({"t": n / 30, "tick": n, "pad": pad})
        n += 1
    writer.wait_written()
    filler.unlink()  # space again
    assert wait_for(lambda: not writer.workers[0].failing, timeout=5)
    writer.close()
    ticks = [m["tick"] for _, _, m, _ in read_mcap(path)[RESULT_TOPIC]]
    assert ticks == list(range(n)), "every result once, in order"
    assert sink.skipped_health == 1


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    pytest.importorskip("pyrealsense2")  # the recorder writes the camera as a RealSense recording
    out = tmp_path_factory.mktemp("rec") / "session"
    r = cli("record", "--out", str(out), "--seconds", "2", "--json")
    assert r.returncode == 0, r.stderr
    return out


def test_export_mcap_holds_the_sessions_ticks_events_frames_and_audio(session, tmp_path):
    out = tmp_path / "session.mcap"
    r = cli("export-mcap", "--session", str(session), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    topics = read_mcap(out)
    events = [json.loads(line) for line in (session / "events.jsonl").read_text().splitlines()]
    ticks = [e for e in events if e["kind"] == "tick"]
    assert [m for _, _, m, _ in topics["/edgefusion/result"]] == ticks
    assert [m for _, _, m, _ in topics["/edgefusion/events"]] == [e for e in events if e["kind"] != "tick"]
    assert json.loads(r.stdout)["messages"] == {topic: len(entries) for topic, entries in topics.items()}
    start = events[0]
    t_first = topics["/edgefusion/result"][0][1]
    assert abs(t_first / 1e9 - (start["wall_t"] + ticks[0]["t"] - start["t"])) < 1e-3, "on the wall clock"
    for stream, encoding, size in (("rgb", "rgb8", 3), ("depth", "16UC1", 2)):
        frames = topics[f"/camera/{stream}"]
        assert frames[0][0].name == "foxglove.RawImage" and 8 <= len(frames) <= 12, "5 Hz over 2 s"
        image = frames[0][2]
        assert image["encoding"] == encoding and image["step"] == image["width"] * size
        assert len(base64.b64decode(image["data"])) == image["height"] * image["step"]
    audio = topics["/audio"]
    assert audio[0][0].name == "foxglove.RawAudio" and audio[0][2]["sample_rate"] == start["sample_rate"]
    samples = sum(len(base64.b64decode(m["data"])) // 2 for _, _, m, _ in audio)
    assert abs(samples - 2 * start["sample_rate"]) <= start["sample_rate"] * 0.2, "about 2 s of audio"
    check_against_schemas(topics)


def test_export_mcap_of_a_session_cut_short_exports_what_it_holds(session, tmp_path):
    cut = tmp_path / "cut"
    cut.mkdir()
    for name in ("events.jsonl", "audio.wav"):
        (cut / name).write_bytes((session / name).read_bytes())
    events = (cut / "events.jsonl").read_bytes()
    (cut / "events.jsonl").write_bytes(events[: len(events) - 20])  # the recorder died mid-line; no session.json
    r = cli("export-mcap", "--session", str(cut), "--out", str(tmp_path / "cut.mcap"))
    assert r.returncode == 0, r.stderr
    assert "incomplete session" in r.stderr
    whole = events.decode().splitlines()[:-1]
    assert len(read_mcap(tmp_path / "cut.mcap")["/edgefusion/result"]) == sum('"kind":"tick"' in e for e in whole)


@pytest.mark.parametrize("damage", ["missing", "foreign", "a-file", "truncated-audio"])
def test_export_mcap_of_no_session_or_a_damaged_one_is_one_line(session, tmp_path, damage):
    target = tmp_path / "s"
    if damage == "foreign":
        target.mkdir()
        (target / "notes.txt").write_text("not a session")
    elif damage == "a-file":
        target.write_text("x")
    elif damage == "truncated-audio":
        target.mkdir()
        for p in session.iterdir():
            (target / p.name).write_bytes(p.read_bytes())
        wav = (target / "audio.wav").read_bytes()
        (target / "audio.wav").write_bytes(wav[: len(wav) // 2])
    before = snapshot(tmp_path)
    r = cli("export-mcap", "--session", str(target), "--out", str(tmp_path / "out.mcap"))
    words = {"missing": "no such session folder", "foreign": "no events.jsonl", "a-file": "not a session folder"}
    refused(r, str(target), words.get(damage, "truncated"))
    assert snapshot(tmp_path) == before, "nothing written, not even a temp file"
