"""The HIL service checks' own parts: the notify stand-in (senders told apart by their credentials,
as systemd tells them), and the readers of systemctl's and journalctl's output, on what those tools
print (systemd is not PID 1 here: a fake systemctl, named so, plays the robot's)."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from waiting import wait_for

from edgefusion.hil.service import (
    NotifyListener,
    Unit,
    parse_journal,
    parse_notice,
    parse_show,
    parse_timespan_s,
)


@pytest.fixture
def listener(tmp_path):
    lst = NotifyListener(tmp_path / "notify.sock")
    yield lst
    lst.close()


# A child of ours sending READY=1, as a server a service starts could (one that inherits NOTIFY_SOCKET).
CHILD = """
import os, socket, sys
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", sys.argv[1])
print(os.getpid())
"""


def _send(address: str, text: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(text.encode(), address)


def test_each_notice_carries_its_senders_pid_so_a_childs_ready_is_told_apart(listener):
    """systemd's NotifyAccess=main acts on the main process's notices only: the listener must know who sent each."""
    _send(listener.address, "READY=1\nSTATUS=main")
    child = subprocess.run([sys.executable, "-c", CHILD, listener.address], capture_output=True, text=True, timeout=30)
    assert child.returncode == 0, child.stderr
    assert wait_for(lambda: len(listener.notices()) == 2, timeout=5), listener.notices()
    mine = listener.notices(pid=os.getpid())
    assert [n.fields for n in mine] == [{"READY": "1", "STATUS": "main"}]
    theirs = listener.notices(pid=int(child.stdout))
    assert [n.fields for n in theirs] == [{"READY": "1"}] and theirs[0].comm.startswith("python")


@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="needs systemd-notify (apt-get install systemd)")
def test_systemd_notifys_barrier_descriptor_is_closed_not_kept(listener):
    """``systemd-notify --ready`` (systemd >= 246) sends BARRIER=1 with a descriptor: it must be closed, or the
    sender waits on it."""
    env = {**os.environ, "NOTIFY_SOCKET": listener.address}
    subprocess.run(["systemd-notify", "--ready", "--status=up"], env=env, check=True, timeout=10)
    assert listener.wait(lambda n: n.says("READY", "1"), timeout=5) is not None


def test_notice_lines_without_an_equals_sign_are_ignored_as_systemd_does():
    assert parse_notice(b"READY=1\ngarbage\nSTATUS=a=b\n") == {"READY": "1", "STATUS": "a=b"}


def test_wait_gives_none_by_its_deadline_and_since_hides_older_notices(listener):
    _send(listener.address, "WATCHDOG=1")
    first = listener.wait(lambda n: n.says("WATCHDOG"), timeout=5)
    assert first is not None
    assert listener.wait(lambda n: n.says("WATCHDOG"), timeout=0.2, since=first.t + 1e-6) is None


@pytest.mark.parametrize(
    "text, seconds",
    [("10s", 10.0), ("1min 30s", 90.0), ("500ms", 0.5), ("2min", 120.0), ("1h 1us", 3600.000001), ("0", 0.0)],
)
def test_systemd_time_spans(text, seconds):
    assert parse_timespan_s(text) == pytest.approx(seconds)


def test_infinity_and_a_non_span():
    assert parse_timespan_s("infinity") == float("inf")
    with pytest.raises(ValueError, match="not a systemd time span"):
        parse_timespan_s("10 parsecs")


def test_systemctl_show_values_keep_their_equals_signs():
    text = "MainPID=812\nStatusText=30.0 ticks/s; a=b\nEnvironment=PYTHONUNBUFFERED=1 EDGEFUSION_STATE=/var\n"
    assert parse_show(text) == {
        "MainPID": "812",
        "StatusText": "30.0 ticks/s; a=b",
        "Environment": "PYTHONUNBUFFERED=1 EDGEFUSION_STATE=/var",
    }


def test_a_journal_message_that_is_not_utf8_comes_as_bytes_and_is_decoded():
    lines = [
        json.dumps({"MESSAGE": "running bundle x", "PRIORITY": "5", "_PID": "812"}),
        json.dumps({"MESSAGE": list(b"caf\xe9 reload refused"), "PRIORITY": "3"}),
        "",
    ]
    entries = parse_journal("\n".join(lines))
    assert [e["MESSAGE"] for e in entries] == ["running bundle x", "caf\ufffd reload refused"]


class FakeSystemctl:
    """Stands in for systemctl and journalctl (systemd is not PID 1 here): each ``show`` answers the
    next of a scripted sequence of states; every command line is kept."""

    def __init__(self, states: list[dict], journal: str = ""):
        self.states, self.journal, self.calls = states, journal, []

    def __call__(self, argv) -> str:
        self.calls.append(list(argv))
        if argv[0] == "journalctl":
            return self.journal
        if argv[1] != "show":
            return ""
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        wanted = [a.split("=", 1)[1] for a in argv if a.startswith("--property=")]
        return "".join(f"{k}={state[k]}\n" for k in wanted)


def _state(pid: int, active: str = "active", sub: str = "running") -> dict:
    return {"MainPID": pid, "ActiveState": active, "SubState": sub}


def test_back_after_waits_for_a_new_main_pid_that_runs():
    """The old PID still shown, then no PID (activating: auto-restart), then a new one not yet
    running: none of them is "back"."""
    fake = FakeSystemctl(
        [_state(812), _state(0, "activating", "auto-restart"), _state(0, "activating", "auto-restart")]
        + [_state(901, "activating", "start")] * 4
        + [_state(901)]
    )
    unit = Unit(run=fake)
    assert unit.back_after(812, timeout=30) is not None
    assert fake.states == [_state(901)]
    assert fake.calls[0] == ["systemctl", "show", "edgefusion.service", "--property=MainPID"]


def test_back_after_gives_none_when_it_never_comes_back():
    unit = Unit(run=FakeSystemctl([_state(0, "failed", "failed")]))
    assert unit.back_after(812, timeout=0.3) is None


def test_exec_start_argv_from_systemctls_structured_form():
    shown = (
        "{ path=/opt/edgefusion/venv/bin/edgefusion ; argv[]=/opt/edgefusion/venv/bin/edgefusion run --config "
        "/etc/edgefusion/edgefusion.toml ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; "
        "code=(null) ; status=0/0 }"
    )
    unit = Unit(run=FakeSystemctl([{"ExecStart": shown}]))
    assert unit.exec_start_argv() == [
        "/opt/edgefusion/venv/bin/edgefusion",
        "run",
        "--config",
        "/etc/edgefusion/edgefusion.toml",
    ]


def test_journal_since_an_instant_drops_the_entries_of_its_first_second():
    since = 1_700_000_000.5
    entries = [
        {"MESSAGE": "before", "__REALTIME_TIMESTAMP": str(int((since - 0.2) * 1e6))},
        {"MESSAGE": "after", "__REALTIME_TIMESTAMP": str(int((since + 0.2) * 1e6))},
    ]
    fake = FakeSystemctl([{}], journal="\n".join(json.dumps(e) for e in entries))
    got = Unit(run=fake).journal("_PID=812", since_epoch_s=since)
    assert [e["MESSAGE"] for e in got] == ["after"]
    assert fake.calls[-1] == [
        "journalctl",
        "--output=json",
        "--no-pager",
        "_SYSTEMD_UNIT=edgefusion.service",
        "_PID=812",
        "--since=@1700000000",
    ]


def test_a_systemd_booted_in_namespaces_runs_the_unit_and_leaves_nothing_behind(tmp_path):
    """The checkout's unit comes up under it (READY=1: active/running) with journald and no other
    service (a full boot's tmpfiles would empty this machine's /tmp, udev re-trigger its devices),
    and close() leaves no process, no cgroup and nothing in this machine's /run or /dev."""
    from edgefusion.bundle import default_bundle_path
    from edgefusion.hil import systemd_ns
    from edgefusion.hil.service import service_config

    reason = systemd_ns.unavailable()
    if reason:
        pytest.skip(reason)
    run_before, dev_before = sorted(os.listdir("/run")), sorted(os.listdir("/dev"))
    config = service_config(tmp_path / "service.toml", default_bundle_path(), tmp_path / "results.jsonl", "simulated")
    unit_file = Path(__file__).resolve().parents[1] / "systemd" / "edgefusion.service"
    booted = systemd_ns.NamespacedSystemd(tmp_path, unit_file, systemd_ns.dropin(config, tmp_path))
    try:
        booted.start()
        unit = Unit(run=booted.run)
        assert wait_for(unit.running, timeout=30), unit.show("ActiveState", "SubState", "Result")
        pids = {booted.pid, unit.main_pid()}
        listed = booted.run(["systemctl", "list-units", "--type=service", "--all", "--plain", "--no-legend"])
        started = {line.split()[0] for line in listed.splitlines() if line.split()[2] != "inactive"}
    finally:
        booted.close()
    assert not booted.cgroup.exists()
    assert booted.pid is not None and not Path(f"/proc/{booted.pid}").exists()
    assert sorted(os.listdir("/run")) == run_before, "its /run was its own"
    assert sorted(os.listdir("/dev")) == dev_before, "its /dev was its own"
    assert started == {"edgefusion.service", "systemd-journald.service"}, started
    assert len(pids) == 2
