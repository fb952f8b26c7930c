"""The real rig's machinery without a robot: the USB lookup and the ``authorized`` writes on a fake
sysfs tree (a robot's /sys cannot exist here), the fault schedule giving every device back whatever
happens, the frozen camera injected on the real driver's frames (a software RealSense), PulseAudio
through the private server, and what ``unavailable`` says on this machine (no camera connected)."""

import shutil
import threading
import time

import numpy as np
import pytest
from waiting import wait_for

from edgefusion.config import Config
from edgefusion.errors import EdgefusionError
from edgefusion.hil.realsense import (
    CardOff,
    Deauthorize,
    Freeze,
    HardwareReset,
    RealSenseRig,
    _Schedule,
    camera_usb_device,
    card_usb_device,
    pactl_blocks,
)
from edgefusion.hil.rigs import FAULTS, FaultPlan, FaultWindow

V4L_PORT = "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/video4linux/video0"


def _fake_sysfs(root):
    """A FAKE of the parts of a robot's /sys the rig reads: a RealSense D435 on USB port 2-1 (its
    video node under its first interface), an Intel Bluetooth adapter, a USB microphone as ALSA
    card 1 and an onboard (PCI) codec as card 0, linked from bus/usb/devices and class/sound as the
    kernel links them."""
    usb = root / "devices/pci0000:00/0000:00:14.0"
    devices, sound = root / "bus/usb/devices", root / "class/sound"
    devices.mkdir(parents=True)
    sound.mkdir(parents=True)
    for port, vendor, serial in (("usb2/2-1", "8086", "ASIC0001"), ("usb1/1-4", "8087", ""), ("usb1/1-2", "0d8c", "")):
        d = usb / port
        d.mkdir(parents=True)
        for name, value in (("idVendor", vendor), ("serial", serial), ("authorized", "1")):
            (d / name).write_text(value + "\n")
        (devices / d.name).symlink_to(d)
    (usb / "usb2/2-1/2-1:1.0/video4linux/video0").mkdir(parents=True)
    for card, parent in ((1, usb / "usb1/1-2/1-2:1.0"), (0, root / "devices/pci0000:00/0000:00:1f.3")):
        node = parent / "sound" / f"card{card}"
        node.mkdir(parents=True)
        (node / "device").symlink_to(parent)
        (sound / f"card{card}").symlink_to(node)
    return root


@pytest.fixture
def sysfs(tmp_path):
    return _fake_sysfs(tmp_path / "sys")


def test_the_camera_is_found_from_the_port_librealsense_reports(sysfs):
    camera = sysfs / "bus/usb/devices/2-1"
    assert camera_usb_device(sysfs, V4L_PORT, ("123456",)).samefile(camera), "the kernel backend: a video node's path"
    assert camera_usb_device(sysfs, "2-1-3", ("123456",)).samefile(camera), "the RSUSB backend: a bus-port"
    assert camera_usb_device(sysfs, "", ("123456", "ASIC0001")).samefile(camera), "else its USB serial"


def test_no_matching_usb_device_is_one_line_naming_what_is_there(sysfs):
    with pytest.raises(EdgefusionError) as err:
        camera_usb_device(sysfs, "", ("123456", "OTHER"))
    message = str(err.value)
    assert "\n" not in message and "123456" in message and "2-1 (serial ASIC0001)" in message
    assert "1-4" not in message, "Intel's Bluetooth (8087) is no RealSense"


def test_a_usb_microphones_card_is_found_and_an_onboard_codec_refused(sysfs):
    assert card_usb_device(sysfs, 1).samefile(sysfs / "bus/usb/devices/1-2")
    with pytest.raises(EdgefusionError, match="ALSA card 0 is not a USB device"):
        card_usb_device(sysfs, 0)


def test_deauthorize_writes_0_then_1_and_gives_back_once(sysfs):
    authorized = sysfs / "bus/usb/devices/2-1/authorized"
    way = Deauthorize(sysfs / "bus/usb/devices/2-1", "RealSense 123456")
    way.take()
    assert authorized.read_text() == "0"
    way.give()
    assert authorized.read_text() == "1"
    authorized.write_text("left alone")
    way.give()
    assert authorized.read_text() == "left alone", "a second give writes nothing"


def _plan(ways_windows, t0: float | None = None):
    schedule = _Schedule([e for way, a, b in ways_windows for e in ((a, way, True), (b, way, False))])
    plan = FaultPlan(Config(), hooks=[(schedule.start, schedule.close)])
    plan.start(time.monotonic() if t0 is None else t0)
    return plan


def test_a_test_failing_mid_window_still_gets_every_device_back(sysfs):
    camera, mic = (sysfs / f"bus/usb/devices/{p}/authorized" for p in ("2-1", "1-2"))
    plan = _plan(
        [
            (Deauthorize(camera.parent, "camera"), 0.0, 60.0),
            (Deauthorize(mic.parent, "microphone"), 0.0, 60.0),
        ]
    )
    with pytest.raises(AssertionError):
        try:
            assert wait_for(lambda: camera.read_text() == mic.read_text() == "0", 5.0)
            raise AssertionError("the test fails while both are away")
        finally:
            plan.close()
    assert camera.read_text() == mic.read_text() == "1", "given back by close, long before the window's end"
    plan.close()
    assert camera.read_text() == "1", "close is idempotent"


def test_the_window_acts_at_its_times_from_t0(sysfs):
    authorized = sysfs / "bus/usb/devices/2-1/authorized"
    seen = []
    t0 = time.monotonic()
    plan = _plan([(Deauthorize(authorized.parent, "camera"), 0.3, 0.6)], t0)
    try:
        assert wait_for(lambda: authorized.read_text() == "0", 5.0)
        seen.append(time.monotonic() - t0)
        assert wait_for(lambda: authorized.read_text() == "1", 5.0)
        seen.append(time.monotonic() - t0)
    finally:
        plan.close()
    assert 0.3 <= seen[0] and 0.6 <= seen[1], "taken no earlier than its start, given back no earlier than its end"


def test_a_device_that_cannot_be_given_back_is_said_after_the_others_are_back(sysfs):
    camera, mic = (sysfs / f"bus/usb/devices/{p}/authorized" for p in ("2-1", "1-2"))
    plan = _plan([(Deauthorize(camera.parent, "camera"), 0.0, 60.0), (Deauthorize(mic.parent, "mic"), 0.0, 60.0)])
    assert wait_for(lambda: camera.read_text() == mic.read_text() == "0", 5.0)
    shutil.rmtree(camera.parent.resolve())  # the device is gone from under us (re-enumerated elsewhere)
    with pytest.raises(EdgefusionError) as err:
        plan.close()
    assert mic.read_text() == "1", "the microphone came back all the same"
    assert "giving back" in str(err.value) and "camera" in str(err.value) and "\n" not in str(err.value)


def _software_camera():
    pytest.importorskip("pyrealsense2")
    from edgefusion.sensors.realsense import RealSenseCamera, RealSenseConfig, SoftwareCamera

    sizes = {"rgb": (48, 64), "depth": (48, 64)}
    software = SoftwareCamera(sizes, 30)
    camera = RealSenseCamera(RealSenseConfig(width=64, height=48, fps=30, align=False), sizes, device=software.device)
    return software, camera


def _feed(software, stop: threading.Event) -> None:
    """New pixels every frame period, on the software camera's hardware clock."""
    rng = np.random.default_rng(0)
    k = 0
    while not stop.wait(1 / 30):
        frames = {
            "rgb": rng.integers(0, 256, (48, 64, 3), np.uint8),
            "depth": rng.integers(500, 4000, (48, 64), np.uint16),
        }
        software.feed(frames, 1000.0 + k * 1000 / 30)
        k += 1


def test_a_frozen_window_repeats_the_real_frames_and_the_runtimes_guard_drops_them():
    software, camera = _software_camera()
    freeze = Freeze()
    sources = freeze.wrap(dict(camera.sources))
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(software, stop), daemon=True)
    feeder.start()
    rgb, depth = sources["rgb"], sources["depth"]
    try:
        camera.connect()
        assert wait_for(lambda: rgb.read_latest(0.2) is not None and depth.read_latest(0.2) is not None, 15.0)
        freeze.take()
        assert wait_for(lambda: rgb.dropped["frozen"] > 0 and depth.dropped["frozen"] > 0, 5.0)
        assert wait_for(lambda: rgb.read_latest(0.1) is None and depth.read_latest(0.1) is None, 5.0), "absent"
        freeze.give()
        assert wait_for(lambda: rgb.read_latest(0.1) is not None and depth.read_latest(0.1) is not None, 5.0)
        later = rgb.read_latest(0.1).t
        assert wait_for(lambda: (s := rgb.read_latest(0.1)) is not None and s.t > later, 2.0), "live again"
    finally:
        stop.set()
        feeder.join(timeout=2)
        camera.disconnect()


def test_pactl_output_is_read_as_cards_and_their_profiles():
    """``pactl list cards`` as PulseAudio 15 prints it on a machine with a USB microphone (a sample)."""
    text = (
        "Card #1\n\tName: alsa_card.usb-C-Media_USB_PnP_Sound_Device-00\n\tDriver: module-alsa-card.c\n"
        '\tProperties:\n\t\talsa.card = "1"\n\t\tdevice.bus = "usb"\n\tProfiles:\n'
        "\t\tinput:mono-fallback: Mono Input (sinks: 0, sources: 1, priority: 1, available: yes)\n"
        "\t\toff: Off (sinks: 0, sources: 0, priority: 0, available: yes)\n"
        "\tActive Profile: input:mono-fallback\n"
    )
    (card,) = pactl_blocks(text)
    assert card["Name"] == "alsa_card.usb-C-Media_USB_PnP_Sound_Device-00" and card["alsa.card"] == "1"
    assert card["Active Profile"] == "input:mono-fallback" and "input:mono-fallback" not in card


@pytest.fixture
def pulse():
    from edgefusion.sim.pulse import PulseServer

    try:
        server = PulseServer().start()
    except EdgefusionError as err:
        pytest.skip(str(err))
    yield server
    server.stop()


def test_through_a_pulseaudio_server_the_microphone_is_its_cards_or_the_rig_says_why_not(pulse):
    """The private server's default source is a null sink's monitor, which no card owns: the rig
    says so in one line, and a card PulseAudio does not have is refused by pactl, in one line."""
    rig = RealSenseRig()
    if rig.unavailable(["audio"]):
        pytest.skip(f"PortAudio does not see the private PulseAudio here: {rig.unavailable(['audio'])}")
    reason = rig.why_not("mic-unplug")
    assert reason and "edgefusion.monitor" in reason and "is no ALSA card" in reason and "\n" not in reason
    assert rig.how("mic-unplug") is None
    with pytest.raises(EdgefusionError, match="pactl set-card-profile alsa_card.gone off"):
        CardOff({"Name": "alsa_card.gone", "Active Profile": "input:mono-fallback"}).take()


def _no_camera() -> str:
    pytest.importorskip("pyrealsense2")
    import pyrealsense2 as rs

    if len(rs.context().query_devices()):
        pytest.skip("a RealSense is connected: this checks what the rig says without one")
    return "no RealSense connected"


def test_on_this_machine_the_rig_says_what_is_missing():
    missing = _no_camera()
    rig = RealSenseRig(serial="123456")
    assert missing in rig.unavailable(["rgb", "depth"])
    assert missing in rig.facts()["camera"]
    for fault, streams in FAULTS.items():
        assert rig.how(fault) is None
        if {"rgb", "depth"} & set(streams):
            assert missing in rig.why_not(fault)
    with pytest.raises(EdgefusionError, match=missing):
        rig.plan([FaultWindow("camera-reset", 1.0, 2.0)])


def test_without_faults_the_plan_is_the_real_sources_config():
    base = Config()
    base.runtime.tick_hz, base.source.kind = 15.0, "virtual"
    plan = RealSenseRig(serial="123456", microphone="USB").plan(base=base)
    cfg = plan.config
    assert cfg.source.kind == "realsense" and cfg.camera.serial == "123456" and cfg.microphone.device == "USB"
    assert cfg.runtime.tick_hz == 15.0 and base.source.kind == "virtual", "base's settings kept, base untouched"
    sensors = {"rgb": object()}
    assert plan.wrap(sensors) is sensors
    plan.start(time.monotonic())
    plan.close()


def test_a_fault_that_cannot_act_is_said_at_close_in_one_line():
    missing = _no_camera()
    schedule = _Schedule([(0.0, HardwareReset("123456"), True)])
    schedule.start(time.monotonic())
    assert wait_for(lambda: schedule.errors, 5.0), "the reset finds no camera"
    with pytest.raises(EdgefusionError) as err:
        schedule.close()
    message = str(err.value)
    assert "taking (hardware_reset()" in message and missing.split()[-1] in message and "\n" not in message
    schedule.close()  # said once
