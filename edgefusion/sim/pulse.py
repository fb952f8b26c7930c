"""A real capture device on a machine with no sound card: a user-space PulseAudio with a null sink.

What is played into the sink (``Speaker``) comes out of its monitor source, which PortAudio sees
through ALSA's pulse plugin (libasound2-plugins) as the devices "pulse" and "default": the real
microphone driver then runs on the real libraries, sample for sample. Killing and restarting the
server makes the device vanish and come back, as an unplugged USB microphone does. Used by the
microphone tests and by a virtual rig that speaks the simulated scenario into the sink.

``PulseServer`` sets PULSE_SERVER and XDG_RUNTIME_DIR in ``os.environ`` when it starts: PortAudio
lists devices only in ``PyAudio()``, so the server must be running, and the variables set, before
the ``PyAudio()`` that should see it (each new instance looks again).

Nothing is left behind, however the owner ends: the server, its recorder and players run in a
process group of their own, led by a keeper process (pulse_keeper.py) that kills them and removes
the runtime dir when the owner is gone; a server that exits on its own is reaped at once; and each
start sweeps the runtime dirs of owners that died with their keeper.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edgefusion import log
from edgefusion.errors import EdgefusionError
from edgefusion.sim.pulse_keeper import kill_group

APT_PACKAGES = "apt-get install pulseaudio pulseaudio-utils libasound2-plugins"
START_TIMEOUT_S = 10.0
RUNTIME_PREFIX = "edgefusion-pulse-"  # + the owner's pid + "-": a later start can tell whose a dir was
KEEPER_PID_FILE = "keeper.pid"
REAP_POLL_S = 0.1  # how long a server that exited on its own may stay a zombie
FATAL_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # whose default action ends us without any cleanup
_running: set[PulseServer] = set()


class _Interrupted(BaseException):
    """A held signal that would end us came during a start: it gives up at a safe point."""


class _HeldSignals:
    """SIGINT, SIGTERM and SIGHUP while a server starts (main thread only). Their default actions
    would end us mid-``Popen``, between a child's birth and its handle, leaving a child nobody
    stops; so one that would end us is noted, the start gives up at its next wait (``check``),
    stops what it started, and then the signal is delivered (``deliver``). A handler of the
    caller's (the CLI's stop) is called at once: it decides."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.pending: list[int] = []
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _HeldSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._hold) for sig in self.SIGNALS}
        return self

    def _hold(self, sig: int, frame) -> None:
        previous = self._previous[sig]
        if callable(previous) and previous not in (signal.default_int_handler, _die_clean):
            previous(sig, frame)
        elif previous != signal.SIG_IGN:
            self.pending.append(sig)

    def check(self) -> None:
        if self.pending:
            raise _Interrupted

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def deliver(self) -> None:
        """The first held signal, as its handler now takes it: death, or KeyboardInterrupt."""
        signal.raise_signal(self.pending[0])
        raise KeyboardInterrupt  # a handler that returned (set from C, unknown to Python)


def _deadline_poll(ready, timeout_s: float, what: str, failed=lambda: "", held: _HeldSignals | None = None) -> None:
    end = time.monotonic() + timeout_s
    while not ready():
        if held is not None:
            held.check()
        why = failed()
        if why or time.monotonic() > end:
            raise EdgefusionError(f"PulseAudio: {what}: {why or f'not within {timeout_s:.0f} s'}")
        time.sleep(0.02)


def _in_group(pgid: int) -> dict:
    """Popen arguments that put the child in process group ``pgid`` (0: a new one it leads)."""
    if sys.version_info >= (3, 11):
        return {"process_group": pgid}
    return {"preexec_fn": lambda: os.setpgid(0, pgid)}  # pragma: no cover - Python 3.10


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended: only its parent has not looked yet)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def sweep_stale() -> list[Path]:
    """Remove the runtime dirs (and SIGKILL the processes) of servers whose owner and keeper both
    died: what a SIGKILL of the whole process tree leaves. A dir whose owner runs is never touched
    (two rigs at once), nor one whose name does not say its owner (another program's)."""
    swept = []
    for folder in Path(tempfile.gettempdir()).glob(f"{RUNTIME_PREFIX}*-*"):
        owner = folder.name[len(RUNTIME_PREFIX) :].split("-", 1)[0]
        if not owner.isdigit() or _alive(int(owner)) or not folder.is_dir():
            continue
        try:
            keeper = int((folder / KEEPER_PID_FILE).read_text())
        except (OSError, ValueError):  # the owner died before its keeper started
            keeper = None
        if keeper is not None:
            kill_group(keeper, str(folder))
        shutil.rmtree(folder, ignore_errors=True)
        swept.append(folder)
    return swept


def _die_clean(signum: int, _frame) -> None:
    """A fatal signal while servers run: end them (reaped, dirs removed), then die of it as the
    default action would. Nothing here waits on a ``Popen``: the signal may have interrupted one."""
    for server in list(_running):
        server.abandon()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _watch_fatal_signals(on: bool) -> None:
    """Take over SIGTERM and SIGHUP where their default action is in place (only the main thread
    may), from the first server's start to the last one's stop; a handler of the caller's (the
    CLI's stop on SIGTERM) stays, and brings the rig's close."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in FATAL_SIGNALS:
        current = signal.getsignal(sig)
        if on and current == signal.SIG_DFL:
            signal.signal(sig, _die_clean)
        elif not on and current is _die_clean:
            signal.signal(sig, signal.SIG_DFL)


class PulseServer:
    """A private PulseAudio daemon with one null sink, whose monitor is the default source.

    The daemon runs in the foreground as our child (not ``--daemonize``) so that ``kill`` and
    ``stop`` can wait for it to be gone, and a thread reaps it when it exits on its own: a
    daemonised server is re-parented away, leaving only its pid file to go by. Every process
    started for the server (``spawn``) joins the keeper's process group, so a terminal's Ctrl-C
    reaches only us and the keeper can end them all.
    """

    def __init__(self, sink: str = "edgefusion", rate: int = 16000, channels: int = 1):
        self.sink, self.rate, self.channels = sink, rate, channels
        self.runtime_dir: Path | None = None
        self.exited: int | None = None  # the status of a server that exited on its own, until relaunched
        self._daemon: subprocess.Popen | None = None
        self._keep_alive: subprocess.Popen | None = None
        self._keeper: subprocess.Popen | None = None
        self._saved_env: dict[str, str | None] = {}
        self._held: _HeldSignals | None = None  # during start only: a restart waits out its signals

    @property
    def source(self) -> str:
        return f"{self.sink}.monitor"

    def __enter__(self) -> PulseServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> PulseServer:
        missing = [tool for tool in ("pulseaudio", "pactl", "parec", "pacat") if shutil.which(tool) is None]
        if missing:
            raise EdgefusionError(f"the virtual audio rig needs {', '.join(missing)}: {APT_PACKAGES}")
        for folder in sweep_stale():
            log.notice(f"removed {folder}, left by a sound server whose owner was killed")
        held = _HeldSignals()
        with held:
            self._held = held
            try:
                self._start()
            except _Interrupted:
                pass  # stopped below, once the handlers are back
            except BaseException:
                self.stop()
                raise
            finally:
                self._held = None
        _running.add(self)
        _watch_fatal_signals(True)
        atexit.register(self.stop)  # an exit that skips the rig's close (an error, a Ctrl-C mid-setup)
        if held.pending:  # a signal that ends us came during the start: it acts with nothing left behind
            self.stop()
            held.deliver()
        return self

    def _start(self) -> None:
        self.runtime_dir = Path(tempfile.mkdtemp(prefix=f"{RUNTIME_PREFIX}{os.getpid()}-"))
        env = {
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "PULSE_SERVER": f"unix:{self.runtime_dir}/pulse/native",
            "PULSE_COOKIE": str(self.runtime_dir / "cookie"),  # each client makes one, by default in ~/.config
        }
        self._saved_env = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        self._start_keeper()
        self._launch()

    def _start_keeper(self) -> None:
        """Only we hold the write end of the keeper's stdin, so it sees the pipe end when we do."""
        script = Path(__file__).with_name("pulse_keeper.py")
        self._keeper = subprocess.Popen(
            [sys.executable, "-I", "-S", str(script), str(self.runtime_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **_in_group(0),  # a group of its own in our session (setpgid cannot join another session's)
        )
        (self.runtime_dir / KEEPER_PID_FILE).write_text(str(self._keeper.pid))

    def spawn(self, argv: list[str], **popen) -> subprocess.Popen:
        """Start a process of the server's (the server, a recorder, a player) in the keeper's group."""
        popen.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(argv, env=self._child_env(), **_in_group(self._keeper.pid), **popen)

    def _child_env(self) -> dict[str, str]:
        """Our environment with HOME in the runtime dir: the server and its tools keep their state
        and config in ~/.config/pulse, which is the user's, not theirs. Without systemd's notify and
        watchdog variables: under a service, pulseaudio would tell systemd READY=1 as if it were us."""
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        return {**env, "HOME": str(self.runtime_dir)}

    def _launch(self) -> None:
        # A killed server leaves its pid file, whose pid may since name another process.
        (self.runtime_dir / "pulse" / "pid").unlink(missing_ok=True)
        self.exited = None
        with open(self.runtime_dir / "daemon.log", "ab") as log_file:
            self._daemon = daemon = self.spawn(
                [
                    "pulseaudio",
                    "--daemonize=no",
                    "--system=no",
                    "-n",  # no default.pa: only the modules below
                    "--exit-idle-time=-1",
                    "--disallow-exit",
                    f"--load=module-native-protocol-unix auth-anonymous=1 socket={self.runtime_dir}/pulse/native",
                    f"--load=module-null-sink sink_name={self.sink} rate={self.rate} channels={self.channels}",
                    "--load=module-always-sink",
                ],
                stdout=log_file,
                stderr=log_file,
            )
        threading.Thread(target=self._reap, args=(daemon,), name="pulse-reaper", daemon=True).start()
        _deadline_poll(self._answers, START_TIMEOUT_S, "server did not answer", self._daemon_died, self._held)
        self._pactl("set-default-source", self.source).check_returncode()
        self._start_keep_alive()

    def _reap(self, daemon: subprocess.Popen) -> None:
        """Wait for the server to exit, so that one that dies on its own is no zombie; say so
        when nobody asked it to (``kill``, ``stop`` and ``restart`` replace ``_daemon`` first)."""
        while daemon.poll() is None:
            time.sleep(REAP_POLL_S)
        if daemon is self._daemon:
            self.exited = daemon.returncode
            log.warning(f"virtual microphone: the sound server exited on its own (status {daemon.returncode})")

    def _answers(self) -> bool:
        return self._pactl("info").returncode == 0

    def _pactl(self, *args: str) -> subprocess.CompletedProcess:
        """pactl, in the keeper's group as well: one the owner's death interrupts is ended too."""
        return subprocess.run(
            ["pactl", *args],
            capture_output=True,
            timeout=START_TIMEOUT_S,
            env=self._child_env(),
            **_in_group(self._keeper.pid),
        )

    def _daemon_died(self) -> str:
        if self._daemon.poll() is None:
            return ""
        tail = (self.runtime_dir / "daemon.log").read_text(errors="replace").strip().splitlines()[-2:]
        return f"exited with status {self._daemon.returncode}: {' | '.join(tail)}"

    def _start_keep_alive(self) -> None:
        """A recorder that keeps the monitor source running, started before any client reads.

        The sink starts rendering ~2 s after its first recorder connects; a PortAudio stream that
        connects later gets its first block within ~35 ms, one that connects first waits those 2 s.
        So this waits until the recorder gets audio, and drains it on a thread for as long as it
        runs (it ends with the server, and is reaped then)."""
        self._keep_alive = recorder = self.spawn(
            ["parec", "--latency-msec=20", "-d", self.source, "--raw"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        flowing = threading.Event()

        def drain() -> None:
            try:
                while recorder.stdout.read1(65536):
                    flowing.set()
            except (ValueError, OSError):  # _stop_keep_alive closed the pipe while this read it
                pass
            recorder.wait()

        threading.Thread(target=drain, name="pulse-keep-alive", daemon=True).start()
        _deadline_poll(
            flowing.is_set, START_TIMEOUT_S, "the null sink's monitor gave no audio", self._daemon_died, self._held
        )

    def _end_daemon(self, sig: int) -> None:
        """Send ``sig`` to the server and wait until it is gone (SIGKILL after 5 s)."""
        daemon, self._daemon = self._daemon, None  # first: its reaper must not take this for a crash
        if daemon is None:
            return
        daemon.send_signal(sig)
        daemon.send_signal(signal.SIGCONT)  # a frozen server hears SIGTERM only once it runs
        try:
            daemon.wait(timeout=5)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()

    def kill(self) -> None:
        """SIGKILL the server mid-stream: to its clients the device vanishes with no goodbye."""
        self._end_daemon(signal.SIGKILL)
        self._stop_keep_alive()

    def freeze(self) -> None:
        """SIGSTOP the server: its clients' streams stay open but no audio comes, as from a hung
        driver (a dead jackd hangs its clients' reads forever)."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: int) -> None:
        if self._daemon is not None:  # else killed, or it exited on its own meanwhile
            self._daemon.send_signal(sig)

    def restart(self) -> None:
        """Bring the device back at the same address, as after a replug."""
        self.kill()
        self._launch()

    def _stop_keep_alive(self) -> None:
        if self._keep_alive is not None:
            self._keep_alive.kill()
            self._keep_alive.wait()
            self._keep_alive.stdout.close()
            self._keep_alive = None

    def abandon(self) -> None:
        """End everything at once, from a signal handler: SIGKILL the keeper's group (the keeper
        with it), reap each of our children in it, remove the runtime dir."""
        if self._keeper is not None:
            group = self._keeper.pid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                while True:
                    os.waitpid(-group, 0)
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def stop(self) -> None:
        _running.discard(self)
        if not _running:
            _watch_fatal_signals(False)
        atexit.unregister(self.stop)
        self._stop_keep_alive()
        self._end_daemon(signal.SIGTERM)
        if self._keeper is not None:  # its pipe ends: it finds nothing left, removes the dir and exits
            self._keeper.stdin.close()
            try:
                self._keeper.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._keeper.kill()
                self._keeper.wait()
            self._keeper = None
        if self.runtime_dir is not None:  # the pid file and socket a killed server leaves, with the log
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            self.runtime_dir = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = {}


class Speaker:
    """Plays float32 audio in int16 units into a ``PulseServer``'s sink, in real time, from a thread.

    Blocks are written to ``pacat`` on a schedule (``lead_s`` ahead of when they are due) rather
    than as fast as its pipe takes them: a pipe holds 2 s of audio, which would all play before
    anything queued later. Between sounds it plays ``feed`` (an iterable of blocks of any length,
    e.g. the simulated scenario's speech) and, once that is exhausted or absent, silence, so the
    stream never stops. If the server goes away it keeps time and reconnects when it is back.
    """

    RETRY_S = 0.5

    def __init__(
        self,
        server: PulseServer,
        feed: Iterable[np.ndarray] = (),
        rate: int | None = None,
        block_s: float = 0.01,
        lead_s: float = 0.03,
    ):
        """``rate``: of the audio fed (default: the server's sink's)."""
        self.server, self.rate, self.lead_s = server, rate or server.rate, lead_s
        self.block = max(1, round(block_s * self.rate))
        self._feed = iter(feed)
        self._lock = threading.Lock()
        self._queued: list[np.ndarray] = []  # play() requests, then the current feed block's rest
        self._queued_n = 0
        self._due = 0.0  # when the next block's first sample is due
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pacat: subprocess.Popen | None = None
        self._retry_at = 0.0

    def __enter__(self) -> Speaker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> Speaker:
        self._due = time.monotonic() + self.lead_s
        self._thread = threading.Thread(target=self._run, name="pulse-speaker", daemon=True)
        self._thread.start()
        return self

    def play(self, samples: np.ndarray) -> float:
        """Queue ``samples`` after whatever is queued: returns when the first of them is due at the
        sink on time.monotonic()'s clock (it is heard after the sink's latency, ~20 ms later)."""
        samples = np.asarray(samples, np.float32)
        with self._lock:
            due = max(self._due, time.monotonic() + self.lead_s) + self._queued_n / self.rate
            self._queued.append(samples)
            self._queued_n += len(samples)
        return due

    def _take(self) -> np.ndarray:
        out = np.zeros(self.block, np.float32)
        filled = 0
        with self._lock:
            while filled < self.block:
                if not self._queued:
                    block = next(self._feed, None)
                    if block is None:
                        break
                    self._queued.append(np.asarray(block, np.float32))
                    self._queued_n += len(block)
                head = self._queued[0]
                k = min(len(head), self.block - filled)
                out[filled : filled + k] = head[:k]
                filled += k
                self._queued_n -= k
                if k == len(head):
                    self._queued.pop(0)
                else:
                    self._queued[0] = head[k:]
            self._due += self.block / self.rate
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            if self._due - now > self.lead_s:
                self._stop.wait(self._due - now - self.lead_s)
                continue
            if self._due < now - 0.2:  # this thread was held up: catch up in time, not in a burst
                with self._lock:
                    self._due = now
            pcm = np.clip(self._take(), -32768, 32767).astype("<i2").tobytes()
            self._write(pcm)
        self._close_pacat()

    def _write(self, pcm: bytes) -> None:
        if self._pacat is None:
            if time.monotonic() < self._retry_at:
                return  # no server: the audio of this moment is lost, as a voice in an empty room
            try:
                self._pacat = self._spawn_pacat()
            except OSError:  # the keeper's group is gone (the rig is being taken down): as no server
                self._retry_at = time.monotonic() + self.RETRY_S
                return
            # The server plays what it is given at once: ``lead_s`` of silence first puts each block
            # at the sink when it is due, and keeps a late wake-up of this thread from being a gap.
            pcm = bytes(2 * round(self.lead_s * self.rate)) + pcm
        try:
            self._pacat.stdin.write(pcm)
            self._pacat.stdin.flush()
        except (BrokenPipeError, OSError):  # the server went away and pacat with it
            self._close_pacat()
            self._retry_at = time.monotonic() + self.RETRY_S

    def _spawn_pacat(self) -> subprocess.Popen:
        return self.server.spawn(
            [
                "pacat",
                "--playback",
                "--raw",
                "--format=s16le",
                f"--rate={self.rate}",
                "--channels=1",
                "--latency-msec=20",
                "-d",
                self.server.sink,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _close_pacat(self) -> None:
        if self._pacat is not None:
            try:
                self._pacat.stdin.close()
            except OSError:
                pass
            self._pacat.kill()
            self._pacat.wait()
            self._pacat = None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
