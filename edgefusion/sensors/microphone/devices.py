"""PortAudio's input devices: loading pyaudio (on first use: this module imports without it),
choosing the configured device and rate, and keeping the C libraries' chatter off stderr."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

from edgefusion import log
from edgefusion.errors import EdgefusionError
from edgefusion.sensors.microphone.config import MicrophoneConfig

INSTALL_HINT = "pip install 'edgefusion[sensors]' (pyaudio builds against PortAudio: apt-get install portaudio19-dev)"


# Lines that ALSA, JACK and PortAudio print straight to fd 2 while PortAudio probes devices (about
# 80 on a machine without a sound card, all harmless) or fails to open one (then they say why).
_LIBRARY_LINE = re.compile(r"ALSA lib |Expression '.*' failed in |jack server |Jack\w*::|Cannot connect to server ")
_NOT_A_CAUSE = re.compile(r"ALSA lib conf|jack server |Jack\w*::|Cannot connect to server ")
_FD2_LOCK = threading.Lock()


class LibraryOutput:
    """What the C libraries wrote to fd 2 during a ``library_output()`` block."""

    def __init__(self):
        self.lines: list[str] = []

    def why(self) -> str:
        """The last library lines, for an error's reason: after a failed open they name the cause
        (JACK's complaints that no jackd runs, and ALSA's about its configuration, never do)."""
        last = [line for line in self.lines if not _NOT_A_CAUSE.match(line)][-2:]
        return f" (PortAudio: {' | '.join(last)})" if last else ""


@contextlib.contextmanager
def library_output():
    """Route fd 2 through a pipe for the block: the libraries' lines are kept (for the reason when
    an open fails, ``LibraryOutput.why``) and stay out of the user's terminal; anything else is
    passed on to stderr as it comes.

    fd 2 is redirected rather than ALSA's error handler replaced because JACK and PortAudio print
    too, each by its own path. The redirect is process-wide, hence the live pass-through: another
    thread's message is neither lost nor held back, even while a call into a hung device keeps the
    redirect in place (``PyAudio()`` blocks for as long as a PulseAudio server is stopped).
    """
    out = LibraryOutput()
    log.to_journal()  # decided on the real fd 2, not on the pipe below
    with _FD2_LOCK:
        sys.stderr.flush()
        read_fd, write_fd = os.pipe()
        saved = os.dup(2)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        sorter = threading.Thread(target=_sort_lines, args=(read_fd, os.dup(saved), out), daemon=True)
        sorter.start()
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)  # the pipe's last writer goes: the sorter reads to its end and stops
            os.close(saved)
            sorter.join(timeout=1.0)  # longer only if a child process inherited the pipe


def _sort_lines(read_fd: int, stderr_fd: int, out: LibraryOutput) -> None:
    with os.fdopen(read_fd, "rb") as pipe:
        for raw in pipe:
            line = raw.decode(errors="replace").rstrip("\n")
            if _LIBRARY_LINE.match(line):
                out.lines.append(line)
            elif line.strip():
                os.write(stderr_fd, raw)
    os.close(stderr_fd)


def import_pyaudio():
    try:
        import pyaudio
    except ImportError as err:  # also a built pyaudio whose libportaudio.so.2 is gone
        raise EdgefusionError(f"the microphone driver needs pyaudio ({err}): {INSTALL_HINT}") from err
    return pyaudio


# -- devices ---------------------------------------------------------------------------------------


def input_devices(pa) -> list[tuple[int, dict]]:
    """(index, info) of every device with input channels, as this PyAudio instance sees them."""
    infos = (pa.get_device_info_by_index(i) for i in range(pa.get_device_count()))
    return [(int(info["index"]), info) for info in infos if info["maxInputChannels"] > 0]


def _describe(devices: list[tuple[int, dict]]) -> str:
    listed = ", ".join(
        f"{i}: {info['name']!r} ({info['maxInputChannels']} ch, {info['defaultSampleRate']:.0f} Hz)"
        for i, info in devices
    )
    return f"available input devices: {listed or 'none'}"


def select_input_device(pa, device: str) -> tuple[int, dict]:
    """The input device ``device`` names: "" the default, digits an index, else a case-insensitive
    name (an exact name first, then a substring that must match only one device: picking the first
    of several would open whichever enumerates first, which can change from boot to boot)."""
    devices = input_devices(pa)
    spec = device.strip()
    if not spec:
        try:
            info = pa.get_default_input_device_info()
        except OSError:
            raise EdgefusionError(f"no default input device; {_describe(devices)}") from None
        return int(info["index"]), info
    if spec.isdigit():
        found = [(i, info) for i, info in devices if i == int(spec)]
    else:
        found = [(i, info) for i, info in devices if info["name"].lower() == spec.lower()]
        found = found or [(i, info) for i, info in devices if spec.lower() in info["name"].lower()]
    if len(found) == 1:
        return found[0]
    what = "several input devices match" if found else "no input device matches"
    raise EdgefusionError(f"{what} {device!r}; {_describe(devices)}")


def resolve_device(pyaudio, pa, cfg: MicrophoneConfig) -> tuple[int, dict, int]:
    """(index, info, rate) of the configured input, or an EdgefusionError saying what is wrong:
    no such device (with the list), too few channels, a rate it cannot give."""
    index, info = select_input_device(pa, cfg.device)
    rate = cfg.rate or int(info["defaultSampleRate"])
    name = f"input device {index} {info['name']!r}"
    if cfg.channels > info["maxInputChannels"]:
        raise EdgefusionError(f"{name} has {info['maxInputChannels']} input channels, not {cfg.channels}")
    with library_output() as out:
        try:
            pa.is_format_supported(rate, input_device=index, input_channels=cfg.channels, input_format=pyaudio.paInt16)
        except ValueError as err:
            raise EdgefusionError(
                f"{name} cannot capture {cfg.channels} ch of 16-bit audio at {rate} Hz ({err.args[0]}; its default"
                f" rate is {info['defaultSampleRate']:.0f} Hz: set rate = 0 to use it){out.why()}"
            ) from None
    return index, info, rate


def check_device(cfg: MicrophoneConfig) -> None:
    """Before a run: the device the config names (or its rate) must be there and able."""
    pyaudio = import_pyaudio()
    with library_output():
        pa = pyaudio.PyAudio()
    try:
        resolve_device(pyaudio, pa, cfg)
    finally:
        pa.terminate()
