"""Sensor failures reach the journal: each state change is one line with its reason (rate-limited
per reason), and the events are counted for STATUS, doctor and the run summary."""

import collections
import re
import time
import types

import numpy as np
import orjson
from waiting import wait_for

from edgefusion.modalities import MODALITIES
from edgefusion.sensors.base import Backoff, Sensor, SensorGone, SensorState, StateLog
from edgefusion.service.heartbeat import sensor_events, status_line


def test_a_repeating_reason_is_said_the_1st_2nd_4th_8th_time(capsys):
    log = StateLog("cam", SensorState.OK)
    for i in range(20):
        log.changed(SensorState.FAILED, f"RuntimeError: Frame didn't arrive within {5000 + i}")
        log.changed(SensorState.OK, "")
    lines = capsys.readouterr().err.splitlines()
    failed = [line for line in lines if "FAILED" in line]
    ok = [line for line in lines if line.endswith(": OK") or ": OK [" in line]
    assert len(failed) == len(ok) == 5, lines  # times 1, 2, 4, 8, 16 of 20
    assert failed[0] == "edgefusion: sensor cam: FAILED: RuntimeError: Frame didn't arrive within 5000"
    assert [re.search(r"\[(\d+) times\]", line)[1] for line in failed[1:]] == ["2", "4", "8", "16"]


def test_the_same_state_and_reason_again_is_no_change(capsys):
    log = StateLog("mic", SensorState.RECONNECTING, "not connected yet")
    assert log.changed(SensorState.RECONNECTING, "open failed: no device")
    for _ in range(50):  # the backoff retrying: one line, not fifty
        assert not log.changed(SensorState.RECONNECTING, "open failed: no device")
    assert len(capsys.readouterr().err.splitlines()) == 1


class _Flaky(Sensor):
    """Loses itself every ``every`` frames: a camera on a bad cable."""

    modality = "rgb"

    def __init__(self, every=5):
        super().__init__("flaky", backoff=Backoff(0.005, 0.01), read_timeout_s=0.05)
        self.every, self.frames = every, 0

    def _open(self):
        pass

    def _capture(self, timeout_s):
        time.sleep(0.002)
        self.frames += 1
        if self.frames % self.every == 0:
            raise SensorGone("unplugged")
        return np.full((3, 48, 64), self.frames % 256, np.float32), time.monotonic()

    def _close(self):
        pass


def test_a_flapping_sensor_is_counted_and_said_in_few_lines(capsys):
    dev = _Flaky()
    dev.connect()
    try:
        assert wait_for(lambda: dev.counters["device_errors"] >= 40, 10.0)
    finally:
        dev.disconnect()
    errors = dev.counters["device_errors"]
    assert dev.counters["reconnects"] in (errors, errors - 1), dev.counters  # each loss reopened
    assert dev.counters["state_changes"] >= 2 * errors - 1, dev.counters  # FAILED, then OK again, each time
    lines = capsys.readouterr().err.splitlines()
    failed = [line for line in lines if "FAILED: SensorGone: unplugged" in line]
    assert 1 <= len(failed) <= errors.bit_length(), (errors, lines)
    assert len(lines) <= 2 * errors.bit_length() + 2, "rate-limited: a few dozen lines at most"
    assert not any("disconnected" in line or "reopening" in line.split(";")[0] for line in lines), lines


def test_guard_drops_are_said_once_per_run_of_them(capsys):
    """A frozen stream's drops: one line when they begin (the count goes on in ``dropped``), and
    one when good samples come again."""
    from edgefusion.sensors.base import _DROP_REASON

    dev = _Flaky(every=10**9)
    dev._opened()
    frame = np.ones((3, 48, 64), np.float32)
    t = time.monotonic() - 10
    for i in range(30):
        dev._publish(frame, t + i / 30)
    dev._publish(frame * 2, t + 1.1)
    lines = capsys.readouterr().err.splitlines()
    assert dev.dropped["frozen"] == 28
    assert lines == [  # the first open is as expected: not said
        f"edgefusion: sensor flaky: OK: {_DROP_REASON['frozen']} (1 so far)",
        "edgefusion: sensor flaky: OK",
    ]


def test_the_status_line_carries_the_counters():
    rgb = types.SimpleNamespace(
        counters=collections.Counter(reconnects=2, device_errors=2, resets=1, state_changes=0),
        dropped={"nonfinite": 0, "frozen": 41},
    )
    audio = types.SimpleNamespace(counters=collections.Counter(overflows=3), dropped={"frozen": 0})
    depth = types.SimpleNamespace(counters=collections.Counter(), dropped={"frozen": 0})
    sensors = {"rgb": rgb, "depth": depth, "audio": audio}
    assert sensor_events(sensors) == "rgb device_errors 2, reconnects 2, resets 1, frozen dropped 41; audio overflows 3"
    healthy = types.SimpleNamespace(degraded=None)  # the backend the config asked for
    runtime = types.SimpleNamespace(sensors=sensors, late=0, overruns=1, backend=healthy)
    last = orjson.dumps(
        {
            "label": "stop",
            "confidence": 0.9,
            "latency_ms": 1.5,
            "sensors": dict.fromkeys(MODALITIES, "OK"),
        }
    ).decode()
    line = status_line(runtime, last, 30.0)
    assert line.endswith(
        "overruns 1; rgb device_errors 2, reconnects 2, resets 1, frozen dropped 41; audio overflows 3"
    )
    quiet = types.SimpleNamespace(sensors={"depth": depth}, late=0, overruns=0, backend=healthy)
    assert status_line(quiet, last, 30.0).endswith("late 0, overruns 0"), "nothing to say: nothing added"


def test_a_stall_is_said_when_it_begins_and_when_it_ends(capsys):
    class _Stalling(_Flaky):
        stalled = False

        def _capture(self, timeout_s):
            if self.stalled:
                time.sleep(timeout_s)
                return None
            return super()._capture(timeout_s)

    dev = _Stalling(every=10**9)
    dev.read_timeout_s = 0.05
    dev.connect()
    try:
        assert wait_for(lambda: dev.read_latest(0.1) is not None)
        dev.stalled = True
        assert wait_for(lambda: "stalled" in dev.state(10.0)[1])
        dev.stalled = False
        assert wait_for(lambda: dev.state(10.0)[1] == "")
    finally:
        dev.disconnect()
    assert capsys.readouterr().err.splitlines() == [
        "edgefusion: sensor flaky: OK: stalled: no sample within 0.05 s",
        "edgefusion: sensor flaky: OK",
    ]
