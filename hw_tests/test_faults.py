"""Every HIL fault on the rig, through the whole runtime, with its detection and recovery times.

Each fault (``edgefusion.hil.rigs.FAULTS``) gets one short run of the real loop on ``--rig``: the
rig comes up, the fault takes its devices away (or freezes them) at ``FAULT_AT_S``, gives them back
``HOLD_S`` later, and the run goes on past the fault's recovery limit. The loop must keep its rate
and lose no tick, see the fault within the age limits, answer from the other modalities all along
(and never answer from none), and have every modality back within the limit.
"""

import pytest

from edgefusion.config import Config
from edgefusion.hil.loop_run import LoopRun, detection_s, recovery_s, run_loop
from edgefusion.hil.rigs import FAULTS, FaultWindow
from edgefusion.loop import NO_MODALITY
from edgefusion.modalities import ModalitySpec
from edgefusion.sensors.base import ABSENT_STATES, FROZEN_AFTER, Backoff
from edgefusion.sensors.frames import CAMERAS

# Every device is up well before this: the camera's first frames come within ~0.3 s, the
# microphone's first window once it holds 1 s of audio (~1.2 s on the virtual rig).
FAULT_AT_S = 2.5
HOLD_S = {
    # Longer than the camera driver's 5 tries of 0.5 s: it gives up (FAILED) and reopens, as after a replug.
    "camera-unplug": 3.0,
    # Within those tries (the driver's own hardware_reset() comes on the 4th): a stall, then frames again,
    # as a real camera's reset takes it away for a second or two.
    "camera-reset": 2.0,
    # Long enough for the microphone driver to see its stream end (FAILED) and fail to reopen a few times.
    "mic-unplug": 2.0,
    "camera-frozen": 2.0,
    "camera-and-mic": 3.0,
}
SETTLE_S = 1.0  # the run goes on this long past the recovery limit: "back for good" is seen, not assumed
# A modality no fault touches may still miss its age limit on a tick or two: its capture thread held
# off by the machine's other jobs (seen here with both cores busy). That its device stays connected
# (never FAILED or RECONNECTING) is asserted strictly; a fault reaching it would cost far more ticks.
MISSED_SHARE = 0.02

REOPEN_S = Backoff().max_s  # a driver's next open comes at most this long after its device is back
CAMERA_START_S = 1.2  # the pipeline started again and its first frameset (a loaded 2-core machine)
FROZEN_BACK_S = 0.5  # no reopen: the first new frame is used (1 frame, 1 tick; the rest for a descheduled thread)
# How long each rig's devices take to be there again once given back, before the driver has audio
# or frames to read. Virtual: the camera is the same software device; the restarted sound server's
# null sink renders ~2 s after its first recorder connects (edgefusion/sim/pulse.py), up to ~3.7 s
# here with both cores busy. Real: a RealSense re-enumerates on USB (authorized=1, or after
# hardware_reset()) in a few seconds; a re-enabled sound card is back at once.
DEVICE_BACK_S = {
    "virtual": {"camera": 0.0, "audio": 4.0},
    "realsense": {"camera": 5.0, "audio": 1.0},
}
# What only the real rig shows, said per fault on the virtual rig.
REAL_ONLY = {
    "camera-unplug": "USB de-authorisation of a real RealSense (/sys/bus/usb/devices/*/authorized) and its "
    "re-enumeration time",
    "camera-reset": "hardware_reset() of a real RealSense: it drops off the bus and re-enumerates",
    "mic-unplug": "a real sound card disabled through PulseAudio or ALSA, then enabled",
    "camera-frozen": "a real RealSense's stream repeating a frame (here the software device repeats one)",
    "camera-and-mic": "a real RealSense de-authorised and a real sound card disabled at once",
}


def recovery_limit_s(kind: str, fault: str, audio: ModalitySpec | None) -> float:
    """The longest a fault's modalities may take to be present again after the devices are given
    back: the device's return, the driver's reopen, then its first usable sample (a frameset; a
    whole window of new audio, and the hop it is published on)."""
    streams = FAULTS[fault]
    if fault == "camera-frozen":
        return FROZEN_BACK_S
    back = DEVICE_BACK_S[kind]
    limits = []
    if set(CAMERAS) & set(streams):
        limits.append(back["camera"] + REOPEN_S + CAMERA_START_S)
    if "audio" in streams and audio is not None:
        limits.append(back["audio"] + REOPEN_S + audio.window_s + 1 / audio.rate_hz)
    return max(limits)


def visible_after_s(fault: str, streams, cfg: Config, rates: dict[str, float], tick_hz: float) -> float:
    """How long after the fault starts its modalities may still be present: the newest sample
    (arriving up to one sample period late) ages past the limit; a frozen camera first needs
    ``FROZEN_AFTER`` repeats to be seen; then up to 2 ticks."""
    max_age = cfg.max_age_s()
    lag = max(max_age[s] + 1 / rates[s] for s in streams)
    if fault == "camera-frozen":
        lag += FROZEN_AFTER / min(rates[s] for s in streams)
    return lag + 2 / tick_hz


def _missed(at, names, since: float, until: float) -> tuple[int, int]:
    """Ticks in [since, until) on which one of ``names`` was absent, and the ticks there."""
    span = [r for t, r in at if since <= t < until]
    return sum(not all(r["present"][m] for m in names) for r in span), len(span)


def _check_answers(run: LoopRun) -> None:
    """No label from no modality; a label from any (the backend here is healthy)."""
    for t, r in run.at():
        if any(r["present"].values()):
            assert r["label"] is not None and r["reason"] is None, (t, r["present"], r["reason"])
        else:
            assert r["label"] is None and r["confidence"] is None and r["reason"] == NO_MODALITY, (t, r)


def _check_ticks(figures, run: LoopRun, seconds: float, tick_hz: float) -> None:
    """The loop kept its rate and every tick's result line reached the sink, in order."""
    runtime = run.runtime
    ticks = [r["tick"] for r in run.results]
    nominal = tick_hz * seconds
    figures.add("ticks", len(ticks), limit=f">= {0.95 * nominal:.0f} (95 % of {nominal:.0f})")
    figures.add("overruns", runtime.overruns)
    figures.add(f"ticks over {runtime.deadline_ms:g} ms", runtime.late)
    # One long gap (the process held off, whole slots skipped) or a slow loop: which, when ticks are short.
    gaps = [b["t"] - a["t"] for a, b in zip(run.results, run.results[1:])]
    figures.add("longest gap between ticks", max(gaps, default=0.0), "s")
    assert len(ticks) >= 0.95 * nominal, f"{len(ticks)} ticks in {seconds:g} s at {tick_hz:g} Hz"
    assert ticks == list(range(1, runtime.ticks + 1)), "every tick's result line, in order"


def _check_untouched(figures, run: LoopRun, faulted: list[str], seconds: float) -> None:
    """Every modality up before the fault; those it does not touch stay present and connected."""
    at = run.at()
    up = next((t for t, r in at if all(r["present"].values())), None)
    assert up is not None and up < FAULT_AT_S, f"every modality present before the fault (first at {up})"
    others = [m for m in run.streams if m not in faulted]
    missed_before, n_before = _missed(at, list(run.streams), up, FAULT_AT_S)
    missed_others, n_others = _missed(at, others, up, seconds)
    figures.add("ticks missing a modality before the fault", missed_before, limit=f"<= {MISSED_SHARE:.0%}")
    figures.add("ticks missing an untouched modality", missed_others, limit=f"<= {MISSED_SHARE:.0%}")
    assert missed_before <= MISSED_SHARE * n_before, f"{missed_before} of {n_before} ticks before the fault"
    assert missed_others <= MISSED_SHARE * n_others, f"{others} absent on {missed_others} of {n_others} ticks"
    for t, r in at:
        if t >= up:
            assert not any(r["sensors"][m] in ABSENT_STATES for m in others), (f"{others} stay connected", t, r)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_is_seen_and_recovered(rig_for, bundle, loop_backend, figures, fault):
    reason = rig_for.why_not(fault)
    if reason:
        pytest.skip(reason)
    how = rig_for.how(fault)
    streams = FAULTS[fault]
    used = {s.sensor: s for s in bundle.modalities}
    hit = [s for s in streams if s in used]
    if not hit:
        pytest.skip(f"the bundle uses no {' or '.join(streams)} stream: {fault} takes nothing from it")
    figures.add("caused by", how)
    if rig_for.kind == "virtual":
        figures.needs_jetson(REAL_ONLY[fault])

    cfg = Config()
    tick_hz = cfg.runtime.tick_hz
    limit = recovery_limit_s(rig_for.kind, fault, used.get("audio"))
    back_s = FAULT_AT_S + HOLD_S[fault]
    seconds = back_s + limit + SETTLE_S
    run = run_loop(rig_for, bundle, loop_backend, seconds, [FaultWindow(fault, FAULT_AT_S, back_s)])
    figures.sample(f"tick latency under {fault}", run.latencies_ms(FAULT_AT_S, back_s + limit), "ms")
    _check_ticks(figures, run, seconds, tick_hz)
    faulted = run.modalities(hit)
    _check_untouched(figures, run, faulted, seconds)
    _check_answers(run)

    lag = visible_after_s(fault, hit, cfg, {s: used[s].rate_hz for s in hit}, tick_hz)
    detected = detection_s(run, hit, FAULT_AT_S)
    recovered = recovery_s(run, hit, back_s)
    figures.add("detection_s", detected, "s", limit=f"<= {lag:.2f} s")
    figures.add("recovery_s", recovered, "s", limit=f"<= {limit:g} s")
    figures.cell("recovery_s", fault, "detected", detected, "s")
    figures.cell("recovery_s", fault, "recovered", recovered, "s")
    during = [(t, r) for t, r in run.at() if FAULT_AT_S + lag <= t < back_s]
    assert during, "ticks while the fault is visible"
    for t, r in during:
        assert not any(r["present"][m] for m in faulted), (f"{fault}: {faulted} absent", t, r["sensors"])
    assert detected is not None and detected <= lag, f"seen {detected} s after the fault; limit {lag:.2f} s"
    assert recovered is not None and recovered <= limit, (
        f"{faulted} back for good {recovered} s after the devices were; limit {limit:g} s"
    )

    if fault == "camera-frozen":
        frozen = {s: run.runtime.sensors[s].dropped["frozen"] for s in hit}
        figures.add("frozen frames dropped", sum(frozen.values()))
        assert all(n > 0 for n in frozen.values()), f"frozen frames dropped and counted per stream: {frozen}"
