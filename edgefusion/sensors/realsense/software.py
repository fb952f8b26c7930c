"""A RealSense made of software (``rs.software_device``): the virtual rig's camera, and the
writer of RealSense recordings from a session's frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgefusion.errors import EdgefusionError
from edgefusion.sensors.realsense.sdk import import_realsense, recording_suffix


def _intrinsics(rs, width: int, height: int):
    """The task camera's pinhole model (58 px focal length at 64 px width), scaled to this size."""
    intr = rs.intrinsics()
    intr.width, intr.height = width, height
    intr.ppx, intr.ppy = (width - 1) / 2, (height - 1) / 2  # the SDK puts pixel centres on integers
    intr.fx = intr.fy = 58.0 * width / 64
    intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
    return intr


class SoftwareCamera:
    """A RealSense made of software (``rs.software_device``), fed frame by frame by the caller.

    Pass ``device`` to ``RealSenseCamera`` to use it as a live camera (the pipeline starts its
    sensors), or give ``record_to`` to write a recording: its sensors are then started here, and
    the file is complete only after ``close``. The SDK names the format by the suffix: see
    ``recording_suffix``. The recording's clock is the wall time at which frames were fed, not
    their timestamps: feed at the frame rate for a recording that plays back in real time.
    """

    def __init__(
        self,
        sizes: dict[str, tuple[int, int]],
        fps: int = 30,
        depth_units: float = 0.001,
        record_to: str | Path | None = None,
        serial: str = "edgefusion-software",
    ):
        """``sizes``: stream ("rgb", "depth") -> (height, width) of its frames; only those streams exist."""
        rs = self._rs = import_realsense()
        self.sizes = dict(sizes)
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.name, "edgefusion software camera")
        self.device.register_info(rs.camera_info.serial_number, serial)
        self._sensors: dict[str, Any] = {}
        self._profiles: dict[str, Any] = {}
        layout: dict[str, tuple] = {
            "depth": ("Stereo Module", rs.stream.depth, rs.format.z16, 2),
            "rgb": ("RGB Camera", rs.stream.color, rs.format.rgb8, 3),
        }
        for uid, m in enumerate(m for m in ("depth", "rgb") if m in sizes):  # depth first: the SDK's depth sensor
            sensor_name, kind, fmt, bpp = layout[m]
            height, width = sizes[m]
            stream = rs.video_stream()
            stream.type, stream.index, stream.uid, stream.fmt, stream.bpp = kind, 0, uid, fmt, bpp
            stream.width, stream.height, stream.fps = width, height, fps
            stream.intrinsics = _intrinsics(rs, width, height)
            sensor = self.device.add_sensor(sensor_name)
            self._sensors[m] = sensor
            self._profiles[m] = sensor.add_video_stream(stream).as_video_stream_profile()
        if "depth" in sizes:  # a depth-units option is what makes the SDK treat a sensor as a depth sensor
            self._sensors["depth"].add_read_only_option(rs.option.depth_units, depth_units)
        if len(self._sensors) == 2:
            extrinsics = rs.extrinsics()
            extrinsics.rotation, extrinsics.translation = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], [0.0, 0, 0]
            self._profiles["depth"].register_extrinsics_to(self._profiles["rgb"], extrinsics)  # rs.align needs it
            self.device.create_matcher(rs.matchers.dlr_c)
        self._frame_numbers = dict.fromkeys(self._sensors, 0)
        self._recorder = None
        if record_to is not None:
            try:
                self._recorder = rs.recorder(str(record_to), self.device)
            except RuntimeError as err:
                raise EdgefusionError(
                    f"{record_to}: cannot record there ({err}); this pyrealsense2 writes {recording_suffix()} files"
                ) from err
            for stream_name, sensor in self._sensors.items():
                sensor.open(self._profiles[stream_name])
                sensor.start(rs.frame_queue(1))  # someone must consume; the recorder has taken its copy

    def feed(self, frames: dict[str, np.ndarray], t_ms: float) -> None:
        """One moment: stream -> pixels (rgb uint8 (H, W, 3), depth uint16 (H, W) in depth units),
        all stamped ``t_ms`` on the device's hardware clock; depth first, as a RealSense sends."""
        for m in ("depth", "rgb"):
            if m in frames:
                self.feed_stream(m, frames[m], t_ms)

    def feed_stream(self, modality: str, pixels: np.ndarray, t_ms: float) -> None:
        """One frame of one stream ("rgb" or "depth"), with its own time: a session recording
        keeps each stream's frames as they came. Frame numbers count up from 0 per stream."""
        rs = self._rs
        height, width = self.sizes[modality]
        shape, dtype, bpp = (
            ((height, width), np.uint16, 2) if modality == "depth" else ((height, width, 3), np.uint8, 3)
        )
        if pixels.shape != shape or pixels.dtype != dtype:
            raise ValueError(f"expected {np.dtype(dtype).name} {shape}, got {pixels.dtype} {pixels.shape}")
        frame = rs.software_video_frame()
        frame.pixels = np.ascontiguousarray(pixels)  # copied by the SDK
        frame.bpp, frame.stride = bpp, width * bpp
        frame.timestamp, frame.domain = t_ms, rs.timestamp_domain.hardware_clock
        frame.frame_number, frame.profile = self._frame_numbers[modality], self._profiles[modality]
        self._sensors[modality].on_video_frame(frame)
        self._frame_numbers[modality] += 1

    def close(self) -> None:
        """Stop the sensors started here and finish the recording: the SDK writes the file out
        only when the recorder object is destroyed, so this drops the last reference to it."""
        if self._recorder is None:
            return
        for sensor in self._sensors.values():
            sensor.stop()
            sensor.close()
        self._recorder = None

    def __enter__(self) -> SoftwareCamera:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
