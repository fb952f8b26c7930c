"""The virtual rig leaves nothing behind, however it ends: real `edgefusion demo --rig virtual`
processes signalled at several moments (before the sound server exists, while it starts, while the
loop runs), SIGKILLed, run twice at once, and with their sound server killed from outside.

What is looked for afterwards: any process, zombie included, in the sound server's process group
(the keeper's pid, read from the runtime dir while it ran), and the run's /tmp/edgefusion-pulse-*
dir. A SIGKILLed owner's children go to the nearest subreaper: this test process makes itself one
(as systemd is on a robot) and reaps them, so that a zombie left is ours to see.
"""

import contextlib
import ctypes
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("pyrealsense2")
pytest.importorskip("pyaudio")
if shutil.which("pulseaudio") is None or shutil.which("pacat") is None:
    pytest.skip("needs pulseaudio and pulseaudio-utils", allow_module_level=True)

from edgefusion.sim.pulse import KEEPER_PID_FILE, RUNTIME_PREFIX, PulseServer  # noqa: E402
from edgefusion.sim.pulse_keeper import group_members, read_environ  # noqa: E402

TMP = Path(tempfile.gettempdir())
PR_SET_CHILD_SUBREAPER = 36


def _group(pgid: int) -> list[tuple[int, str, str]]:
    """(pid, state, command) of every process of group ``pgid``, zombies too."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        head, rest = text.rsplit(")", 1)
        state, _ppid, pgrp = rest.split()[:3]
        if int(pgrp) == pgid:
            found.append((int(stat.split("/")[2]), state, head.split("(", 1)[1]))
    return found


def _until(ready, timeout_s: float, what):
    """``ready()``'s first true value within ``timeout_s``; else fail saying ``what`` (a str, or a
    callable for a message made at the moment of failing)."""
    end = time.monotonic() + timeout_s
    while not (got := ready()):
        assert time.monotonic() < end, what() if callable(what) else what
        time.sleep(0.02)
    return got


class Demo:
    """One `edgefusion demo --rig virtual` process and what it started."""

    def __init__(self, home: Path | None = None):
        env = dict(os.environ, HOME=str(home)) if home else None
        cmd = [sys.executable, "-m", "edgefusion.cli", "demo", "--rig", "virtual", "--seconds", "120", "--json"]
        # Results go to a file: a pipe nobody reads would fill and hold the loop up.
        self.results = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=self.results, stderr=subprocess.PIPE, env=env)
        self.keeper: int | None = None

    def dirs(self) -> list[str]:
        return glob.glob(str(TMP / f"{RUNTIME_PREFIX}{self.proc.pid}-*"))

    def server_starting(self) -> int:
        """Wait until the keeper runs (the sound server is being started); its pid is the group's."""

        def keeper() -> int | None:
            for folder in self.dirs():
                with contextlib.suppress(OSError, ValueError):  # not written yet
                    return int((Path(folder) / KEEPER_PID_FILE).read_text())
            assert self.proc.poll() is None, self.proc.stderr.read().decode()[-2000:]
            return None

        self.keeper = _until(keeper, 60, "the sound server's keeper never started")
        return self.keeper

    def running(self) -> None:
        """Wait for the loop's first result line."""
        self.server_starting()

        def first_result() -> bool:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()[-2000:]
            return os.fstat(self.results.fileno()).st_size > 0

        _until(first_result, 60, "no result line")

    def end(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"{signal.Signals(sig).name} did not end the demo")
        self.stderr = err.decode()
        self.results.close()
        return self.proc.returncode

    def assert_nothing_left(self, reap_orphans: bool = False) -> None:
        """No process of the group, zombie or not, and no runtime dir. ``reap_orphans``: after a
        SIGKILL of the owner, its children came to us, the subreaper; we reap the dead ones (a
        zombie left then is not ours: nobody reaps it). Else nothing is reaped here: a zombie
        would show the owner's exit left one behind."""

        def gone() -> bool:
            members = _group(self.keeper)
            if reap_orphans:
                for pid, state, _ in members:
                    if state == "Z":
                        _reap(pid)
                members = _group(self.keeper)
            return not members

        if self.keeper is not None:
            _until(gone, 5, lambda: f"left behind: {_group(self.keeper)}")
        _until(lambda: not self.dirs(), 5, lambda: f"runtime dir left: {self.dirs()}")


def _reap(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:  # not ours: someone else's zombie to reap
        return False


@pytest.fixture
def subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _wait_before_server(demo: Demo) -> None:
    time.sleep(0.3)  # the interpreter is still importing: nothing of the rig exists yet


def _wait_server_starting(demo: Demo) -> None:
    demo.server_starting()


def _wait_server_half_started(demo: Demo) -> None:
    demo.server_starting()
    time.sleep(0.8)  # the server answers; its monitor is not flowing yet (that takes ~2 s)


def _wait_running(demo: Demo) -> None:
    demo.running()


@pytest.mark.parametrize(
    "sig, moment",
    [
        (signal.SIGTERM, _wait_before_server),
        (signal.SIGTERM, _wait_server_starting),
        (signal.SIGHUP, _wait_server_starting),
        (signal.SIGINT, _wait_server_starting),
        (signal.SIGINT, _wait_server_half_started),
        (signal.SIGTERM, _wait_server_half_started),
        (signal.SIGTERM, _wait_running),
        (signal.SIGHUP, _wait_running),
        (signal.SIGINT, _wait_running),
    ],
    ids=[
        "TERM-at-0.3s",
        "TERM-starting",
        "HUP-starting",
        "INT-starting",
        "INT-half-started",
        "TERM-half-started",
        "TERM-running",
        "HUP-running",
        "INT-running",
    ],
)
def test_a_signal_at_any_moment_leaves_no_process_zombie_or_dir(subreaper, sig, moment):
    demo = Demo()
    moment(demo)
    rc = demo.end(sig)
    assert "Traceback" not in demo.stderr, demo.stderr[-2000:]
    assert rc in (0, -sig, 130), demo.stderr[-2000:]  # stopped, died of the signal as by default, or interrupted
    demo.assert_nothing_left()


@pytest.mark.parametrize("moment", [_wait_server_starting, _wait_running], ids=["starting", "running"])
def test_a_sigkilled_owner_leaves_nothing_and_the_next_start_runs(subreaper, moment):
    demo = Demo()
    moment(demo)
    assert demo.end(signal.SIGKILL) == -signal.SIGKILL
    demo.assert_nothing_left(reap_orphans=True)  # the keeper saw its pipe end
    with PulseServer() as server:  # and the next start is not blocked by anything the first left
        assert server.runtime_dir.is_dir()


def test_a_sound_server_killed_from_outside_is_reaped_restarted_and_cleaned_at_exit(subreaper):
    demo = Demo()
    demo.running()

    def server() -> int | None:
        return next((pid for pid, state, cmd in _group(demo.keeper) if cmd == "pulseaudio" and state != "Z"), None)

    first = server()
    os.kill(first, signal.SIGKILL)
    _until(lambda: all(pid != first for pid, _, _ in _group(demo.keeper)), 2, "the dead server stays a zombie")
    second = _until(lambda: (pid := server()) != first and pid, 30, "the sound server was not brought back")
    assert second != first
    assert demo.end(signal.SIGTERM) == 0, demo.stderr[-2000:]
    assert "sound server exited on its own" in demo.stderr, demo.stderr
    demo.assert_nothing_left()


def test_two_rigs_at_once_keep_to_their_own_and_both_clean_up(subreaper):
    a, b = Demo(), Demo()
    a.running()
    b.running()
    assert a.keeper != b.keeper and a.dirs() != b.dirs()
    assert a.end(signal.SIGKILL) == -signal.SIGKILL
    a.assert_nothing_left(reap_orphans=True)
    assert b.proc.poll() is None and b.dirs() and _group(b.keeper), "the other rig runs on, untouched"
    assert b.end(signal.SIGTERM) == 0, b.stderr[-2000:]
    b.assert_nothing_left()


def test_the_next_start_sweeps_what_a_dead_owner_and_keeper_left(subreaper, capsys):
    """SIGKILL of owner and keeper together (no one left to clean): the next start's sweep kills
    what runs for the dead owner's dir and removes it; a live owner's dir is not touched."""
    gone = subprocess.Popen(["true"])  # a pid certainly gone
    gone.wait()
    stale = Path(TMP / f"{RUNTIME_PREFIX}{gone.pid}-test")
    stale.mkdir()
    # A server process whose keeper died: it leads its own group here.
    lingering = subprocess.Popen(
        ["sleep", "60"], env=dict(os.environ, XDG_RUNTIME_DIR=str(stale)), start_new_session=True
    )
    (stale / KEEPER_PID_FILE).write_text(str(lingering.pid))
    live = Path(TMP / f"{RUNTIME_PREFIX}{os.getpid()}-test")
    live.mkdir()
    try:
        with PulseServer():
            pass
        assert lingering.wait(timeout=5) == -signal.SIGKILL
        assert not stale.exists()
        assert f"removed {stale}, left by a sound server whose owner was killed" in capsys.readouterr().err
        assert live.is_dir(), "a running owner's dir was swept"
    finally:
        lingering.kill()
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)


def test_a_process_just_started_for_a_dir_is_found():
    """Popen returns once the exec has begun, before the kernel has laid out the new environment:
    /proc/PID/environ reads empty for a moment (here, for one start in six). A process the owner
    had just started when it died is still found, so the keeper kills it."""
    folder = str(TMP / f"{RUNTIME_PREFIX}0-exec")
    for _ in range(100):
        proc = subprocess.Popen(["sleep", "5"], env=dict(os.environ, XDG_RUNTIME_DIR=folder), start_new_session=True)
        try:
            assert f"XDG_RUNTIME_DIR={folder}".encode() in read_environ(str(proc.pid)).split(b"\0")
            assert group_members(proc.pid, folder) == [proc.pid]
        finally:
            proc.kill()
            proc.wait()


def test_a_virtual_rig_run_leaves_home_untouched(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    demo = Demo(home)
    demo.running()
    assert demo.end(signal.SIGTERM) == 0, demo.stderr[-2000:]
    assert sorted(p.relative_to(home) for p in home.rglob("*")) == []  # no ~/.rum, ~/.config/pulse, ~/.cache
