"""Recordings made by other tools replay through the runtime: RealSense recordings written by the
SDK's own recorder at a camera's resolution (z16 depth, rgb8/bgr8/bgra8/yuyv/uyvy colour, either
alone) and WAVs of every common kind, in a folder or given as a file."""

import json
import struct
import time
import wave

import numpy as np
import pytest
from cli_check import cli, refused
from stream_specs import DEMO, DEPTH_AUDIO, camera

rs = pytest.importorskip("pyrealsense2")

from edgefusion.errors import SessionError  # noqa: E402
from edgefusion.sensors.realsense import recording_suffix  # noqa: E402
from edgefusion.session.layout import load_session  # noqa: E402
from edgefusion.task import HEIGHT, SAMPLE_RATE, WIDTH  # noqa: E402

FRAMES = 12
FRAME_MS = 1000 / 30
LEFT, RIGHT = (200, 100, 50), (20, 60, 240)  # the colour image: left half one colour, right half another
DEPTH_Z16 = 1500  # the depth image: 1.5 m at the SDK's default 1 mm units
TONE_HZ, TONE_AMPLITUDE, TONE_S = 440.0, 0.5, 2.5


def _record(path, width, height, colour=None, depth=True, frames=FRAMES, stamp=lambda n: 5000.0 + n * FRAME_MS):
    """A recording as realsense-viewer or rs-record writes it: the SDK's recorder on a device whose
    streams have the camera's resolution and formats (a software device: no camera here); frame
    ``n`` is stamped ``stamp(n)`` ms."""
    dev = rs.software_device()
    streams = []  # (sensor, profile, bytes per pixel, pixels)
    if depth:
        sensor = dev.add_sensor("Stereo Module")
        pixels = np.full((height, width), DEPTH_Z16, np.uint16)
        profile = _stream(sensor, rs.stream.depth, rs.format.z16, 2, width, height, len(streams))
        streams.append((sensor, profile, 2, pixels))
        sensor.add_read_only_option(rs.option.depth_units, 0.001)
    if colour is not None:
        sensor = dev.add_sensor("RGB Camera")
        fmt, bpp, pixels = _colour_pixels(colour, width, height)
        streams.append((sensor, _stream(sensor, rs.stream.color, fmt, bpp, width, height, len(streams)), bpp, pixels))
    recorder = rs.recorder(str(path), dev)
    for sensor, profile, _, _ in streams:
        sensor.open(profile)
        sensor.start(rs.frame_queue(1))
    for n in range(frames):
        for sensor, profile, bpp, pixels in streams:
            frame = rs.software_video_frame()
            frame.pixels = pixels
            frame.bpp, frame.stride, frame.timestamp, frame.frame_number = bpp, width * bpp, stamp(n), n
            frame.domain, frame.profile = rs.timestamp_domain.hardware_clock, profile
            sensor.on_video_frame(frame)
        time.sleep(FRAME_MS / 1000)  # the recording's own clock is the time frames were fed
    for sensor, _, _, _ in streams:
        sensor.stop()
        sensor.close()
    del recorder
    return path


def _stream(sensor, kind, fmt, bpp, width, height, uid):
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid, stream.fmt, stream.bpp = kind, 0, uid, fmt, bpp
    stream.width, stream.height, stream.fps = width, height, 30
    intr = rs.intrinsics()
    intr.width, intr.height, intr.ppx, intr.ppy, intr.fx, intr.fy = width, height, width / 2, height / 2, width, width
    intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
    stream.intrinsics = intr
    return sensor.add_video_stream(stream).as_video_stream_profile()


def _colour_pixels(colour: str, width: int, height: int):
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:, : width // 2], rgb[:, width // 2 :] = LEFT, RIGHT
    if colour == "rgb8":
        return rs.format.rgb8, 3, rgb
    if colour == "bgr8":
        return rs.format.bgr8, 3, np.ascontiguousarray(rgb[..., ::-1])
    if colour == "y8":  # a monochrome "colour" stream, which nothing here turns into RGB
        return rs.format.y8, 1, np.ascontiguousarray(rgb[..., 1])
    if colour == "bgra8":
        return rs.format.bgra8, 4, np.ascontiguousarray(np.dstack([rgb[..., ::-1], np.full_like(rgb[..., 0], 255)]))
    # BT.601 limited range, the inverse of what a YUYV camera's RGB is decoded with.
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.738 * r + 129.057 * g + 25.064 * b) / 256
    u = 128 + (-37.945 * r - 74.494 * g + 112.439 * b) / 256
    v = 128 + (112.439 * r - 94.154 * g - 18.285 * b) / 256
    packed = np.empty((height, width // 2, 4), np.uint8)
    packed[..., 0], packed[..., 2] = np.rint(y[:, 0::2]), np.rint(y[:, 1::2])
    packed[..., 1], packed[..., 3] = np.rint(u[:, 0::2]), np.rint(v[:, 0::2])
    if colour == "uyvy":  # the same samples, chroma first: U Y0 V Y1
        return rs.format.uyvy, 2, np.ascontiguousarray(packed[..., [1, 0, 3, 2]].reshape(height, width * 2))
    assert colour == "yuyv"
    return rs.format.yuyv, 2, packed.reshape(height, width * 2)


def _tone(rate: int, channels: int, seconds: float = TONE_S) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.repeat((TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t))[:, None], channels, axis=1)


def _write_pcm(path, rate, channels, bits):
    """A PCM WAV by the standard library (8-bit is unsigned, the rest signed little-endian)."""
    x = _tone(rate, channels)
    if bits == 8:
        data = np.rint(x * 127 + 128).astype(np.uint8).tobytes()
    elif bits == 24:
        ints = np.rint(x * (2**23 - 1)).astype("<i4").reshape(-1, 1).view(np.uint8)
        data = ints[:, :3].tobytes()
    else:
        data = np.rint(x * (2 ** (bits - 1) - 1)).astype(f"<i{bits // 8}").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(bits // 8)
        w.setframerate(rate)
        w.writeframes(data)
    return path


def _write_float(path, rate, channels, extensible):
    """A 32-bit float WAV, plain (format tag 3) or WAVE_FORMAT_EXTENSIBLE, as DAWs and SoX write them."""
    data = _tone(rate, channels).astype("<f4").tobytes()
    align = 4 * channels
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else 3, channels, rate, rate * align, align, 32)
    if extensible:
        float_guid = struct.pack("<H", 3) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt += struct.pack("<HHI", 22, 32, 0) + float_guid
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
    return path


def _check_tone(session):
    """The WAV reached the model resampled to its rate, mixed to mono, at its level and pitch."""
    audio = session.audio
    assert abs(len(audio) - TONE_S * SAMPLE_RATE) <= 2
    assert np.all(audio == np.rint(audio)), "whole 16-bit steps, as a microphone delivers"
    spectrum = np.abs(np.fft.rfft(audio[SAMPLE_RATE // 4 : -SAMPLE_RATE // 4]))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / (2 * (len(spectrum) - 1))
    assert abs(peak_hz - TONE_HZ) < 2
    level = np.sqrt(2) * np.sqrt(np.mean(audio[1000:-1000] ** 2)) / 32768
    assert abs(level - TONE_AMPLITUDE) < 0.01
    window = SAMPLE_RATE  # one second: the model's audio window
    assert len(session.windows) == (len(audio) - window) // (SAMPLE_RATE // 10) + 1
    assert all(w.shape == (window,) for _, w in session.windows)
    assert session.windows[0][0] == pytest.approx((window - 1) / SAMPLE_RATE), "the WAV starts at t = 0"


@pytest.mark.parametrize(
    "write",
    [
        lambda p: _write_pcm(p, 16000, 1, 16),
        lambda p: _write_pcm(p, 8000, 1, 8),
        lambda p: _write_pcm(p, 44100, 2, 24),
        lambda p: _write_pcm(p, 48000, 2, 32),
        lambda p: _write_float(p, 22050, 1, extensible=False),
        lambda p: _write_float(p, 48000, 2, extensible=True),
    ],
    ids=["16k-mono-16bit", "8k-mono-8bit", "44k1-stereo-24bit", "48k-stereo-32bit", "22k-float", "48k-float-ext"],
)
def test_a_wav_of_any_common_kind_is_the_model_s_audio(tmp_path, write):
    wav = write(tmp_path / "speech.wav")
    _check_tone(load_session(wav, DEMO))
    _check_tone(load_session(tmp_path, DEMO))  # the folder holding it


# name → (width, height), colour format or None, with a depth stream
RECORDINGS = {
    "d435-640": ((640, 480), "rgb8", True),
    "d455-848-bgr": ((848, 480), "bgr8", True),
    "hd-yuyv": ((1280, 720), "yuyv", False),
    "uyvy-360": ((640, 360), "uyvy", False),
    "bgra-720": ((1280, 720), "bgra8", True),
    "depth-only": ((640, 480), None, True),
}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """SDK recordings at full resolution, each in its own folder, with a WAV beside the first."""
    root = tmp_path_factory.mktemp("foreign")
    suffix = recording_suffix()
    made = {}
    for name, (size, colour, depth) in RECORDINGS.items():
        folder = root / name
        folder.mkdir()
        made[name] = _record(folder / f"{name}{suffix}", *size, colour=colour, depth=depth)
    _write_pcm(root / "d435-640" / "mic.wav", 48000, 2, 16)
    return made


@pytest.mark.parametrize("name", RECORDINGS)
def test_an_sdk_recording_s_frames_are_brought_to_the_model_s_input(recordings, name):
    session = load_session(recordings[name], DEMO)
    _, colour, has_depth = RECORDINGS[name]
    assert len(session.frames["rgb"]) == (FRAMES if colour else 0)
    assert len(session.frames["depth"]) == (FRAMES if has_depth else 0)
    for t_frames in session.frames.values():
        times = [t for t, _ in t_frames]
        assert times == pytest.approx([n * FRAME_MS / 1000 for n in range(len(times))], abs=1e-6), "from t = 0"
    tolerance = 2 if colour in ("yuyv", "uyvy") else 0  # YUV rounding
    for _, rgb in session.frames["rgb"]:
        assert rgb.shape == (3, HEIGHT, WIDTH) and rgb.dtype == np.float32
        assert np.abs(rgb[:, :, : WIDTH // 2 - 1] - np.array(LEFT)[:, None, None]).max() <= tolerance
        assert np.abs(rgb[:, :, WIDTH // 2 + 1 :] - np.array(RIGHT)[:, None, None]).max() <= tolerance
    for _, depth in session.frames["depth"]:
        assert depth.shape == (1, HEIGHT, WIDTH)
        assert np.all(depth == np.float32(DEPTH_Z16) * np.float32(0.001))
    assert session.audio is None and not session.windows


def test_a_folder_of_a_recording_and_a_wav_replays_through_the_runtime(recordings):
    folder = recordings["d435-640"].parent
    session = load_session(folder, DEMO)
    _check_tone(session)
    r = cli("demo", "--source", f"replay:{folder}", "--max-speed", "--json", timeout=180)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    # Ticks at 30 Hz from the first sample to the last (the WAV, 2.5 s, outlasts the 12 frames).
    assert len(lines) == pytest.approx(TONE_S * 30, abs=2)
    camera = [x for x in lines if x["present"]["rgb"]]
    assert camera and all(x["present"]["depth"] for x in camera)
    assert all(x["t"] - lines[0]["t"] < FRAMES * FRAME_MS / 1000 + 0.1 for x in camera), "not past the frames"
    heard = [x for x in lines if x["present"]["audio"]]
    assert heard and min(x["sample_t"]["audio"] for x in heard) == pytest.approx(1.0, abs=1e-3)
    assert all(x["label"] is not None for x in lines if any(x["present"].values()))


def test_an_audio_offset_moves_the_wav_against_the_recording(recordings, tmp_path):
    folder = recordings["d435-640"].parent
    shifted = load_session(folder, DEMO, offsets_ms={"audio": 400.0})
    assert shifted.windows[0][0] == pytest.approx(0.4 + (SAMPLE_RATE - 1) / SAMPLE_RATE)
    assert shifted.frames["rgb"][0][0] == 0.0, "the recording keeps its own start"
    config = tmp_path / "robot.toml"
    config.write_text("[output]\nstdout = true\n\n[sensors.audio]\noffset_ms = 400\n")
    r = cli("run", "--config", str(config), "--source", f"replay:{folder}", "--max-speed", timeout=180)
    assert r.returncode == 0, r.stderr
    heard = [x for x in map(json.loads, r.stdout.splitlines()) if x["present"]["audio"]]
    assert min(x["sample_t"]["audio"] for x in heard) == pytest.approx(1.4, abs=1e-3)


@pytest.mark.parametrize("name", ["depth-only", "hd-yuyv"])
def test_a_single_recording_replays_with_the_missing_modalities_absent(recordings, name):
    r = cli("demo", "--source", f"replay:{recordings[name]}", "--max-speed", "--json", timeout=180)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == pytest.approx(FRAMES * FRAME_MS / 1000 * 30, abs=2)
    present = {m: [x["present"][m] for x in lines] for m in ("rgb", "depth", "audio")}
    assert not any(present["audio"])
    assert any(present["depth"]) == (name == "depth-only") and any(present["rgb"]) == (name == "hd-yuyv")
    assert not any(present["rgb" if name == "depth-only" else "depth"])


def test_a_wav_alone_replays_in_real_time_and_ends(tmp_path):
    wav = _write_pcm(tmp_path / "clip.wav", 16000, 1, 16)
    t0 = time.monotonic()
    r = cli("demo", "--source", f"replay:{wav}", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert time.monotonic() - t0 >= TONE_S - 1.0, "real time waits for the recorded pace"
    assert any(x["present"]["audio"] for x in lines) and not any(x["present"]["rgb"] for x in lines)


def _two_wavs(folder):
    _write_pcm(folder / "a.wav", 16000, 1, 16)
    _write_pcm(folder / "b.wav", 16000, 1, 16)


def _alaw(folder):
    (folder / "phone.wav").write_bytes(
        b"RIFF"
        + struct.pack("<I", 36)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 6, 1, 8000, 8000, 1, 8)
        + b"data"
        + struct.pack("<I", 0)
    )


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: None, ("not a session folder", "no .bag, .db3 or .wav")),
        (_two_wavs, ("holds 2 WAV files", "a.wav, b.wav", "replay:FILE")),
        (_alaw, ("phone.wav", "format tag 0x0006", "convert it")),
        (lambda d: (d / "notes.wav").write_bytes(b"hello"), ("notes.wav", "not a WAV file")),
        (lambda d: (d / "x.bag").mkdir() or (d / "y.wav").mkdir(), ("not a session folder",)),
    ],
    ids=["empty", "two-wavs", "a-law", "not-riff", "folders-named-like-files"],
)
def test_a_folder_that_is_no_recording_is_refused_in_one_line(tmp_path, make, words):
    folder = tmp_path / "archive"
    folder.mkdir()
    make(folder)
    with pytest.raises(SessionError):
        load_session(folder, DEMO)
    refused(cli("demo", "--source", f"replay:{folder}", "--max-speed"), *words)


def test_a_file_that_is_no_recording_is_refused_in_one_line(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    refused(cli("demo", "--source", f"replay:{text}", "--max-speed"), "notes.txt", ".bag, .db3 or .wav")
    fake = tmp_path / f"fake{recording_suffix()}"
    fake.write_bytes(b"not a recording")
    refused(cli("demo", "--source", f"replay:{fake}", "--max-speed"), "fake", "not a RealSense recording")


def test_a_recording_in_a_format_that_cannot_replay_is_one_line(tmp_path):
    mono = _record(tmp_path / f"mono{recording_suffix()}", 640, 480, colour="y8", depth=True)
    with pytest.raises(SessionError, match="colour format y8"):
        load_session(mono, DEMO)
    refused(cli("demo", "--source", f"replay:{mono}", "--max-speed"), "mono", "colour format y8", "record colour")


@pytest.mark.parametrize(
    "stamp, words",
    [
        (lambda n: 5000.0 + n * FRAME_MS + (1e12 if n >= 6 else 0.0), ("timestamp is +1e+12 ms", "cut the file")),
        (lambda n: 5000.0 + n * FRAME_MS - (1000.0 if n >= 6 else 0.0), ("timestamp is -", "clock is damaged")),
    ],
    ids=["jumps-ahead", "goes-back"],
)
def test_a_recording_whose_clock_jumps_is_refused_not_replayed_for_ever(tmp_path, stamp, words):
    """A real-time replay lasts as long as the frames' times span: a jump would make it endless."""
    jumped = _record(tmp_path / f"jumped{recording_suffix()}", 64, 48, colour="rgb8", depth=False, stamp=stamp)
    refused(cli("demo", "--source", f"replay:{jumped}", timeout=60), "jumped", "rgb frame 6", *words)


def test_a_recording_is_brought_to_another_bundles_sizes_rate_and_window(recordings):
    """A depth + audio bundle (160x120 depth, 0.5 s windows at 8 kHz, 10 a second): the 640x480
    recording's depth resized, its colour left out, the 48 kHz stereo WAV mixed and resampled."""
    folder = recordings["d435-640"].parent
    session = load_session(folder, DEPTH_AUDIO)
    assert not session.warnings
    assert len(session.frames["depth"]) == FRAMES
    assert all(
        d.shape == (1, 120, 160) and np.all(d == np.float32(DEPTH_Z16) * np.float32(0.001))
        for _, d in session.frames["depth"]
    )
    audio = session.audio
    assert session.facts["sample_rate"] == 8000 and abs(len(audio) - TONE_S * 8000) <= 2
    assert len(session.windows) == (len(audio) - 4000) // 800 + 1
    assert all(len(w) == 4000 for _, w in session.windows)
    assert session.windows[0][0] == pytest.approx(3999 / 8000)
    spectrum = np.abs(np.fft.rfft(session.windows[1][1]))
    assert abs(np.argmax(spectrum) * 2 - TONE_HZ) <= 2  # bins of 2 Hz over 0.5 s


def test_a_modality_whose_stream_the_recording_lacks_is_absent_with_a_warning(recordings):
    session = load_session(recordings["depth-only"], (camera("colour", "rgb", 96, 128), *DEPTH_AUDIO))
    assert session.frames["rgb"] == [] and len(session.frames["depth"]) == FRAMES
    assert any("no rgb in this recording; modality 'colour' replays as absent" in w for w in session.warnings)
    assert any("modality 'speech' replays as absent" in w for w in session.warnings)
