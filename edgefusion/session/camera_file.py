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

CAMERA_STEM = "camera"


def import_realsense():  # TEMP until realsense.py lands
    import pyrealsense2 as rs

    return rs


def recording_suffix() -> str:  # TEMP
    rs = import_realsense()
    return ".db3" if tuple(int(x) for x in getattr(rs, "__version__", "2.0").split(".")[:2]) >= (2, 58) else ".bag"


def camera_file_name() -> str:
    return CAMERA_STEM + recording_suffix()


def find_camera_file(root: Path) -> Path | None:
    for suffix in (".db3", ".bag"):
        if (root / (CAMERA_STEM + suffix)).is_file():
            return root / (CAMERA_STEM + suffix)
    return None


class CameraFileWriter:
    """Frames in, a RealSense recording out; ``close`` finalises the file."""

    def __init__(self, path: Path, size: tuple[int, int], fps: int = 30):
        rs = import_realsense()
        h, w = size
        self._dev = rs.software_device()
        intr = rs.intrinsics()
        intr.width, intr.height, intr.ppx, intr.ppy = w, h, w / 2, h / 2
        intr.fx = intr.fy = float(w)  # nominal: a session's frames are already aligned
        intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
        self._sensors, self._profiles = {}, {}
        for modality, name, stream, fmt, bpp in (
            ("depth", "Stereo Module", rs.stream.depth, rs.format.z16, 2),
            ("rgb", "RGB Camera", rs.stream.color, rs.format.rgb8, 3),
        ):
            sensor = self._dev.add_sensor(name)
            vs = rs.video_stream()
            vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = (
                stream,
                0,
                len(self._sensors),
                w,
                h,
                fps,
                bpp,
                fmt,
            )
            vs.intrinsics = intr
            self._profiles[modality] = sensor.add_video_stream(vs)
            if modality == "depth":
                sensor.add_read_only_option(rs.option.depth_units, DEPTH_SCALE)
            self._sensors[modality] = sensor
        self._profiles["depth"].register_extrinsics_to(self._profiles["rgb"], rs.extrinsics())
        self._dev.create_matcher(rs.matchers.dlr_c)
        self._recorder = rs.recorder(str(path), self._dev)
        self._queue = rs.frame_queue(64)
        for modality, sensor in self._sensors.items():
            sensor.open(self._profiles[modality])
            sensor.start(self._queue)
        self._rs, self._size, self._numbers = rs, (h, w), {"rgb": 0, "depth": 0}

    def write(self, modality: str, frame: np.ndarray, t: float) -> None:
        rs = self._rs
        if modality == "rgb":
            pixels, bpp = rgb8(np.moveaxis(frame, 0, -1)), 3
        else:
            pixels, bpp = depth_z16(frame[0]), 2
        f = rs.software_video_frame()
        f.pixels, f.bpp, f.stride = np.ascontiguousarray(pixels), bpp, bpp * self._size[1]
        f.timestamp, f.domain = t * 1000.0, rs.timestamp_domain.hardware_clock
        f.frame_number = self._numbers[modality]
        f.profile = self._profiles[modality].as_video_stream_profile()
        self._sensors[modality].on_video_frame(f)
        self._numbers[modality] += 1
        while self._queue.poll_for_frame():  # nobody consumes the device's own queue
            pass

    def close(self) -> None:
        for sensor in self._sensors.values():
            sensor.stop()
            sensor.close()
        del self._recorder  # the recording is finalised when the recorder is destroyed
        self._sensors.clear()


def read_camera_file(path: Path, timeout_s: float = 60.0) -> dict[str, list[tuple[float, np.ndarray]]]:
    """Every frame of each stream once, in the model's format, with its recorded time (s).

    Read from the playback device's sensors, not through a pipeline: a pipeline's syncer holds
    a stream's last frame back waiting for a partner, and at the end of the file it is lost.
    With the order pause → real time off → start → seek(0) → resume, non-real-time playback
    waits for each callback and delivers every frame, frame 0 included (SDK 2.59.1: every
    frame of every recording in the tests, in every run)."""
    rs = import_realsense()
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
        deadline = time.monotonic() + timeout_s
        while playback.current_status() != rs.playback_status.stopped:
            if time.monotonic() > deadline:
                raise SessionError(f"{path}: playback did not reach its end within {timeout_s:.0f} s")
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
