"""The real rig: the robot's own RealSense and microphone, and the faults acted on them from outside
the runtime, the way they fail on a robot.

- camera-unplug: the camera's USB device de-authorised (``authorized`` 0, then 1, in sysfs): the
  kernel drops it as if the cable were pulled, and enumerates it again when given back. Root only.
- camera-reset: ``hardware_reset()`` through pyrealsense2; the camera drops off the bus and comes
  back by itself (the end of its window does nothing: the runtime's driver must re-open unaided).
- mic-unplug: where a PulseAudio server runs (a robot's desktop session), the microphone's card
  profile set to ``off`` and back to the one it had: the source vanishes, as a USB microphone's
  does when pulled. Without PulseAudio (a headless robot on plain ALSA), the USB microphone's
  ``authorized`` as for the camera. A microphone on neither (an I2S codec) cannot be taken away.
- camera-frozen: no command freezes a RealSense, so it is injected in software on the real frames:
  the driver's frame source repeats one moment's pixels while the frames' timestamps go on.

Every device taken is given back by the plan's close, whatever happened: a failed test never
leaves a robot without its camera or its microphone. pyrealsense2 and pyaudio are imported inside
the functions that use them; the sysfs root is a parameter (the tests use a fake tree).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgefusion import log
from edgefusion.config import Config
from edgefusion.errors import EdgefusionError
from edgefusion.hil.rigs import FAULTS, FaultPlan, FaultWindow, HilRig, config_from

INTEL = "8086"  # the USB vendor id of every RealSense
# What the rig reads of each camera (rs.camera_info): the report's facts, and the USB lookup's keys.
CAMERA_INFO = (
    "name",
    "serial_number",
    "asic_serial_number",
    "firmware_version",
    "usb_type_descriptor",
    "physical_port",
)
ROOT_HINT = "run the suite as root (sudo -E), or give the test user write access to it with a udev rule"


# -- sysfs --------------------------------------------------------------------------------------------


def _usb_ancestor(path: Path, root: Path) -> Path | None:
    """The USB device at or above ``path`` (a video node's or a sound card's sysfs directory): the
    first directory up that has both ``idVendor`` and ``authorized`` (an interface has neither)."""
    here, top = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    for d in (here, *here.parents):
        if d == top or top not in d.parents:
            return None
        if (d / "idVendor").is_file() and (d / "authorized").is_file():
            return d
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def camera_usb_device(sysfs: Path, port: str, serials: Sequence[str]) -> Path:
    """The RealSense's USB device directory: found from the port librealsense reports
    (``camera_info.physical_port``: a sysfs path of its video node with the kernel's backend, a
    bus-port such as ``2-1.3`` with the RSUSB backend), else the Intel device whose USB ``serial``
    is one of ``serials`` (the camera's and its ASIC's)."""
    devices = sysfs / "bus" / "usb" / "devices"
    if port.startswith("/sys/"):
        found = _usb_ancestor(sysfs / port[len("/sys/") :], sysfs)
        if found is not None:
            return found
    for token in reversed(re.findall(r"(?<![\w:.-])(\d+-\d+(?:\.\d+)*)", port)):
        if (devices / token / "authorized").is_file():
            return devices / token
    intel = [d for d in sorted(devices.glob("*")) if _read(d / "idVendor") == INTEL]
    for d in intel:
        if _read(d / "serial") in serials:
            return d
    listed = ", ".join(f"{d.name} (serial {_read(d / 'serial') or '?'})" for d in intel) or "none"
    raise EdgefusionError(
        f"no USB device for the RealSense (port {port!r}, serial {' or '.join(s for s in serials if s)}) under "
        f"{devices}; Intel devices there: {listed}"
    )


def card_usb_device(sysfs: Path, card: int) -> Path:
    """The USB device of ALSA card ``card`` (a USB microphone), or an error saying it is none."""
    node = sysfs / "class" / "sound" / f"card{card}" / "device"
    found = _usb_ancestor(node, sysfs) if node.exists() else None
    if found is None:
        raise EdgefusionError(f"ALSA card {card} is not a USB device ({node}): only a USB microphone can be unplugged")
    return found


def _writable(path: Path) -> str | None:
    return None if os.access(path, os.W_OK) else f"{path} is not writable: {ROOT_HINT}"


# -- PulseAudio ----------------------------------------------------------------------------------------


def pactl(*args: str) -> str:
    try:
        r = subprocess.run(
            ["pactl", *args], capture_output=True, text=True, timeout=10, env={**os.environ, "LC_ALL": "C"}
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise EdgefusionError(f"pactl {' '.join(args)}: {err}; install pulseaudio-utils") from None
    if r.returncode != 0:
        raise EdgefusionError(f"pactl {' '.join(args)}: {r.stderr.strip() or 'failed'}")
    return r.stdout


def pactl_blocks(text: str) -> list[dict[str, str]]:
    """``pactl list cards|sources`` (LC_ALL=C) as one dict per object: its header under "", its
    one-tab fields ("Name", "Active Profile") and its properties ("alsa.card")."""
    blocks: list[dict[str, str]] = []
    for line in text.splitlines():
        if line and not line[0].isspace():
            blocks.append({"": line.strip()})
        elif blocks and line.startswith("\t\t") and " = " in line:
            key, value = line.strip().split(" = ", 1)
            blocks[-1].setdefault(key, value.strip('"'))
        elif blocks and line.startswith("\t") and not line.startswith("\t\t") and ": " in line:
            key, value = line.strip().split(": ", 1)
            blocks[-1].setdefault(key, value)
    return blocks


def pulse_running() -> bool:
    try:
        pactl("info")
    except EdgefusionError:
        return False
    return True


def pulse_card() -> dict[str, str]:
    """The PulseAudio card of the default source (what PortAudio's "default" and "pulse" record)."""
    info = pactl("info").splitlines()
    default = next((line.split(": ", 1)[1] for line in info if line.startswith("Default Source: ")), "")
    source = next((b for b in pactl_blocks(pactl("list", "sources")) if b.get("Name") == default), {})
    alsa_card = source.get("alsa.card")
    for card in pactl_blocks(pactl("list", "cards")) if alsa_card else ():
        if card.get("alsa.card") == alsa_card:
            return card
    raise EdgefusionError(
        f"PulseAudio's default source {default!r} is no ALSA card's: make the microphone the default source "
        "(pactl set-default-source) or name its hw device"
    )


# -- the ways a device is taken away and given back ---------------------------------------------------


class _Way:
    """One device taken away (``take``) and given back (``give``); ``give`` after a ``take`` that
    failed half-way still gives back, and a second ``give`` does nothing."""

    def __init__(self, how: str):
        self.how = how
        self.taken = False

    def take(self) -> None:
        self.taken = True
        self._take()

    def give(self) -> None:
        if self.taken:
            self.taken = False
            self._give()

    def _take(self) -> None: ...

    def _give(self) -> None: ...


class Deauthorize(_Way):
    """A USB device de-authorised through sysfs: the kernel unbinds it, as if unplugged."""

    def __init__(self, device: Path, what: str):
        super().__init__(f"{what}'s USB device {device.name} de-authorised ({device / 'authorized'}: 0, then 1)")
        self.authorized = device / "authorized"

    def _take(self) -> None:
        self.authorized.write_text("0")

    def _give(self) -> None:
        self.authorized.write_text("1")


class HardwareReset(_Way):
    def __init__(self, serial: str):
        super().__init__(
            "hardware_reset() through pyrealsense2; it re-enumerates by itself (nothing at the window's end)"
        )
        self.serial = serial

    def _take(self) -> None:
        from edgefusion.sensors.realsense import import_realsense

        rs = import_realsense()
        for dev in rs.context().query_devices():
            if not self.serial or dev.get_info(rs.camera_info.serial_number) == self.serial:
                dev.hardware_reset()
                return
        raise EdgefusionError(f"RealSense {self.serial or '(any)'} not connected: nothing to reset")


class CardOff(_Way):
    """A PulseAudio card's profile set to ``off``, then back to the profile it had."""

    def __init__(self, card: dict[str, str]):
        self.card, self.profile = card["Name"], card.get("Active Profile", "")
        super().__init__(f"PulseAudio card {self.card} set to profile off, then back to {self.profile}")

    def _take(self) -> None:
        pactl("set-card-profile", self.card, "off")

    def _give(self) -> None:
        pactl("set-card-profile", self.card, self.profile)


class Freeze(_Way):
    """The camera's frames frozen in software: the driver's frame source (``Pipeline.next``) hands
    out one moment's pixels again while the window lasts, with each new frame's own timestamps,
    so the runtime's frozen-frame guard sees what a stuck camera would give."""

    def __init__(self):
        super().__init__("injected in software on the real frames: one moment's pixels repeated, timestamps advancing")

    def wrap(self, sensors: dict) -> dict:
        from edgefusion.sensors.realsense import RealSenseCamera

        camera = next(s for s in sensors.values() if isinstance(s, RealSenseCamera))
        opened = camera._open

        def open_frozen() -> None:  # the pipeline is made anew at every (re)open
            opened()
            camera._frames = _FrozenFrames(camera._frames, self)

        camera._open = open_frozen
        return sensors


class _FrozenFrames:
    def __init__(self, frames, freeze: Freeze):
        self._frames, self._freeze, self._held = frames, freeze, None

    def next(self, timeout_s: float):
        got = self._frames.next(timeout_s)
        if not self._freeze.taken:
            self._held = None
        elif got is not None:
            self._held = self._held or {m: f.copy() for m, f in got.frames.items()}
            got = got._replace(frames=self._held)
        return got

    def __getattr__(self, name):  # device, ended: the real pipeline's
        return getattr(self._frames, name)


class _Schedule:
    """The faults' takes and gives at their times from t0, on a thread of its own; ``close``
    stops it and gives back everything taken (what failed is raised, once all the rest is back)."""

    def __init__(self, events: list[tuple[float, _Way, bool]]):
        self.events = sorted(events, key=lambda e: e[0])
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._thread = threading.Thread(target=self._run, name="hil-faults", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for at, way, take in self.events:
            if self._stop.wait(max(0.0, self._t0 + at - time.monotonic())):
                return
            self._act(way, take)

    def _act(self, way: _Way, take: bool) -> None:
        try:
            way.take() if take else way.give()
        except (OSError, EdgefusionError, RuntimeError) as err:  # RuntimeError: the SDK's
            self.errors.append(f"{'taking' if take else 'giving back'} ({way.how}): {err}")
            log.warning(f"hil: {self.errors[-1]}")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for _, way, _ in self.events:
            if way.taken:
                self._act(way, False)
        if self.errors:
            errors, self.errors = self.errors, []
            raise EdgefusionError(f"the rig's faults did not act as planned: {'; '.join(errors)}")


# -- the rig ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Camera:
    serial: str
    info: dict[str, str]  # camera_info name -> value, those the device supports


class RealSenseRig(HilRig):
    """The robot's RealSense (``serial``: "" the first one) and microphone (``microphone``: as
    ``[microphone] device``, "" the default input)."""

    kind = "realsense"

    def __init__(self, serial: str = "", microphone: str = "", sysfs: str | Path = "/sys"):
        self.serial, self.microphone, self.sysfs = serial, microphone, Path(sysfs)

    # -- devices --
    def _camera(self) -> _Camera:
        import importlib.util

        if importlib.util.find_spec("pyrealsense2") is None:
            raise EdgefusionError("the real rig's camera needs pyrealsense2 (pip install 'edgefusion[sensors]')")
        from edgefusion.sensors.realsense import import_realsense

        rs = import_realsense()
        devices = list(rs.context().query_devices())
        if not devices:
            raise EdgefusionError("no RealSense connected (rs.context().query_devices() is empty): plug one in")
        kinds = [(k, getattr(rs.camera_info, k)) for k in CAMERA_INFO]
        infos = [{k: dev.get_info(kind) for k, kind in kinds if dev.supports(kind)} for dev in devices]
        for info in infos:
            if not self.serial or info.get("serial_number") == self.serial:
                return _Camera(info.get("serial_number", ""), info)
        connected = ", ".join(i.get("serial_number", "?") for i in infos)
        raise EdgefusionError(f"RealSense {self.serial} not connected (connected: {connected}); set EDGEFUSION_SERIAL")

    def _microphone(self) -> tuple[str, float]:
        """(name, default rate) of the input device the runtime will open."""
        import importlib.util

        if importlib.util.find_spec("pyaudio") is None:
            raise EdgefusionError("the real rig's microphone needs pyaudio (pip install 'edgefusion[sensors]')")
        from edgefusion.sensors.microphone import import_pyaudio, input_devices, library_output, select_input_device

        with library_output():
            pa = import_pyaudio().PyAudio()
        try:
            if not input_devices(pa):
                raise EdgefusionError("no input device (PortAudio lists none): plug in a microphone")
            _, info = select_input_device(pa, self.microphone)
        finally:
            pa.terminate()
        return info["name"], float(info["defaultSampleRate"])

    def unavailable(self, streams: Sequence[str]) -> str | None:
        missing = []
        for needed, device in (({"rgb", "depth"}, self._camera), ({"audio"}, self._microphone)):
            if needed & set(streams):
                try:
                    device()
                except EdgefusionError as err:
                    missing.append(str(err))
        return "; ".join(missing) or None

    # -- faults --
    def _ways(self, fault: str) -> list[_Way]:
        """How ``fault`` is caused here, resolved now (raises, saying what is missing)."""
        reason = self.unavailable(FAULTS[fault])
        if reason:
            raise EdgefusionError(reason)
        if fault == "camera-reset":
            return [HardwareReset(self._camera().serial)]
        if fault == "camera-frozen":
            return [Freeze()]
        ways = []
        if fault in ("camera-unplug", "camera-and-mic"):
            ways.append(self._camera_unplug())
        if fault in ("mic-unplug", "camera-and-mic"):
            ways.append(self._mic_unplug())
        return ways

    def _camera_unplug(self) -> _Way:
        camera = self._camera()
        serials = (camera.serial, camera.info.get("asic_serial_number", ""))
        device = camera_usb_device(self.sysfs, camera.info.get("physical_port", ""), serials)
        return self._deauthorize(device, f"RealSense {camera.serial}")

    def _mic_unplug(self) -> _Way:
        """Taken away on the path its audio takes: an ALSA card PortAudio opens itself (``hw:N``
        in its name) de-authorised on USB; audio through PulseAudio, its default source's card off."""
        name, _ = self._microphone()
        hw = re.search(r"\(hw:(\d+),", name)
        if hw:
            return self._deauthorize(card_usb_device(self.sysfs, int(hw.group(1))), f"microphone {name!r}")
        if pulse_running():
            return CardOff(pulse_card())
        raise EdgefusionError(
            f"microphone {name!r}: neither an ALSA card (hw:N) nor audio through a running PulseAudio, so nothing "
            "here can take it away; name the USB microphone's hw device (EDGEFUSION_MIC)"
        )

    def _deauthorize(self, device: Path, what: str) -> Deauthorize:
        reason = _writable(device / "authorized")
        if reason:
            raise EdgefusionError(f"unplugging the {what}: {reason}")
        return Deauthorize(device, what)

    def why_not(self, fault: str) -> str | None:
        """Why ``fault`` cannot be caused on this machine (what is missing), or None."""
        try:
            self._ways(fault)
        except EdgefusionError as err:
            return str(err)
        return None

    def how(self, fault: str) -> str | None:
        try:
            return "; ".join(way.how for way in self._ways(fault))
        except EdgefusionError:
            return None

    def plan(self, faults: Sequence[FaultWindow] = (), base: Config | None = None) -> FaultPlan:
        cfg = config_from(base)
        cfg.source.kind, cfg.source.faults = "realsense", ""
        cfg.camera = dataclasses.replace(cfg.camera, serial=self.serial)
        cfg.microphone = dataclasses.replace(cfg.microphone, device=self.microphone)
        events, freezes = [], []
        for w in faults:
            for way in self._ways(w.fault):
                events += [(w.start_s, way, True), (w.end_s, way, False)]
                freezes += [way] if isinstance(way, Freeze) else []
        schedule = _Schedule(events)

        def wrap(sensors: dict) -> dict:
            for freeze in freezes:
                sensors = freeze.wrap(sensors)
            return sensors

        return FaultPlan(cfg, tuple(faults), [(schedule.start, schedule.close)], wrap_sensors=wrap if freezes else None)

    def facts(self) -> dict[str, str]:
        facts = {}
        try:
            camera = self._camera()
            names = {"name": "camera", "serial_number": "camera serial", "firmware_version": "camera firmware"}
            names |= {"usb_type_descriptor": "camera USB", "physical_port": "camera port"}
            facts |= {names[k]: v for k, v in camera.info.items() if k in names}
        except EdgefusionError as err:
            facts["camera"] = str(err)
        try:
            name, rate = self._microphone()
            facts |= {"microphone": name, "microphone rate": f"{rate:.0f} Hz"}
        except EdgefusionError as err:
            facts["microphone"] = str(err)
        return facts
