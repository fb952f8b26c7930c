"""RealSense recordings (.bag, .db3): checked before the SDK reads them, played as the camera
(``RealSensePlayback``) or read through once, as fast as they decode (``iter_recording``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np

from edgefusion.errors import EdgefusionError
from edgefusion.sensors.base import SensorState
from edgefusion.sensors.frames import CAMERAS
from edgefusion.sensors.realsense.camera import Pipeline, RealSenseCamera
from edgefusion.sensors.realsense.config import RealSenseConfig
from edgefusion.sensors.realsense.sdk import import_realsense, sdk_reason, sdk_version


def check_recording(rs, path: Path) -> None:
    """Fail on what the SDK reports badly or not at all: a missing file, a format this SDK cannot
    read, and a .db3 cut short, which the SDK may play without a word, losing its last frames."""
    if not path.is_file():
        raise EdgefusionError(f"{path}: no such recording; give the path of a RealSense .bag or .db3 file")
    if path.suffix not in (".bag", ".db3"):
        raise EdgefusionError(f"{path}: not a RealSense recording; give a .bag or .db3 file")
    if path.suffix == ".bag":
        return
    if sdk_version(rs) < (2, 58):
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
        raise EdgefusionError(f"{path}: cannot play this recording ({sdk_reason(err)}); re-record it") from err
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
        frames = Pipeline(rs, pipe, profile, sizes, align, (), ended)
        while True:
            got = frames.next(0.05)
            if got is not None:
                yield got.frame_number, got.t_device_ms / 1000.0, got.frames
            elif frames.ended():  # nothing left in the queue and the reader has stopped
                return
    finally:
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
