"""The RealSense SDK itself: loading pyrealsense2 (lazily: the runtime imports this package on
machines without it, and only fails when a camera is used), its version, the cameras plugged in."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from edgefusion.errors import EdgefusionError


def import_realsense():
    _home_of_our_own()
    try:
        import pyrealsense2 as rs
    except ImportError as err:  # also a missing libusb-1.0.so.0 behind an installed wheel
        raise EdgefusionError(
            f"cannot import pyrealsense2 ({err}): pip install 'edgefusion[sensors]' (and apt-get install "
            "libusb-1.0-0); on a Jetson build librealsense with -DBUILD_PYTHON_BINDINGS=ON"
        ) from err
    return rs


def _home_of_our_own() -> None:
    """Point HOME at a private folder before pyrealsense2 loads: librealsense (>= 2.59, built with
    ENABLE_STATS) writes a usage report ("RUM") to ``$HOME/.rum/rum.json`` each time a device
    session ends and at exit, reading HOME each time, and no setting turns it off
    (RS2_RUM_CLOUD_ENABLED governs only its upload). The folder is one per user under the temp dir,
    reused by every run (nothing accumulates), and so the sound server's cookie and onnxruntime's
    device id land there too rather than in the service user's home. Where it cannot be ours
    (another user made it), HOME names a path no folder can be made in, and nothing is written."""
    home = Path(tempfile.gettempdir()) / f"edgefusion-home-{os.getuid()}"
    if os.environ.get("HOME") == str(home):
        return
    try:
        home.mkdir(mode=0o700, exist_ok=True)
        info = home.lstat()
        ours = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
    except OSError:
        ours = False
    os.environ["HOME"] = str(home) if ours else os.devnull


def sdk_version(rs) -> tuple[int, int]:
    """(major, minor); ``__version__`` only exists from 2.58 on, the release that changed the format."""
    version = getattr(rs, "__version__", None)
    return (2, 57) if version is None else tuple(int(part) for part in version.split(".")[:2])


def connected_serials() -> list[str]:
    """The serial numbers of the RealSense cameras plugged in now (a query of ~1 ms)."""
    rs = import_realsense()
    return [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]


def recording_suffix() -> str:
    """The file suffix the installed SDK records: ROS 2 ``.db3`` from 2.58 on, ROS 1 ``.bag`` before."""
    return ".db3" if sdk_version(import_realsense()) >= (2, 58) else ".bag"


def sdk_reason(err: Exception) -> str:
    """The useful tail of an SDK error ("Failed to resolve request. ... Reason: <this>"), on one line."""
    return " ".join(str(err).split("Reason:")[-1].split())
