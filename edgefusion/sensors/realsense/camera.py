"""Intel RealSense (D4xx) as the rgb and depth sensors, its recordings, and a camera made of software.

pyrealsense2 is imported lazily, inside the functions that need it: the runtime imports this module
on machines without the SDK (CI, a robot with another camera) and only fails when it is used.
Frames leave here in the model's format: rgb float32 (3, H, W) in 0..255, depth float32 (1, H, W)
in metres with 0 for "no data", each at its own size (the bundle's, ``sizes``). Only the streams
in ``sizes`` are opened: a depth-only bundle starts the camera without colour, and unaligned.
"""

from __future__ import annotations

import math
import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgefusion import log
from edgefusion.errors import EdgefusionError
from edgefusion.sensors.base import Sensor, SensorGone, SensorState, StreamView
from edgefusion.sensors.frames import CAMERAS, Resample

FILTERS = ("spatial", "temporal", "hole_filling")


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


def _sdk_version(rs) -> tuple[int, int]:
    """(major, minor); ``__version__`` only exists from 2.58 on, the release that changed the format."""
    version = getattr(rs, "__version__", None)
    return (2, 57) if version is None else tuple(int(part) for part in version.split(".")[:2])


def connected_serials() -> list[str]:
    """The serial numbers of the RealSense cameras plugged in now (a query of ~1 ms)."""
    rs = import_realsense()
    return [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]


def recording_suffix() -> str:
    """The file suffix the installed SDK records: ROS 2 ``.db3`` from 2.58 on, ROS 1 ``.bag`` before."""
    return ".db3" if _sdk_version(import_realsense()) >= (2, 58) else ".bag"


@dataclass(frozen=True)
class RealSenseConfig:
    """The config's ``[camera]`` table. ``serial`` "" takes the first camera found. ``filters`` run
    on depth in the order given, before ``align`` (their parameters are tuned in the depth
    camera's pixels). ``retries`` consecutive frame timeouts of the sensor's ``read_timeout_s``
    each make the camera FAILED; it is hardware-reset before the last one."""

    serial: str = ""
    width: int = 640
    height: int = 480
    fps: int = 30
    align: bool = True
    filters: tuple[str, ...] = ()
    retries: int = 5

    def check(self, at: str) -> None:
        unknown = [name for name in self.filters if name not in FILTERS]
        if unknown:
            raise EdgefusionError(f"{at}: unknown RealSense filter {unknown[0]!r}; choose among {', '.join(FILTERS)}")
        if self.retries < 1:
            raise EdgefusionError(f"{at}: retries must be at least 1, not {self.retries}")
        if not (self.width > 0 and self.height > 0 and self.fps > 0):
            raise EdgefusionError(
                f"{at}: width, height and fps must be > 0 (a mode the camera has, e.g. 640x480 at 30)"
            )


class _Frames(NamedTuple):
    frame_number: int  # the colour frame's (the depth frame's where there is no colour)
    t_device_ms: float  # that frame's timestamp; a depth frame with it is within half a frame of it
    arrival: float  # time.monotonic() when the frameset was handed over
    frames: dict[str, np.ndarray]  # stream -> model frame, for every stream opened


def _frame_of(fs, stream: str):
    return fs.get_color_frame() if stream == "rgb" else fs.get_depth_frame()


class _Pipeline:
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
        self._ended: _EndOfFile | None = ended  # a live camera has no end
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


def _sdk_reason(err: Exception) -> str:
    """The useful tail of an SDK error ("Failed to resolve request. ... Reason: <this>"), on one line."""
    return " ".join(str(err).split("Reason:")[-1].split())


def check_recording(rs, path: Path) -> None:
    """Fail on what the SDK reports badly or not at all: a missing file, a format this SDK cannot
    read, and a .db3 cut short, which the SDK may play without a word, losing its last frames."""
    if not path.is_file():
        raise EdgefusionError(f"{path}: no such recording; give the path of a RealSense .bag or .db3 file")
    if path.suffix not in (".bag", ".db3"):
        raise EdgefusionError(f"{path}: not a RealSense recording; give a .bag or .db3 file")
    if path.suffix == ".bag":
        return
    if _sdk_version(rs) < (2, 58):
        raise EdgefusionError(f"{path}: .db3 recordings need pyrealsense2 >= 2.58; upgrade it or record a .bag")
    with path.open("rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
        raise EdgefusionError(f"{path}: not a RealSense recording (not a ROS 2 .db3 file); re-record it")
    page = int.from_bytes(head[16:18], "big")
    expected = (65536 if page == 1 else page) * int.from_bytes(head[28:32], "big")
    size = path.stat().st_size
    if size < expected:
        raise EdgefusionError(f"{path}: truncated recording ({size} of {expected} bytes); copy it again or re-record")


def _on_status(stopped, event: threading.Event, status) -> None:
    if status == stopped:
        event.set()


class _EndOfFile:
    """A playback's end, from its "stopped" notification: polling the status can read "stopped"
    before the reader thread has started. It holds the playback object because pyrealsense2 drops
    the callback when the object it was set on is collected; the callback holds only the event, so
    no reference cycle runs through the SDK (which would keep the file open)."""

    def __init__(self, rs, playback):
        self._playback = playback
        self._event = threading.Event()
        playback.set_status_changed_callback(partial(_on_status, rs.playback_status.stopped, self._event))

    def is_set(self) -> bool:
        return self._event.is_set()


def _play(rs, path: Path, real_time: bool, streams=CAMERAS):
    """A pipeline started on a recording, its profile, and an event set at the end of the file;
    the recording must hold ``streams`` (others in it are played and not used).

    Measured on 2.59 (pyrealsense2 from PyPI): ``start(); set_real_time(False)`` loses frame 0,
    and so does ``pause, set_real_time(False), seek(0), resume`` after ``start`` in a third of runs.
    The device that ``resolve`` makes is the one ``start`` uses, so it is set up before the start
    and held paused until the pipeline is ready. ``resume`` is called on a thread of its own: it
    waits for the reader thread, which at max speed blocks once the pipeline's queue is full, so a
    resume on the consuming thread sometimes hung for the SDK's 10 s flush timeout. So done, every
    frame arrived in every run (hundreds, also with the machine loaded)."""
    check_recording(rs, path)
    pipe, cfg = rs.pipeline(), rs.config()
    try:
        cfg.enable_device_from_file(str(path), repeat_playback=False)
        resolved = cfg.resolve(rs.pipeline_wrapper(pipe))
        kinds = {stream.stream_type() for stream in resolved.get_streams()}
        sdk = {"rgb": ("color", rs.stream.color), "depth": ("depth", rs.stream.depth)}
        missing = [sdk[m][0] for m in CAMERAS if m in streams and sdk[m][1] not in kinds]
        if missing:
            raise EdgefusionError(
                f"{path}: the recording has no {' and no '.join(missing)} stream; record with "
                f"{' and '.join(sdk[m][0] for m in CAMERAS if m in streams)} enabled"
            )
        playback = resolved.get_device().as_playback()
        ended = _EndOfFile(rs, playback)
        playback.set_real_time(real_time)
        playback.pause()
        profile = pipe.start(cfg)
    except RuntimeError as err:
        raise EdgefusionError(f"{path}: cannot play this recording ({_sdk_reason(err)}); re-record it") from err
    threading.Thread(target=playback.resume, name="realsense-resume", daemon=True).start()
    return pipe, profile, ended


def iter_recording(
    path: str | Path, sizes: dict[str, tuple[int, int]], align: bool = True
) -> Iterator[tuple[int, float, dict[str, np.ndarray]]]:
    """Every moment of the ``sizes`` streams of a .bag or .db3, once and in order, as fast as it
    decodes: ``(frame number, device time in s, {stream: frame})``, frames at ``sizes``."""
    rs = import_realsense()
    pipe, profile, ended = _play(rs, Path(path), False, tuple(sizes))
    try:
        frames = _Pipeline(rs, pipe, profile, sizes, align, (), ended)
        while True:
            got = frames.next(0.05)
            if got is not None:
                yield got.frame_number, got.t_device_ms / 1000.0, got.frames
            elif frames.ended():  # nothing left in the queue and the reader has stopped
                return
    finally:
        pipe.stop()


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
            self._frames = _Pipeline(rs, pipe, profile, self.sizes, c.align, c.filters, ended)
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


class RealSensePlayback(RealSenseCamera):
    """A recording played as the camera, in real time or as fast as it decodes.

    The end of the file is FAILED with reason "end of recording", for good: the capture thread
    idles instead of raising, because the base class reopens a device after any error and a
    playback would start again from its first frame. A new ``connect`` plays it again."""

    def __init__(
        self,
        path: str | Path,
        config: RealSenseConfig,
        sizes: dict[str, tuple[int, int]],
        real_time: bool = True,
        name: str = "realsense-playback",
        **kw,
    ):
        super().__init__(config, sizes, name=name, **kw)
        self.path, self.real_time = Path(path), real_time
        check_recording(import_realsense(), self.path)  # a wrong path is the user's to fix, not a device to retry
        self._ended = False

    def _start_pipeline(self, rs):
        self._ended = False
        return _play(rs, self.path, self.real_time, tuple(self.sizes))

    def _capture(self, timeout_s: float):
        if self._ended:
            self._stop.wait(timeout_s)
            return None
        return super()._capture(timeout_s)

    def _missed(self) -> None:
        if not self._frames.ended():
            return super()._missed()
        self._ended = True
        self._close()  # let go of the file now
        self._set_state(SensorState.FAILED, "end of recording")


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
