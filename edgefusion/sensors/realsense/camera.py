"""A live RealSense (D4xx) as the rgb and depth sensors, and the pipeline that turns its framesets
into model frames.

Frames leave here in the model's format: rgb float32 (3, H, W) in 0..255, depth float32 (1, H, W)
in metres with 0 for "no data", each at its own size (the bundle's, ``sizes``). Only the streams
in ``sizes`` are opened: a depth-only bundle starts the camera without colour, and unaligned.
pyrealsense2 is imported inside the functions that need it (``sdk.import_realsense``).
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np

from edgefusion import log
from edgefusion.errors import EdgefusionError
from edgefusion.sensors.base import Sensor, SensorGone, SensorState, StreamView
from edgefusion.sensors.frames import CAMERAS, Resample
from edgefusion.sensors.realsense.config import RealSenseConfig
from edgefusion.sensors.realsense.sdk import connected_serials, import_realsense


class _Frames(NamedTuple):
    frame_number: int  # the colour frame's (the depth frame's where there is no colour)
    t_device_ms: float  # that frame's timestamp; a depth frame with it is within half a frame of it
    arrival: float  # time.monotonic() when the frameset was handed over
    frames: dict[str, np.ndarray]  # stream -> model frame, for every stream opened


def _frame_of(fs, stream: str):
    return fs.get_color_frame() if stream == "rgb" else fs.get_depth_frame()


class Pipeline:
    """A started pipeline's framesets as model frames: each moment once, filtered, aligned and
    resampled, for the streams in ``sizes`` (``CAMERAS`` order, colour first: its clock leads)."""

    def __init__(
        self,
        rs,
        pipe,
        profile,
        sizes: dict[str, tuple[int, int]],
        align: bool,
        filters: tuple[str, ...],
        ended=None,
    ):
        self.pipe = pipe
        self.device = profile.get_device()
        self.streams = [m for m in CAMERAS if m in sizes]
        kinds = {"rgb": rs.stream.color, "depth": rs.stream.depth}
        video = {m: profile.get_stream(kinds[m]).as_video_stream_profile() for m in self.streams}
        # The SDK's own matcher calls two frames one moment when they are within half a frame period.
        self._match_ms = 500.0 / min(v.fps() for v in video.values())
        depth = "depth" in sizes
        self.scale = np.float32(self.device.first_depth_sensor().get_depth_scale()) if depth else np.float32(0)
        makers = {"spatial": rs.spatial_filter, "temporal": rs.temporal_filter, "hole_filling": rs.hole_filling_filter}
        # Filters and alignment act on depth; alignment needs colour too. New per open: the
        # temporal filter has history.
        self._filters = [makers[name]() for name in filters] if depth else []
        self._align = rs.align(rs.stream.color) if align and len(self.streams) == 2 else None
        source = {m: video["rgb" if self._align is not None else m] for m in self.streams}
        self._resample = {m: Resample((source[m].height(), source[m].width()), sizes[m]) for m in self.streams}
        self._ended = ended  # a playback's end-of-file event (playback._EndOfFile); a live camera has no end
        self._last = dict.fromkeys(self.streams, -1)

    def next(self, timeout_s: float) -> _Frames | None:
        """The next new moment, or None when none came within ``timeout_s``.

        With both streams the pipeline hands out about two framesets per pair, the second
        repeating the other stream's last frame; a pair is new only when both its frame numbers
        differ from the last one handed out, and a pair is one moment only when the matcher's rule
        says so (at the start of a playback a depth frame can come with the previous colour frame)."""
        deadline = time.monotonic() + timeout_s
        while (left_ms := int((deadline - time.monotonic()) * 1000)) > 0:
            ok, fs = self.pipe.try_wait_for_frames(left_ms)
            if not ok:
                return None
            arrival = time.monotonic()
            got = {m: _frame_of(fs, m) for m in self.streams}
            if not all(got.values()):
                continue
            numbers = {m: f.get_frame_number() for m, f in got.items()}
            lead = got[self.streams[0]]
            t_ms = lead.get_timestamp()
            fresh = all(numbers[m] != self._last[m] for m in self.streams)
            if not fresh or any(abs(f.get_timestamp() - t_ms) >= self._match_ms for f in got.values()):
                continue
            self._last = numbers
            for block in self._filters:  # after de-duplication: the temporal filter must see each frame once
                fs = block.process(fs).as_frameset()
            if self._align is not None:
                fs = self._align.process(fs)
            frames = {}
            for m in self.streams:
                pixels = np.asanyarray(_frame_of(fs, m).get_data())
                resample = self._resample[m]
                frames[m] = resample.rgb(pixels) if m == "rgb" else resample.depth(pixels, self.scale)
            return _Frames(numbers[self.streams[0]], t_ms, arrival, frames)
        return None

    def ended(self) -> bool:
        return self._ended is not None and self._ended.is_set()


class RealSenseCamera(Sensor):
    """A RealSense delivering the streams of ``sizes`` (stream -> (height, width) of its model
    frames) from one capture thread, each stamped with the lead frame's hardware time (colour's,
    where it is opened) on the monotonic clock. ``sources`` maps each stream to what delivers
    it: this sensor for the first (colour, if opened), a view for depth beside it.

    ``device`` replaces the USB camera with another SDK device, e.g. a ``SoftwareCamera``'s (tests,
    the virtual rig); it needs pyrealsense2 >= 2.56 (``pipeline.set_device``).
    """

    def __init__(
        self,
        config: RealSenseConfig,
        sizes: dict[str, tuple[int, int]],
        device=None,
        name: str = "realsense",
        **kw,
    ):
        streams = [m for m in CAMERAS if m in sizes]
        if not streams or len(streams) != len(sizes):
            raise ValueError(f"a RealSense delivers {' and '.join(CAMERAS)}, not {', '.join(sizes) or 'nothing'}")
        self.modality = streams[0]  # before the base class's init, which reads it
        super().__init__(name, **kw)
        config.check("camera")
        self.sizes = dict(sizes)
        if device is not None and not hasattr(import_realsense().pipeline, "set_device"):
            raise EdgefusionError("a software RealSense needs pyrealsense2 >= 2.56 (pipeline.set_device)")
        self.config = config
        self.sources: dict[str, Sensor | StreamView] = {streams[0]: self}
        self.sources.update({m: self._stream(m) for m in streams[1:]})
        self._device = device
        self._pipe = self._frames = None
        self._misses = 0
        self._offset = math.inf

    def _start_pipeline(self, rs):
        """(pipeline, profile, end-of-file event or None), started."""
        pipe, cfg, c = rs.pipeline(), rs.config(), self.config
        if self._device is not None:
            pipe.set_device(self._device)
        else:
            # Look before starting: with no camera, pipeline.start() takes 15 s to say so and holds
            # the GIL all along (SDK 2.59.1), which would freeze the loop; the query takes 1 ms.
            serials = connected_serials()
            if not serials or (c.serial and c.serial not in serials):
                wanted = f"RealSense {c.serial} not" if c.serial else "no RealSense"
                raise SensorGone(f"{wanted} connected (connected: {', '.join(serials) or 'none'})")
            if c.serial:
                cfg.enable_device(c.serial)
        if "depth" in self.sizes:
            cfg.enable_stream(rs.stream.depth, c.width, c.height, rs.format.z16, c.fps)
        if "rgb" in self.sizes:
            cfg.enable_stream(rs.stream.color, c.width, c.height, rs.format.rgb8, c.fps)
        return pipe, pipe.start(cfg), None

    def _open(self) -> None:
        rs = import_realsense()
        pipe, profile, ended = self._start_pipeline(rs)
        c = self.config
        try:
            self._frames = Pipeline(rs, pipe, profile, self.sizes, c.align, c.filters, ended)
        except Exception:
            pipe.stop()
            raise
        self._pipe = pipe
        self._misses, self._offset = 0, math.inf

    def _capture(self, timeout_s: float):
        """The device clock is mapped onto time.monotonic() by the smallest (arrival - device time)
        seen since this open: every frame arrives late by a transfer time plus jitter that is never
        negative, so the minimum is the one least delayed and later jitter cannot move it, while a
        mean would follow every late burst. It restarts at each open, as a reset or replug restarts
        the device clock. (Drift between the two clocks is not followed within one open: tens of
        ppm, a few ms a minute.)"""
        got = self._frames.next(timeout_s)
        if got is None:
            return self._missed()
        self._misses = 0
        t_device = got.t_device_ms / 1000.0
        self._offset = min(self._offset, got.arrival - t_device)
        t = t_device + self._offset
        for view in self._views:
            view._publish(got.frames[view.modality], t)
        return got.frames[self.modality], t

    def _missed(self) -> None:
        """Users see "Frame didn't arrive" for a while and then either frames again or a camera that
        only a reset brings back: retry, reset before the last try, then give up as FAILED (the base
        reopens with backoff)."""
        self._misses += 1
        retries = self.config.retries
        if self._misses >= retries:
            raise SensorGone(f"no frames in {self._misses} tries")
        note = ""
        if self._misses == retries - 1:
            try:
                self._frames.device.hardware_reset()
            except RuntimeError:  # a software or playback device has no reset
                pass
            else:
                self.counters["resets"] += 1
                note = "; hardware reset sent"
                n = self.counters["resets"]
                if log.doubled(n - 1, n):
                    log.warning(f"camera {self.name}: no frames in {self._misses} tries, hardware reset ({n} so far)")
        self._set_state(SensorState.OK, f"no frame in {self._misses} of {retries} tries{note}")

    def _close(self) -> None:
        pipe, self._pipe, self._frames = self._pipe, None, None
        if pipe is not None:
            pipe.stop()
