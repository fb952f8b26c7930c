"""A session's camera frames as a RealSense recording (RGB8 and/or Z16, each at the model's size).

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
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgefusion.errors import SessionError
from edgefusion.sensors.frames import DEPTH_SCALE, Resample, depth_z16, rgb8
from edgefusion.sensors.realsense import SoftwareCamera, check_recording, import_realsense, recording_suffix
from edgefusion.session.files import check_readable, is_present

CAMERA_STEM = "camera"


def camera_file_name() -> str:
    return CAMERA_STEM + recording_suffix()


def find_camera_file(root: Path) -> Path | None:
    for suffix in (".db3", ".bag"):
        if is_present(root / (CAMERA_STEM + suffix)):
            return root / (CAMERA_STEM + suffix)
    return None


class CameraFileWriter:
    """Frames in (the model's float format), a RealSense recording out; ``close`` finalises it.
    ``sizes``: stream -> (height, width), the streams recorded."""

    def __init__(self, path: Path, sizes: dict[str, tuple[int, int]], fps: int = 30):
        self._camera = SoftwareCamera(sizes, fps, depth_units=DEPTH_SCALE, record_to=path)

    def write(self, modality: str, frame: np.ndarray, t: float) -> None:
        pixels = rgb8(np.moveaxis(frame, 0, -1)) if modality == "rgb" else depth_z16(frame[0])
        self._camera.feed_stream(modality, pixels, t * 1000.0)

    def close(self) -> None:
        self._camera.close()


def read_camera_file(
    path: Path, sizes: dict[str, tuple[int, int]] | None = None, stall_s: float = 10.0
) -> dict[str, list[tuple[float, np.ndarray]]]:
    """Every frame of each stream once, in the model's format, with its recorded time (s).

    ``sizes`` (stream -> (h, w)) brings frames of another size to the model's (a recording made
    by the SDK's tools at the camera's resolution, a session recorded for another bundle) as the
    live driver does, converted as each frame arrives so that a long full-resolution file is
    never held whole; a stream not in it keeps its recorded size, and None keeps every one's.

    Read from the playback device's sensors, not through a pipeline: a pipeline's syncer holds
    a stream's last frame back waiting for a partner, and at the end of the file it is lost.
    With the order pause → real time off → start → seek(0) → resume, non-real-time playback
    waits for each callback and delivers every frame, frame 0 included (SDK 2.59.1: every
    frame of every recording in the tests, in every run)."""
    rs = import_realsense()
    check_readable(path)
    check_recording(rs, path)  # a .db3 cut short would otherwise play without a word, frames lost
    frames: dict[str, dict[int, tuple[float, np.ndarray]]] = {"rgb": {}, "depth": {}}
    converters: dict[str, _Converter] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def on_frame(f) -> None:
        stream = f.profile.stream_type()
        modality = "rgb" if stream == rs.stream.color else "depth" if stream == rs.stream.depth else None
        if modality is None:
            return
        try:
            if modality not in converters:
                converters[modality] = _Converter(rs, f, (sizes or {}).get(modality), scale)
            model_frame = converters[modality](f)
        except SessionError as err:  # said once the playback is over: this is an SDK thread
            failures.append(f"{path}: {err}")
            return
        with lock:
            frames[modality][f.get_frame_number()] = (f.get_timestamp() / 1000.0, model_frame)

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
        while playback.current_status() != rs.playback_status.stopped and not failures:
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
    if failures:
        raise SessionError(failures[0])
    return {m: [f[n] for n in sorted(f)] for m, f in frames.items()}


class _Converter:
    """One stream's frames to the model's format: colour of any common 8-bit format to RGB,
    Z16 to metres, at the model's size (``Resample``, the live driver's, which at the same
    size copies exactly: a session replays bit for bit)."""

    def __init__(self, rs, f, out_size: tuple[int, int] | None, scale: float):
        video = f.as_video_frame()
        self.h, self.w, self.stride = video.get_height(), video.get_width(), video.get_stride_in_bytes()
        fmt = f.profile.format()
        self.is_depth = f.profile.stream_type() == rs.stream.depth
        if self.is_depth and fmt != rs.format.z16:
            raise SessionError(f"depth format {fmt.name}: only z16 depth replays; record depth as z16")
        unpack = (_depth_z16, None) if self.is_depth else _colour_formats(rs).get(fmt)
        if unpack is None:
            raise SessionError(
                f"colour format {fmt.name}: not replayable; record colour as rgb8, bgr8, rgba8, bgra8, yuyv or uyvy"
            )
        self.unpack: Unpack = unpack[0]
        self.to_rgb: ToRgb = unpack[1]
        self.scale = np.float32(scale)
        self.resample = Resample((self.h, self.w), out_size or (self.h, self.w))

    def __call__(self, f) -> np.ndarray:
        """A new array: nothing of the SDK's frame memory, which it recycles, is kept."""
        rows = np.frombuffer(f.get_data(), np.uint8, self.h * self.stride).reshape(self.h, self.stride)
        pixels = self.unpack(rows, self.w)  # rows may be padded past the image's width
        if self.is_depth:
            return self.resample.depth(pixels, self.scale)
        frame = self.resample.rgb(pixels)
        return frame if self.to_rgb is None else self.to_rgb(frame)


def _depth_z16(rows: np.ndarray, w: int) -> np.ndarray:
    return rows[:, : 2 * w].view("<u2")


Unpack = Callable[[np.ndarray, int], np.ndarray]  # (H, stride) bytes, W → (H, W, channels) pixels
ToRgb = Callable[[np.ndarray], np.ndarray] | None  # the resampled frame → RGB (None: it already is)


def _colour_formats(rs) -> dict[object, tuple[Unpack, ToRgb]]:
    """Colour format → how its bytes become pixels, and those pixels, resampled, RGB."""

    def channels(order, n):
        return lambda rows, w: rows[:, : n * w].reshape(rows.shape[0], w, n)[..., order], None

    def yuv422(y, u, v):
        return lambda rows, w: _yuv_pixels(rows[:, : 2 * w], y, u, v), _yuv_to_rgb

    return {
        rs.format.rgb8: channels([0, 1, 2], 3),
        rs.format.bgr8: channels([2, 1, 0], 3),
        rs.format.rgba8: channels([0, 1, 2], 4),
        rs.format.bgra8: channels([2, 1, 0], 4),
        rs.format.yuyv: yuv422(y=0, u=1, v=3),
        rs.format.uyvy: yuv422(y=1, u=0, v=2),
    }


def _yuv_pixels(rows: np.ndarray, y: int, u: int, v: int) -> np.ndarray:
    """Packed 4:2:2 (two pixels in four bytes) to (H, W, 3) Y, U, V: each pixel its own luma and
    its pair's chroma. Resampled like RGB and converted after: 34 ms a 1280x720 frame against
    100-170 ms for converting every pixel first (measured on a loaded 2-core machine)."""
    quads = rows.reshape(rows.shape[0], -1, 4)
    yuv = np.empty((*quads.shape[:2], 2, 3), np.uint8)
    yuv[..., 0] = quads[..., [y, y + 2]]
    yuv[..., 1] = quads[..., u, None]
    yuv[..., 2] = quads[..., v, None]
    return yuv.reshape(rows.shape[0], -1, 3)


def _yuv_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """(3, h, w) Y, U, V to RGB in whole 8-bit steps by BT.601's limited-range integer formula,
    the one librealsense's own YUYV → RGB8 uses: exact for a sampled pixel; for a block mean, it
    differs from converting each pixel first by the mean's rounding (within a step or two) and
    where a block mixes colours clipped at 0 or 255."""
    c, d, e = 298.0 * (yuv[0] - 16.0), yuv[1] - 128.0, yuv[2] - 128.0
    rgb = np.stack([c + 409.0 * e, c - 100.0 * d - 208.0 * e, c + 516.0 * d])
    return np.clip(np.floor((rgb + 128.0) / 256.0), 0, 255).astype(np.float32)
