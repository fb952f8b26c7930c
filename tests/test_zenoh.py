"""The Zenoh sink for real: the runtime publishing on loopback, the test subscribing (no mock).

Each test runs `edgefusion run` as a user does, with a JSON-lines file beside the bus as the
reference of what the run produced."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from cli_check import cli, refused
from zenoh_check import Received, Router, config, endpoint, free_port, lines, session, start_run, wait_until

from edgefusion.bus import ros2


def _ended(proc: subprocess.Popen, timeout_s: float = 60) -> str:
    _, err = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err
    return err


def test_every_result_health_and_status_reach_a_subscriber_through_a_router(tmp_path):
    router = Router(endpoint(free_port())).start()
    try:
        sub = session(router.endpoint)
        got = Received(sub, "edgefusion/r1/*")
        alive = []
        sub.liveliness().declare_subscriber("edgefusion/*/alive", lambda s: alive.append(str(s.kind)), history=True)
        results = tmp_path / "results.jsonl"
        cfg = config(tmp_path / "r.toml", f'robot = "r1"\nmode = "client"\nconnect = ["{router.endpoint}"]', results)
        err = _ended(start_run(cfg, 4))
        assert "zenoh edgefusion/r1/* (client via" in err and "0 results lost" in err
        wanted = lines(results)
        assert len(wanted) > 60
        wait_until(lambda: len(got.results("edgefusion/r1/result")) >= len(wanted), 10, "results missing on the bus")
        assert got.results("edgefusion/r1/result") == wanted  # every one, in order, the same content
        health = got.results("edgefusion/r1/health")
        assert health and {"sensors", "backend", "ticks", "sinks", "results_lost"} <= set(health[-1])
        assert health[-1]["robot"] == "r1" and health[-1]["sensors"]["rgb"]["state"] == "OK"
        states = [s["state"] for s in got.results("edgefusion/r1/status")]
        assert states[0] == "running" and states[-1] == "stopped"
        wait_until(lambda: len(alive) >= 2, 10, "the robot's liveliness token never went away")
        assert alive[:2] == ["SampleKind.PUT", "SampleKind.DELETE"]
        sub.close()
    finally:
        router.kill()


def test_the_queryable_answers_the_latest_result_and_status(tmp_path):
    port = free_port()
    cfg = config(tmp_path / "r.toml", f'robot = "r2"\nlisten = ["{endpoint(port)}"]\nscouting = false', tmp_path / "x")
    run = start_run(cfg, 30)
    try:
        sub = session(endpoint(port))

        def latest():
            replies = {
                str(r.ok.key_expr): json.loads(r.ok.payload.to_bytes()) for r in sub.get("edgefusion/r2/*") if r.ok
            }
            return replies if {"edgefusion/r2/result", "edgefusion/r2/status"} <= set(replies) else None

        replies = wait_until(latest, 30, "no reply from the robot's queryable")
        assert replies["edgefusion/r2/status"]["state"] == "running"
        assert replies["edgefusion/r2/status"]["bundle"] == "hri-intent-demo"
        assert replies["edgefusion/r2/result"]["tick"] >= 1
        sub.close()
    finally:
        run.send_signal(signal.SIGTERM)
        _ended(run)


def test_a_router_killed_and_restarted_the_ticks_go_on_and_results_flow_again(tmp_path):
    router = Router(endpoint(free_port())).start()
    results = tmp_path / "results.jsonl"
    cfg = config(tmp_path / "r.toml", f'robot = "r3"\nmode = "client"\nconnect = ["{router.endpoint}"]', results)
    run = start_run(cfg, 30)
    sub = None
    try:
        wait_until(lambda: len(lines(results)) > 30, 30, "the run produced no results")
        router.kill()
        down_at = len(lines(results))
        time.sleep(2)
        assert len(lines(results)) > down_at + 40, "the ticks slowed or stopped while the router was down"
        router.start()
        sub = session(router.endpoint)
        got = Received(sub, "edgefusion/r3/result")
        restarted = lines(results)[-1]["tick"]
        wait_until(
            lambda: any(r["tick"] > restarted + 30 for r in got.results("edgefusion/r3/result")),
            20,
            "results did not flow again once the router was back",
        )
    finally:
        run.send_signal(signal.SIGTERM)
        err = _ended(run)
        router.kill()
        if sub is not None:
            sub.close()
    ticks = [r["tick"] for r in lines(results)]
    assert ticks == list(range(1, len(ticks) + 1)), "a tick is missing from the run's own file"
    assert "no Zenoh router reachable" in err  # said, with the lines kept for the retry
    assert "works again" in err


def test_a_client_whose_router_is_down_at_start_runs_and_catches_up(tmp_path):
    router = Router(endpoint(free_port()))
    results = tmp_path / "results.jsonl"
    cfg = config(tmp_path / "r.toml", f'robot = "r4"\nmode = "client"\nconnect = ["{router.endpoint}"]', results)
    run = start_run(cfg, 30)
    try:
        wait_until(lambda: len(lines(results)) > 30, 30, "a client with no router did not run")
        router.start()
        sub = session(router.endpoint)
        got = Received(sub, "edgefusion/r4/result")
        wait_until(lambda: got.results("edgefusion/r4/result"), 20, "no result once the router came up")
        sub.close()
    finally:
        run.send_signal(signal.SIGTERM)
        _ended(run)
        router.kill()


def test_a_subscriber_that_stalls_never_slows_a_tick(tmp_path):
    """The subscriber's callback blocks for the whole run (a consumer hung in its own code)."""
    port = free_port()
    results = tmp_path / "results.jsonl"
    cfg = config(tmp_path / "r.toml", f'robot = "r5"\nlisten = ["{endpoint(port)}"]\nscouting = false', results)
    release = threading.Event()
    sub = session(endpoint(port))
    got = Received(sub, "edgefusion/r5/result", on_sample=lambda: release.wait(30))
    try:
        err = _ended(start_run(cfg, 4))
    finally:
        release.set()
    ticks = lines(results)
    assert len(ticks) >= 110, f"{len(ticks)} ticks in 4 s at 30 Hz"
    assert " 0 overruns, 0 late ticks" in err, err
    assert got.samples, "the stalled subscriber got nothing at all"
    sub.close()


def test_ros2_messages_in_rmw_zenoh_layout(tmp_path):
    """What a node on rmw_zenoh_cpp reads: the key, a CDR std_msgs/String holding the result line,
    the attachment, the graph's tokens. Checked against rosbags (another CDR and type-hash
    implementation) and zenoh-ext's deserializer."""
    rosbags = pytest.importorskip("rosbags.typesys")
    import zenoh
    from zenoh import ext

    store = rosbags.get_typestore(rosbags.Stores.ROS2_JAZZY)
    assert ros2.STRING_HASH == store.hash_rihs01("std_msgs/msg/String")
    port = free_port()
    results = tmp_path / "results.jsonl"
    table = f'robot = "r6"\nlisten = ["{endpoint(port)}"]\nscouting = false\nros2 = true\nros2_domain = 7'
    run = start_run(config(tmp_path / "r.toml", table, results), 30)
    try:
        sub = session(endpoint(port))
        tokens = []
        sub.liveliness().declare_subscriber("@ros2_lv/7/**", lambda s: tokens.append(str(s.key_expr)), history=True)
        key = f"7/edgefusion/r6/result/std_msgs::msg::dds_::String_/{ros2.STRING_HASH}"
        got = Received(sub, key)
        wait_until(lambda: len(got.samples) >= 5, 30, "no ROS 2 message")
        wait_until(lambda: len(tokens) >= 3, 10, "the ROS 2 graph's tokens are missing")
    finally:
        run.send_signal(signal.SIGTERM)
        _ended(run)
    by_tick = {r["tick"]: r for r in lines(results)}
    seqs = []
    for _, payload, att, _ in got.samples:
        msg = store.deserialize_cdr(payload, "std_msgs/msg/String")
        result = json.loads(msg.data)
        assert by_tick[result["tick"]] == result
        seq, stamp, gid = ext.z_deserialize(tuple[ext.Int64, ext.Int64, bytes], zenoh.ZBytes(att))
        seqs.append(seq)
        assert abs(stamp / 1e9 - time.time()) < 120 and len(gid) == 16
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    node = sorted({t for t in tokens if "/NN/" in t})  # a token seen live and in the history is one
    assert len(node) == 1 and node[0].endswith("/NN/%/%edgefusion%r6/edgefusion")
    assert any(
        t.endswith(
            f"/MP/%/%edgefusion%r6/edgefusion/%edgefusion%r6%result/std_msgs::msg::dds_::String_/{ros2.STRING_HASH}/{ros2.QOS}"
        )
        for t in tokens
    ), tokens
    sub.close()


def test_listen_shows_the_fleet_and_prints_raw_results(tmp_path):
    port = free_port()
    cfg = config(tmp_path / "r.toml", f'robot = "r7"\nlisten = ["{endpoint(port)}"]\nscouting = false', tmp_path / "x")
    run = start_run(cfg, 30)
    try:
        wait_until(lambda: (tmp_path / "x").exists() and (tmp_path / "x").stat().st_size, 30, "the run did not start")
        fleet = cli("listen", "--connect", endpoint(port), "--seconds", "2", timeout=60)
        raw = cli("listen", "--connect", endpoint(port), "--robot", "r7", "--json", "--seconds", "2", timeout=60)
        piped = subprocess.run(
            f"{sys.executable} -m edgefusion.cli listen --connect {endpoint(port)} --json | head -1",
            shell=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        run.send_signal(signal.SIGTERM)
        _ended(run)
    assert fleet.returncode == 0, fleet.stderr
    line = [x for x in fleet.stdout.splitlines() if x.startswith("r7")][-1]
    assert "ALIVE" in line and "running" in line and "rgb OK" in line and "intent " in line, line
    assert raw.returncode == 0 and "Traceback" not in raw.stderr
    assert len([json.loads(x)["tick"] for x in raw.stdout.splitlines()]) > 20
    assert json.loads(piped.stdout)["tick"] >= 1 and "Traceback" not in piped.stderr


def test_listen_with_nobody_there_says_so(tmp_path):
    r = cli("listen", "--connect", endpoint(free_port()), "--seconds", "1", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "no robot seen yet" in r.stdout


@pytest.mark.parametrize(
    "table, words",
    [
        ('mode = "client"', ('mode "client" needs connect',)),
        ('connect = ["router:7447"]', ("not a Zenoh endpoint",)),
        ('robot = "a b"', ("robot must be",)),
        ("ros2_domain = 300", ("ros2_domain must be between 0 and 232",)),
    ],
)
def test_a_bad_zenoh_table_is_one_line(tmp_path, table, words):
    cfg = tmp_path / "r.toml"
    cfg.write_text(f"[output.zenoh]\nenabled = true\n{table}\n")
    refused(cli("run", "--config", str(cfg), "--seconds", "1"), "[output.zenoh]", *words)


def test_without_zenoh_installed_the_run_is_refused_in_one_line(tmp_path):
    cfg = tmp_path / "r.toml"
    cfg.write_text("[output.zenoh]\nenabled = true\n")
    code = (
        "import sys; sys.modules['zenoh'] = None; from edgefusion.cli import entry; "
        f"sys.argv = ['edgefusion', 'run', '--config', {str(cfg)!r}, '--seconds', '1']; sys.exit(entry())"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
    refused(r, "eclipse-zenoh", "enabled = false")
