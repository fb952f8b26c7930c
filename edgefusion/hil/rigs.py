"""The rigs the HIL suite runs on, and the faults each can cause.

A fault here is a named way the hardware fails (``FAULTS``); each rig causes it its own way and says
how (``HilRig.how``): the virtual rig through its software camera and private PulseAudio (the
``[source] faults`` script), the real rig by acting on the devices from outside the runtime (USB
de-authorisation, ``hardware_reset()``, the sound card disabled). A run's faults become a
``FaultPlan``: the loop's config for the rig, what to do once the rig's clock starts, and a close
that gives every device back whatever happened, so a failed test never leaves a robot without its
camera.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edgefusion.config import Config

# The HIL faults: name -> the streams it takes away (or, for a frozen camera, makes repeat).
FAULTS: dict[str, tuple[str, ...]] = {
    "camera-unplug": ("rgb", "depth"),  # the RealSense's USB port de-authorised, then authorised
    "camera-reset": ("rgb", "depth"),  # the RealSense's hardware_reset(): it drops off the bus and re-enumerates
    "mic-unplug": ("audio",),  # the microphone's sound card disabled, then enabled
    "camera-frozen": ("rgb", "depth"),  # the camera repeats one frame, timestamps still advancing
    "camera-and-mic": ("rgb", "depth", "audio"),  # the camera unplugged and the microphone disabled at once
}


@dataclass(frozen=True)
class FaultWindow:
    fault: str  # a key of FAULTS
    start_s: float  # seconds from the rig's start
    end_s: float  # when the device is given back


@dataclass
class FaultPlan:
    """One run's faults on one rig. ``start(t0)`` is called once the rig's clock has started (t0 on
    the monotonic clock); ``close()`` gives every device back, and is always called."""

    config: Config
    faults: tuple[FaultWindow, ...] = ()
    hooks: list = field(default_factory=list)  # the rig's own (start, close) pair, where it has one
    # A fault acted in software on the real drivers (a frozen RealSense: no command freezes one):
    # the rig's sensors by stream in, the ones the loop reads out. None: the sensors as they are.
    wrap_sensors: Callable[[dict], dict] | None = None

    def wrap(self, sensors: dict) -> dict:
        return sensors if self.wrap_sensors is None else self.wrap_sensors(sensors)

    def start(self, t0: float) -> None:
        for start, _ in self.hooks:
            start(t0)

    def close(self) -> None:
        for _, close in self.hooks:
            close()


class HilRig(ABC):
    kind: str

    @abstractmethod
    def unavailable(self, streams: Sequence[str]) -> str | None:
        """Why this rig cannot give these streams here (a skip reason naming what is missing), or None."""

    @abstractmethod
    def how(self, fault: str) -> str | None:
        """How this rig causes ``fault`` (for the report), or None where it cannot (the test skips)."""

    def why_not(self, fault: str) -> str | None:
        """Why ``fault`` cannot be caused here, naming what is missing (a skip reason), or None."""
        return None if self.how(fault) is not None else f"the {self.kind} rig has no way to cause {fault}"

    @abstractmethod
    def plan(self, faults: Sequence[FaultWindow] = (), base: Config | None = None) -> FaultPlan:
        """The loop's config for this rig (``base``'s runtime, sensors and output sections kept)
        and the faults ready to act."""

    @abstractmethod
    def facts(self) -> dict[str, str]:
        """The devices, for the report: camera model, serial and firmware, microphone."""


def config_from(base: Config | None) -> Config:
    """A rig's own copy of ``base`` (the defaults where None): a plan never changes the caller's config."""
    return copy.deepcopy(base) if base is not None else Config()


# How the virtual rig causes each fault: the [source] faults script items per window.
_VIRTUAL = {
    "camera-unplug": (("rgb", "stop"), ("depth", "stop")),
    "camera-reset": (("rgb", "stop"), ("depth", "stop")),
    "mic-unplug": (("audio", "stop"),),
    "camera-frozen": (("rgb", "frozen"), ("depth", "frozen")),
    "camera-and-mic": (("rgb", "stop"), ("depth", "stop"), ("audio", "stop")),
}
_VIRTUAL_HOW = {
    "camera-unplug": "the software RealSense stops streaming (rgb:stop, depth:stop)",
    "camera-reset": "the software RealSense stops streaming and starts again (rgb:stop, depth:stop)",
    "mic-unplug": "the private PulseAudio server is killed and restarted (audio:stop)",
    "camera-frozen": "the software RealSense repeats one frame (rgb:frozen, depth:frozen)",
    "camera-and-mic": "the software RealSense stops and the PulseAudio server is killed (all stop)",
}


class VirtualRig(HilRig):
    """The simulated scenario through the real pyrealsense2 (a software device) and PortAudio (a
    private PulseAudio null sink): what CI runs."""

    kind = "virtual"

    def unavailable(self, streams: Sequence[str]) -> str | None:
        import importlib.util
        import shutil

        need = []
        if {"rgb", "depth"} & set(streams) and importlib.util.find_spec("pyrealsense2") is None:
            need.append("pyrealsense2 (pip install pyrealsense2)")
        if "audio" in streams:
            if importlib.util.find_spec("pyaudio") is None:
                need.append("pyaudio (pip install pyaudio)")
            if shutil.which("pulseaudio") is None or shutil.which("pacat") is None:
                need.append("pulseaudio and pulseaudio-utils (apt-get install pulseaudio pulseaudio-utils)")
        return f"the virtual rig needs {', '.join(need)}" if need else None

    def how(self, fault: str) -> str | None:
        return _VIRTUAL_HOW.get(fault)

    def plan(self, faults: Sequence[FaultWindow] = (), base: Config | None = None) -> FaultPlan:
        cfg = config_from(base)
        cfg.source.kind = "virtual"
        cfg.source.faults = ",".join(
            f"{stream}:{kind}@{w.start_s:g}-{w.end_s:g}" for w in faults for stream, kind in _VIRTUAL[w.fault]
        )
        return FaultPlan(cfg, tuple(faults))

    def facts(self) -> dict[str, str]:
        return {
            "camera": "virtual: pyrealsense2 software_device fed the simulated scenario",
            "microphone": "virtual: a private PulseAudio null sink's monitor, through PortAudio",
        }


def make_hil_rig(kind: str, **options) -> HilRig:
    if kind == "virtual":
        return VirtualRig()
    from edgefusion.hil.realsense import RealSenseRig

    return RealSenseRig(**options)
