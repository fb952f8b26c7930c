"""The demo's live view: readable state changes and status lines, terminal or not."""

import io

from edgefusion.loop import TickResult
from edgefusion.sensors.base import SensorState
from edgefusion.view import LiveView

LABELS = ("fetch", "stop")
NAMES = ("rgb", "depth", "audio")
OK, FAILED = SensorState.OK, SensorState.FAILED


def _result(t, states, present, label="stop", reason=None, names=NAMES):
    conf, probs = (0.75, [0.25, 0.75]) if label else (None, None)
    sample_t = (t,) * len(names)
    return TickResult(t, 1, label, conf, probs, present, present, states, 0.4, sample_t, reason).as_dict(LABELS, names)


def test_state_changes_and_status_read_plainly_off_a_terminal():
    out = io.StringIO()
    view = LiveView(truth=lambda t: ("stop", t), stream=out)
    view(_result(0.0, (OK, OK, OK), (True, True, True)))
    view(_result(1.5, (FAILED, OK, OK), (False, True, True)))
    view(_result(2.6, (FAILED, OK, OK), (False, True, True), label=None, reason="non-finite output"))
    text = out.getvalue()
    assert "rgb   OK -> FAILED" in text and "SensorState" not in text and "\x1b" not in text
    assert "rgb:FAILED-" in text and "intent stop" in text and "75%" in text and "(asked: stop)" in text
    assert "intent (none)    non-finite output" in text, "no confidence, the reason instead"


def test_the_view_shows_the_bundles_own_modalities():
    out = io.StringIO()
    view = LiveView(stream=out)
    view(_result(0.0, (OK, OK), (True, True), names=("cam", "mic")))
    view(_result(1.5, (OK, FAILED), (True, False), names=("cam", "mic")))
    text = out.getvalue()
    assert "mic   OK -> FAILED" in text and "cam:ok" in text and "mic:FAILED-" in text
    assert "rgb" not in text and "audio" not in text
