"""The RealSense driver on the real pyrealsense2, with no camera: a software device fed by a thread
stands in for the USB camera, and recordings are written by the SDK's own recorder.

Frames are small (64x48 to 160x120) and few, made here. Waits poll with deadlines, generous for a
busy 2-core machine; nothing sleeps a fixed time to let something happen.
"""

import os
import shutil
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest
from waiting import wait_for

from edgefusion.errors import EdgefusionError
from edgefusion.sensors.base import Backoff, SensorState
from edgefusion.sensors.realsense import (
    RealSenseCamera,
    RealSenseConfig,
    RealSensePlayback,
    SoftwareCamera,
    iter_recording,
    recording_suffix,
)

rs = pytest.importorskip("pyrealsense2")

BOTH = {"rgb": (48, 64), "depth": (48, 64)}  # the model frames of the demo's bundle
DEVICE_EPOCH_MS = 5.0e6  # the fake camera's clock: unrelated to time.monotonic()
SCALE = np.float32(0.001)  # the software camera's depth units, as the SDK reports them (float32)


def _wait_for(pred, timeout=10.0):
    return wait_for(pred, timeout)


class Producer:
    """Feeds a SoftwareCamera at 30 fps from its own thread, as the camera's USB stream would;
    clearing ``running`` stalls it. Frame n is ``make(n)``; ``fed[n]`` is when it was fed."""

    def __init__(self, camera: SoftwareCamera, make):
        self.camera, self.make = camera, make
        self.fed: dict[int, float] = {}
        self.running = threading.Event()
        self.running.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        n, due, t0 = 0, time.monotonic(), time.monotonic()
        while not self._stop.is_set():
            if self.running.is_set():
                rgb, depth = self.make(n)
                now = time.monotonic()
                frames = {m: f for m, f in (("rgb", rgb), ("depth", depth)) if m in self.camera.sizes}
                self.camera.feed(frames, DEVICE_EPOCH_MS + (now - t0) * 1000.0)
                self.fed[n] = now
                n += 1
            due = max(due + 1 / 30, time.monotonic())  # late: skip, don't burst
            self._stop.wait(due - time.monotonic())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


def _live_frame(n: int) -> tuple[np.ndarray, np.ndarray]:
    """128x96 noise with holes; frame n is written in the top-left 2x2 blocks (rgb: n % 256 and
    n // 256; depth: 100 + n mm), which downsample by 2 to one output pixel each."""
    rng = np.random.default_rng(n)
    rgb = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    depth = rng.integers(300, 5000, (96, 128), dtype=np.uint16)
    depth[rng.random(depth.shape) < 0.1] = 0
    rgb[0:2, 0:2], rgb[0:2, 2:4], depth[0:2, 0:2] = n % 256, n // 256, 100 + n
    return rgb, depth


def test_a_software_device_streams_through_realsense_camera_like_a_live_camera():
    with SoftwareCamera({"rgb": (96, 128), "depth": (96, 128)}) as sw, Producer(sw, _live_frame) as producer:
        cam = RealSenseCamera(RealSenseConfig(width=128, height=96, align=False), BOTH, device=sw.device)
        cam.connect()
        rgbs, depths = {}, {}  # frame number -> (t, data, time read)
        try:
            assert _wait_for(lambda: cam.read_latest(1.0) is not None), cam.state(1.0)

            def collect():
                for view, seen, number in ((cam, rgbs, _rgb_number), (cam.sources["depth"], depths, _depth_number)):
                    sample = view.read_latest(1.0)
                    if sample is not None:
                        seen.setdefault(number(sample.data), (sample.t, sample.data, time.monotonic()))
                return len(rgbs) >= 20 and len(depths) >= 20

            assert _wait_for(collect, timeout=20), (len(rgbs), len(depths), cam.state(1.0))
        finally:
            cam.disconnect()

    for n, (t, data, read_at) in rgbs.items():
        rgb, _ = _live_frame(n)
        assert data.shape == (3, 48, 64) and data.dtype == np.float32
        expected = rgb.reshape(48, 2, 64, 2, 3).astype(np.float32).mean(axis=(1, 3)).transpose(2, 0, 1)
        # A block mean (the size divides), in whole 8-bit steps as a camera gives them.
        np.testing.assert_array_equal(data, np.rint(expected))
        # Stamped on the monotonic clock with the device time plus the least delay seen: not
        # before it was fed, not after it was read.
        assert producer.fed[n] - 1e-3 <= t <= read_at, (n, t - producer.fed[n], read_at - t)
        assert t - producer.fed[n] < 0.25
    for n, (_, data, _) in depths.items():
        _, depth = _live_frame(n)
        assert data.shape == (1, 48, 64) and data.dtype == np.float32
        # Nearest: each output pixel is one of its 2x2 block's, in metres, never a mix with a hole.
        block = depth.reshape(48, 2, 64, 2).transpose(0, 2, 1, 3).reshape(48, 64, 4).astype(np.float32) * SCALE
        assert (block == data[0][..., None]).any(axis=-1).all(), n
    times = [rgbs[n][0] for n in sorted(rgbs)]
    assert all(a < b for a, b in zip(times, times[1:]))
    both = rgbs.keys() & depths.keys()
    assert both and all(rgbs[n][0] == depths[n][0] for n in both)


def _rgb_number(data: np.ndarray) -> int:
    return int(data[0, 0, 0]) + 256 * int(data[0, 0, 1])


def _depth_number(data: np.ndarray) -> int:
    return round(float(data[0, 0, 0]) / float(SCALE)) - 100


def _flat_frame(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((48, 64, 3), n % 256, np.uint8), np.full((48, 64), 1000 + n, np.uint16)


def test_a_stalled_camera_goes_stale_then_failed_then_recovers_by_itself():
    with SoftwareCamera(BOTH) as sw, Producer(sw, _flat_frame) as producer:
        cam = RealSenseCamera(
            RealSenseConfig(width=64, height=48, retries=3),
            BOTH,
            device=sw.device,
            backoff=Backoff(0.3, 0.6),
            read_timeout_s=0.2,
        )
        cam.connect()
        try:
            assert _wait_for(lambda: cam.poll(0.15)[1] is SensorState.OK), cam.state(0.15)
            producer.running.clear()
            seen, slowest = [], 0.0

            def watch():
                nonlocal slowest
                start = time.monotonic()
                _, state, reason = cam.poll(0.15)
                slowest = max(slowest, time.monotonic() - start)
                if not seen or seen[-1][0] is not state:
                    seen.append((state, reason))
                return state is SensorState.FAILED

            assert _wait_for(watch), seen
            assert SensorState.STALE in [state for state, _ in seen], seen  # before FAILED, the last
            assert "no frames in 3 tries" in seen[-1][1], seen
            assert cam.counters["resets"] == 0  # a software device refuses a reset: none is counted
            assert slowest < 0.25  # the loop's poll never waits for the camera (0.6 s of tries)
            last = cam.read_latest(60.0).seq

            producer.running.set()

            def back():
                sample, state, _ = cam.poll(0.15)
                return state is SensorState.OK and sample is not None and sample.seq > last

            assert _wait_for(back), cam.state(0.15)
            assert cam.sources["depth"].poll(0.5)[1] is SensorState.OK
        finally:
            cam.disconnect()


N_RECORDED = 12
_ROWS = ((np.arange(48) + 0.5) * 120 / 48).astype(int)  # the source pixel under each output pixel's centre
_COLS = ((np.arange(64) + 0.5) * 160 / 64).astype(int)


def test_a_hardware_reset_is_counted_and_said_the_1st_2nd_4th_time(capsys):
    """A software device refuses resets (see above), so a device that takes them stands in."""

    class TakesResets:
        def hardware_reset(self):
            pass

    with SoftwareCamera({"rgb": (120, 160), "depth": (120, 160)}, 30) as sw:
        cam = RealSenseCamera(RealSenseConfig(width=160, height=120, fps=30, retries=3), BOTH, device=sw.device)
        cam._frames = types.SimpleNamespace(device=TakesResets())
        for _ in range(5):  # five cameras gone silent, each reset before its last try
            cam._misses = 0
            cam._missed()
            cam._missed()
    assert cam.counters["resets"] == 5
    lines = [line for line in capsys.readouterr().err.splitlines() if "hardware reset (" in line]  # not state lines
    assert [line.rsplit("(", 1)[1] for line in lines] == ["1 so far)", "2 so far)", "4 so far)"]
    assert "camera realsense: no frames in 2 tries, hardware reset" in lines[0]


def test_librealsense_writes_nothing_in_home(tmp_path):
    """Its usage report (~/.rum/rum.json, written as a device session ends) goes elsewhere."""
    home = tmp_path / "home"
    home.mkdir()
    code = "from edgefusion.sensors.realsense import SoftwareCamera\nSoftwareCamera({'rgb': (48, 64)}, 30).close()"
    env = {**os.environ, "HOME": str(home)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert list(home.iterdir()) == []


def _recorded_frame(n: int) -> tuple[np.ndarray, np.ndarray]:
    """160x120: rgb noise; depth constant over 8x8 blocks (some holes), so that an aligned frame
    keeps the block interiors exactly."""
    rng = np.random.default_rng([7, n])
    rgb = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    blocks = rng.integers(500, 4000, (15, 20), dtype=np.uint16)
    blocks[rng.random(blocks.shape) < 0.15] = 0
    return rgb, np.kron(blocks, np.ones((8, 8), np.uint16))


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("rs") / f"session{recording_suffix()}"
    with SoftwareCamera({"rgb": (120, 160), "depth": (120, 160)}, record_to=path) as sw:
        for n in range(N_RECORDED):
            rgb, depth = _recorded_frame(n)
            sw.feed({"rgb": rgb, "depth": depth}, t_ms=1000.0 + n * 100.0 / 3)
            time.sleep(1 / 30)  # the recording's clock is the feeding's wall time
    return path


@pytest.mark.parametrize("align", [False, True])
def test_a_recording_plays_back_every_frame_once_with_its_pixels(recording, align):
    frames = list(iter_recording(recording, BOTH, align=align))
    assert [f[0] for f in frames] == list(range(N_RECORDED))  # frame 0 included, none twice
    np.testing.assert_allclose([f[1] for f in frames], [1.0 + n / 30 for n in range(N_RECORDED)], atol=1e-6)
    inside = ((_ROWS % 8)[:, None] >= 2) & ((_ROWS % 8)[:, None] <= 5) & ((_COLS % 8) >= 2) & ((_COLS % 8) <= 5)
    for n, _, got in frames:
        rgb, depth = got["rgb"], got["depth"]
        rgb_in, depth_in = _recorded_frame(n)
        # 160x120 to 64x48 does not divide: nearest for rgb too, so the values come back exactly.
        np.testing.assert_array_equal(rgb, rgb_in[_ROWS][:, _COLS].transpose(2, 0, 1).astype(np.float32))
        expected = depth_in[_ROWS][:, _COLS].astype(np.float32) * SCALE
        if align:
            # The SDK's align is no identity even for coincident cameras: it rounds pixel corners,
            # which moves block edges and drops a few pixels to holes, but invents no depth.
            got, want = depth[0][inside], expected[inside]
            assert ((got == want) | (got == 0)).all() and (got == want).mean() > 0.85, n
        else:
            np.testing.assert_array_equal(depth[0], expected)


def _play_to_the_end(cam: RealSensePlayback) -> float:
    start = time.monotonic()
    cam.connect()
    assert _wait_for(lambda: cam.poll(60.0)[1] is SensorState.FAILED), cam.state(60.0)
    assert cam.poll(60.0)[2] == "end of recording"
    return time.monotonic() - start


def test_a_playback_source_delivers_every_frame_then_ends_for_good(recording):
    cam = RealSensePlayback(
        recording, RealSenseConfig(filters=("hole_filling",)), BOTH, real_time=False, read_timeout_s=0.2
    )
    depth = cam.sources["depth"]
    try:
        _play_to_the_end(cam)
        assert cam.read_latest(60.0).seq == N_RECORDED and depth.read_latest(60.0).seq == N_RECORDED
        holes_in = (_recorded_frame(N_RECORDED - 1)[1][_ROWS][:, _COLS] == 0).sum()
        assert holes_in > 0 and (depth.read_latest(60.0).data == 0).sum() < holes_in  # the filter ran
        assert not _wait_for(lambda: cam.poll(60.0)[1:] != (SensorState.FAILED, "end of recording"), timeout=0.6)
        assert cam.read_latest(60.0).seq == N_RECORDED  # not played again
    finally:
        cam.disconnect()


def test_a_real_time_playback_takes_as_long_as_the_recording(recording):
    cam = RealSensePlayback(recording, RealSenseConfig(), BOTH, read_timeout_s=0.2)
    try:
        elapsed = _play_to_the_end(cam)
        assert elapsed > (N_RECORDED - 1) / 30 * 0.9
        # Like a live camera, real time drops a frame the machine was too busy to take.
        assert cam.read_latest(60.0).seq >= N_RECORDED // 2
    finally:
        cam.disconnect()


def _record_color_only(path):
    """A recording without a depth stream, made with the SDK directly."""
    dev = rs.software_device()
    sensor = dev.add_sensor("RGB Camera")
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid, stream.fmt, stream.bpp = rs.stream.color, 0, 0, rs.format.rgb8, 3
    stream.width, stream.height, stream.fps = 64, 48, 30
    profile = sensor.add_video_stream(stream).as_video_stream_profile()
    recorder = rs.recorder(str(path), dev)
    sensor.open(profile)
    sensor.start(rs.frame_queue(1))
    for n in range(3):
        frame = rs.software_video_frame()
        frame.pixels = np.full((48, 64, 3), n, np.uint8)
        frame.bpp, frame.stride, frame.timestamp, frame.frame_number = 3, 64 * 3, 1000.0 + n * 33, n
        frame.domain, frame.profile = rs.timestamp_domain.hardware_clock, profile
        sensor.on_video_frame(frame)
        time.sleep(1 / 30)
    sensor.stop()
    sensor.close()
    del recorder


def test_bad_recordings_are_one_line_user_errors(recording, tmp_path):
    suffix = recording_suffix()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(recording.read_bytes()[:-1000])
    head = tmp_path / f"head{suffix}"
    head.write_bytes(recording.read_bytes()[:4096])
    text = tmp_path / f"notes{suffix}"
    text.write_text("not a recording\n")
    renamed = tmp_path / "session.mp4"
    shutil.copy(recording, renamed)
    no_depth = tmp_path / f"color{suffix}"
    _record_color_only(no_depth)
    cases = [
        (tmp_path / f"missing{suffix}", "no such recording"),
        (cut, "truncated" if suffix == ".db3" else "cannot play"),
        (head, "truncated" if suffix == ".db3" else "cannot play"),
        (text, "not a RealSense recording" if suffix == ".db3" else "cannot play"),
        (renamed, "not a RealSense recording"),
        (no_depth, "no depth stream"),
    ]
    for path, words in cases:
        with pytest.raises(EdgefusionError) as caught:
            list(iter_recording(path, BOTH))
        message = str(caught.value)
        assert words in message and str(path) in message and "\n" not in message, message
    with pytest.raises(EdgefusionError, match="no such recording"):
        RealSensePlayback(tmp_path / "missing.db3", RealSenseConfig(), BOTH)


def test_config_rejects_unknown_filters():
    with pytest.raises(EdgefusionError, match="decimation"):
        RealSenseCamera(RealSenseConfig(filters=("decimation",)), BOTH)


def test_without_pyrealsense2_the_module_imports_and_says_how_to_install():
    script = """
import sys
sys.modules["pyrealsense2"] = None  # import pyrealsense2 now raises ImportError
from edgefusion.errors import EdgefusionError
from edgefusion.sensors.realsense import RealSenseCamera, RealSenseConfig, recording_suffix
RealSenseCamera(RealSenseConfig(), {"depth": (48, 64)})
try:
    recording_suffix()
except EdgefusionError as err:
    print(err)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'edgefusion[sensors]'" in out.stdout and "Jetson" in out.stdout, out.stdout


def test_a_depth_only_camera_opens_no_colour_and_a_playback_gives_depth_at_the_modalitys_size(recording):
    """A depth-only bundle: the camera's one stream is depth (no colour, no alignment), frames
    resized to the modality's own size; a recording with colour too plays its depth alone."""
    with SoftwareCamera({"depth": (96, 128)}) as sw, Producer(sw, _live_frame):
        cam = RealSenseCamera(RealSenseConfig(width=128, height=96), {"depth": (24, 32)}, device=sw.device)
        assert cam.modality == "depth" and set(cam.sources) == {"depth"}
        cam.connect()
        try:
            assert _wait_for(lambda: cam.read_latest(1.0) is not None), cam.state(1.0)
            data = cam.read_latest(1.0).data
        finally:
            cam.disconnect()
    assert data.shape == (1, 24, 32) and data.dtype == np.float32
    played = list(iter_recording(recording, {"depth": (60, 80)}, align=True))  # align needs colour: not done
    assert [n for n, _, _ in played] == list(range(N_RECORDED))
    rows, cols = ((np.arange(60) + 0.5) * 2).astype(int), ((np.arange(80) + 0.5) * 2).astype(int)
    for n, _, got in played:
        assert set(got) == {"depth"}
        np.testing.assert_array_equal(got["depth"][0], _recorded_frame(n)[1][rows][:, cols].astype(np.float32) * SCALE)
