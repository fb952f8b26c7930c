"""A session's camera frames as a RealSense recording (RGB8 + Z16 at the model's size).

Written through an ``rs.software_device`` wrapped in ``rs.recorder``, one frame per stream as
each arrives, so RGB and depth keep their own times: each frame's timestamp is its time on the
runtime's monotonic clock in milliseconds, which a recording keeps exactly. The file is SQLite
(``.db3``, SDK >= 2.58) or ROS1 (``.bag``, SDK <= 2.57); a recorder killed mid-write leaves a
``.db3`` readable up to its last frames (measured with SDK 2.59.1).
"""

from __future__ import annotations

import datetime
import threading
import time
from pathlib import Path

import numpy as np

from edgefusion.errors import SessionError
from edgefusion.sensors.frames import DEPTH_SCALE, depth_metres, depth_z16, rgb8
from edgefusion.sensors.realsense import SoftwareCamera, check_recording, import_realsense, recording_suffix

CAMERA_STEM = "camera"


def camera_file_name() -> str:
    return CAMERA_STEM + recording_suffix()


def find_camera_file(root: Path) -> Path | None:
    for suffix in (".db3", ".bag"):
        if (root / (CAMERA_STEM + suffix)).is_file():
            return root / (CAMERA_STEM + suffix)
    return None


class CameraFileWriter:
    """Frames in (the model's float format), a RealSense recording out; ``close`` finalises it."""

    def __init__(self, path: Path, size: tuple[int, int], fps: int = 30):
        h, w = size
        self._camera = SoftwareCamera(w, h, fps, depth_units=DEPTH_SCALE, record_to=path)

    def write(self, modality: str, frame: np.ndarray, t: float) -> None:
        pixels = rgb8(np.moveaxis(frame, 0, -1)) if modality == "rgb" else depth_z16(frame[0])
        self._camera.feed_stream(modality, pixels, t * 1000.0)

    def close(self) -> None:
        self._camera.close()


def read_camera_file(path: Path, stall_s: float = 10.0) -> dict[str, list[tuple[float, np.ndarray]]]:
    """Every frame of each stream once, in the model's format, with its recorded time (s).

    Read from the playback device's sensors, not through a pipeline: a pipeline's syncer holds
    a stream's last frame back waiting for a partner, and at the end of the file it is lost.
    With the order pause → real time off → start → seek(0) → resume, non-real-time playback
    waits for each callback and delivers every frame, frame 0 included (SDK 2.59.1: every
    frame of every recording in the tests, in every run)."""
    rs = import_realsense()
    check_recording(rs, path)  # a .db3 cut short would otherwise play without a word, frames lost
    frames: dict[str, dict[int, tuple[float, np.ndarray]]] = {"rgb": {}, "depth": {}}
    lock = threading.Lock()

    def on_frame(f) -> None:
        stream = f.profile.stream_type()
        modality = "rgb" if stream == rs.stream.color else "depth" if stream == rs.stream.depth else None
        if modality is not None:
            pixels = np.asanyarray(f.get_data()).copy()  # the SDK recycles the frame's memory
            with lock:
                frames[modality][f.get_frame_number()] = (f.get_timestamp() / 1000.0, pixels)

    try:
        device = rs.context().load_device(str(path))
        playback = device.as_playback()
        sensors = device.query_sensors()
        scale = next((s.as_depth_sensor().get_depth_scale() for s in sensors if s.is_depth_sensor()), DEPTH_SCALE)
        for s in sensors:
            s.open(s.get_stream_profiles())
        playback.pause()
        playback.set_real_time(False)
        for s in sensors:
            s.start(on_frame)
        playback.seek(datetime.timedelta(0))
        playback.resume()
    except RuntimeError as err:
        raise SessionError(f"{path}: not a readable RealSense recording ({err})") from None
    try:
        # However long the file, playback must keep delivering: no frame for ``stall_s`` is a fault.
        seen, last_progress = 0, time.monotonic()
        while playback.current_status() != rs.playback_status.stopped:
            count = len(frames["rgb"]) + len(frames["depth"])
            if count != seen:
                seen, last_progress = count, time.monotonic()
            elif time.monotonic() - last_progress > stall_s:
                raise SessionError(f"{path}: playback stalled ({stall_s:.0f} s without a frame after {seen})")
            time.sleep(0.005)
    finally:
        for s in sensors:
            s.stop()
            s.close()
    out = {
        "rgb": [(t, np.moveaxis(px, -1, 0).astype(np.float32)) for t, px in _in_order(frames["rgb"])],
        "depth": [(t, depth_metres(px, scale)[None]) for t, px in _in_order(frames["depth"])],
    }
    return out


def _in_order(frames: dict[int, tuple[float, np.ndarray]]) -> list[tuple[float, np.ndarray]]:
    return [frames[n] for n in sorted(frames)]
