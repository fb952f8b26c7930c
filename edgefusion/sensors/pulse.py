"""A real capture device on a machine with no sound card: a user-space PulseAudio with a null sink.

What is played into the sink (``Speaker``) comes out of its monitor source, which PortAudio sees
through ALSA's pulse plugin (libasound2-plugins) as the devices "pulse" and "default": the real
microphone driver then runs on the real libraries, sample for sample. Killing and restarting the
server makes the device vanish and come back, as an unplugged USB microphone does. Used by the
microphone tests and by a virtual rig that speaks the simulated scenario into the sink.

``PulseServer`` sets PULSE_SERVER and XDG_RUNTIME_DIR in ``os.environ`` when it starts: PortAudio
lists devices only in ``PyAudio()``, so the server must be running, and the variables set, before
the ``PyAudio()`` that should see it (each new instance looks again).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edgefusion.errors import EdgefusionError
from edgefusion.task import SAMPLE_RATE

APT_PACKAGES = "apt-get install pulseaudio pulseaudio-utils libasound2-plugins"
START_TIMEOUT_S = 10.0


def _deadline_poll(ready, timeout_s: float, what: str, failed=lambda: "") -> None:
    end = time.monotonic() + timeout_s
    while not ready():
        why = failed()
        if why or time.monotonic() > end:
            raise EdgefusionError(f"PulseAudio: {what}: {why or f'not within {timeout_s:.0f} s'}")
        time.sleep(0.02)


class PulseServer:
    """A private PulseAudio daemon with one null sink, whose monitor is the default source.

    The daemon runs in the foreground as our child (not ``--daemonize``) so that ``kill`` and
    ``stop`` can wait for it to be gone, and nothing is left behind: a daemonised server is
    re-parented away, leaving only its pid file to go by.
    """

    def __init__(self, sink: str = "edgefusion", rate: int = SAMPLE_RATE, channels: int = 1):
        self.sink, self.rate, self.channels = sink, rate, channels
        self.runtime_dir: Path | None = None
        self._daemon: subprocess.Popen | None = None
        self._keep_alive: subprocess.Popen | None = None
        self._saved_env: dict[str, str | None] = {}

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
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="edgefusion-pulse-"))
        env = {"XDG_RUNTIME_DIR": str(self.runtime_dir), "PULSE_SERVER": f"unix:{self.runtime_dir}/pulse/native"}
        self._saved_env = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            self._launch()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self) -> None:
        with open(self.runtime_dir / "daemon.log", "ab") as log:
            self._daemon = subprocess.Popen(
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
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        _deadline_poll(self._answers, START_TIMEOUT_S, "server did not answer", self._daemon_died)
        subprocess.run(["pactl", "set-default-source", self.source], check=True, capture_output=True)
        self._start_keep_alive()

    def _answers(self) -> bool:
        return subprocess.run(["pactl", "info"], capture_output=True, timeout=START_TIMEOUT_S).returncode == 0

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
        runs (it ends with the server)."""
        self._keep_alive = subprocess.Popen(
            ["parec", "--latency-msec=20", "-d", self.source, "--raw"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        pipe = self._keep_alive.stdout
        flowing = threading.Event()

        def drain() -> None:
            while pipe.read1(65536):
                flowing.set()

        threading.Thread(target=drain, name="pulse-keep-alive", daemon=True).start()
        _deadline_poll(flowing.is_set, START_TIMEOUT_S, "the null sink's monitor gave no audio", self._daemon_died)

    def kill(self) -> None:
        """SIGKILL the server mid-stream: to its clients the device vanishes with no goodbye."""
        if self._daemon is not None:
            self._daemon.send_signal(signal.SIGKILL)
            self._daemon.wait()
        self._stop_keep_alive()

    def freeze(self) -> None:
        """SIGSTOP the server: its clients' streams stay open but no audio comes, as from a hung
        driver (a dead jackd hangs its clients' reads forever)."""
        self._daemon.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._daemon.send_signal(signal.SIGCONT)

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

    def stop(self) -> None:
        self._stop_keep_alive()
        if self._daemon is not None:
            self._daemon.terminate()
            self.thaw()  # a frozen server hears SIGTERM only once it runs
            try:
                self._daemon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._daemon.kill()
                self._daemon.wait()
            self._daemon = None
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
        rate: int = SAMPLE_RATE,
        block_s: float = 0.01,
        lead_s: float = 0.03,
    ):
        self.server, self.rate, self.lead_s = server, rate, lead_s
        self.block = max(1, round(block_s * rate))
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
            self._pacat = subprocess.Popen(
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
            # The server plays what it is given at once: ``lead_s`` of silence first puts each block
            # at the sink when it is due, and keeps a late wake-up of this thread from being a gap.
            pcm = bytes(2 * round(self.lead_s * self.rate)) + pcm
        try:
            self._pacat.stdin.write(pcm)
            self._pacat.stdin.flush()
        except (BrokenPipeError, OSError):  # the server went away and pacat with it
            self._close_pacat()
            self._retry_at = time.monotonic() + self.RETRY_S

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
