"""The application: a bundle, a backend, a rig, its sinks and the loop, put together for one run.

The CLI (``cli.py``) only parses; this module assembles what a run needs from the config,
starts it in the order a service needs (signals first, the backend activated before the rig's
clock starts, systemd told when it is ready), and takes it down again in the reverse order, saying
on stderr what a production run ran and what happened. Everything heavy is imported inside the
functions: ``edgefusion run`` installs its signal handlers before any of it loads.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from edgefusion import log
from edgefusion.errors import EdgefusionError

ACTIVATE_TIMEOUT_S = 600.0  # what systemd is asked to wait while the backend activates


def load_bundle(path: Path | None):
    """The bundle at ``path``, or the demo bundle shipped in the package."""
    from edgefusion.bundle import default_bundle_path
    from edgefusion.bundle import load_bundle as load

    return load(path or default_bundle_path())


class Signals:
    """SIGINT/SIGTERM ask the loop to stop; with ``reloadable``, SIGHUP reloads the bundle.

    Installed before anything slow (imports, the bundle's hashes, the backend's activation), so
    that a signal in a service's first second is not the default's instant death: a stop asked
    for while starting is honoured as soon as the loop runs, and a SIGHUP before the reloader
    exists is remembered and done once the model runs (the files it names may have changed
    since they were read). ``restore`` brings the previous handlers back for shutdown, so a
    second Ctrl-C still interrupts a stuck stop."""

    def __init__(self, reloadable: bool):
        self.stop = threading.Event()
        self._reload: Callable[[], None] | None = None
        self._reload_pending = False
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if reloadable else (signal.SIGINT, signal.SIGTERM)
        self._previous = {sig: signal.signal(sig, self._handle) for sig in handled}

    def _handle(self, signum, _frame) -> None:
        if signum != signal.SIGHUP:
            self.stop.set()
        elif self._reload is not None:
            self._reload()
        elif not self._reload_pending:
            self._reload_pending = True
            log.notice("SIGHUP while starting: the bundle is reloaded once the model runs")

    def reload_with(self, reload: Callable[[], None]) -> None:
        """From now on SIGHUP calls ``reload``; one that came while starting is done now."""
        self._reload = reload
        if self._reload_pending:
            reload()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def reloader(cfg, bundle_path: Path | None, runtime) -> Callable[[], None]:
    """SIGHUP: load, verify and activate the bundle again on a thread of its own (the ticks go
    on), then hand it to the loop, which swaps it in between two ticks. Activation ends with a
    warm tick on the new backend, so what is handed over runs. Whatever fails (a bundle refused,
    a file vanishing mid-check, onnxruntime refusing a graph, even a bug) is one log line, and
    the running model stays. The backend comes through ``open_backend`` as at start: a reload
    may mend a degraded run (engines built since) or get only a fallback, which it says."""
    from edgefusion.backends import open_backend
    from edgefusion.backends.base import first_line

    busy = threading.Lock()  # one reload at a time: a second SIGHUP meanwhile is ignored

    def load() -> None:
        with busy:
            try:
                _load()
            except Exception as err:  # whatever it is, the old model runs on and the service stays up
                why = str(err) if isinstance(err, EdgefusionError) else f"{type(err).__name__}: {first_line(err)}"
                log.error(f"reload refused: {' '.join(why.split())}; the loaded model keeps running")

    def _load() -> None:
        if runtime.next_backend is not None:  # the last reload has not been swapped in yet
            log.warning("reload ignored: the previous one is not in use yet; send SIGHUP again in a moment")
            return
        bundle = load_bundle(bundle_path)
        if bundle.labels != runtime.labels:
            raise EdgefusionError(f"its labels differ ({', '.join(bundle.labels)}); restart to change them")
        backend = open_backend(cfg, bundle)
        runtime.next_backend = backend
        if backend.degraded:
            log.warning(f"reloaded {bundle.root}, degraded: {backend.degraded}")
        else:
            log.notice(f"reloaded {bundle.root}")

    def request() -> None:
        if busy.locked():
            log.warning("reload ignored: one is in progress; send SIGHUP again when it is done")
        else:
            threading.Thread(target=load, name="bundle-reload", daemon=True).start()

    return request


def run_session(
    cfg,
    bundle_path: Path | None,
    seconds: float | None,
    json_lines: bool,
    demo: bool,
    record: dict | None = None,
    signals: Signals | None = None,
    view_stream: TextIO | None = None,
) -> dict | None:
    """Run the loop on the configured source until ``seconds`` pass, a signal arrives or a
    max-speed replay ends; with ``record`` (out, label), into a session folder as well.

    ``view_stream`` gets the live view. A demo or a recording returns a summary scored against
    the rig's truth; a production run keeps nothing per tick (it may run for months), and says
    on stderr what it runs when it starts and what happened when it ends (a service's journal
    then holds both)."""
    from edgefusion.backends import open_backend
    from edgefusion.backends.fallback import degraded_mark
    from edgefusion.health import HealthBeat
    from edgefusion.loop import Runtime
    from edgefusion.rigs import make_rig
    from edgefusion.service.heartbeat import Heartbeat, LastLine
    from edgefusion.service.notify import Notifier, watchdog_interval_s
    from edgefusion.service.telemetry import Telemetry, make_reader
    from edgefusion.sinks import RotatingFileSink, StreamSink
    from edgefusion.summary import SessionSummary
    from edgefusion.view import LiveView

    signals = signals or Signals(reloadable=not demo)
    bundle_path = bundle_path or (Path(cfg.runtime.bundle) if cfg.runtime.bundle else None)
    bundle = load_bundle(bundle_path)
    if record is not None and record.get("label") not in (None, *bundle.labels):
        raise EdgefusionError(f"--label {record['label']!r}: not a label of this bundle ({', '.join(bundle.labels)})")
    notifier = Notifier()  # a no-op unless systemd started us with Type=notify
    # Activation may build TensorRT engines (minutes on a Jetson): systemd is told to wait. It
    # comes before the rig exists, so fault times count from the loop's start.
    notifier.extend_timeout(ACTIVATE_TIMEOUT_S)
    backend = open_backend(cfg, bundle)
    try:
        rig = make_rig(cfg, bundle.modalities, bundle.labels)
    except BaseException:
        backend.deactivate()
        raise
    for warning in rig.facts.get("warnings", ()):  # a replay of a session cut short says so
        log.warning(warning)
    sinks, recorder = [], None
    try:  # a refusal here must still close the rig (the virtual rig's sound server would outlive us)
        if json_lines:
            sinks.append(StreamSink(sys.stdout))
        if cfg.output.file:
            sinks.append(RotatingFileSink(cfg.output.file, cfg.output.max_bytes, cfg.output.backups))
        if cfg.output.zenoh.enabled:
            from edgefusion.bus.sink import ZenohSink

            sinks.append(ZenohSink(cfg.output.zenoh))
        if record is not None:
            from edgefusion.session.recorder import SessionRecorder

            offsets = {m: s.offset_ms for m, s in cfg.sensors.items()}
            facts = {**rig.facts, "bundle": str(bundle.root), "tick_hz": cfg.runtime.tick_hz, "offsets_ms": offsets}
            recorder = SessionRecorder(
                record["out"], rig.sensors, bundle.modalities, facts, rig.truth, record.get("label")
            )
            sinks.append(recorder.sink())
        if cfg.output.mcap:  # last: nothing after it can refuse the start and leave its .part behind
            from edgefusion.mcap_log import McapSink

            sinks.append(McapSink(cfg.output.mcap, cfg.output.backups, cfg.output.mcap_inputs_hz))
    except BaseException:
        rig.close()
        backend.deactivate()
        raise
    last_line = LastLine()
    if notifier.enabled:
        sinks.append(last_line)
    view = LiveView(rig.truth, view_stream) if view_stream is not None else None
    summary = SessionSummary(rig.truth) if demo or record is not None else None

    def on_result(r: dict) -> None:
        summary.add(r)
        if view:
            view(r)

    runtime = Runtime(
        backend,
        rig.sensors,
        cfg.max_age_s(),
        cfg.runtime.tick_hz,
        tuple(sinks),
        on_result if summary else None,
        cfg.output.flush_ms / 1000,
        cfg.runtime.deadline_ms,
    )
    telemetry = None if demo else Telemetry(make_reader(), runtime, cfg.thermal)
    heartbeat = Heartbeat(notifier, runtime, watchdog_interval_s(), last_line, telemetry=telemetry)
    # The sinks that publish the health beside the results (a bus, a log) get it on a thread of its own.
    health = HealthBeat(runtime, tuple(s for s in sinks if hasattr(s, "health")), cfg.output.health_s, telemetry)
    stop, t_start = signals.stop, None
    try:
        t0 = rig.start()
        for clocked in (summary, view):
            if clocked is not None:
                clocked.t0 = t0
        if recorder is not None:
            recorder.start(t0)
        runtime.start()
        # Ready: the bundle is loaded, the backend warm, the sensors attempted (each keeps trying).
        mark = degraded_mark(backend)
        notifier.ready(
            (f"{mark}; " if mark else "") + f"running {bundle.root.name} on {backend.name} ({backend.precision})"
        )
        _say_status(sinks, bundle, backend, "running")
        if not demo:
            t_start = time.monotonic()
            log.notice(_start_line(bundle, backend, cfg, json_lines, record, tuple(rig.sensors)))
            signals.reload_with(reloader(cfg, bundle_path, runtime))
        heartbeat.start()
        health.start()
        if telemetry is not None:
            telemetry.start()
        if rig.duration_s is not None:  # a replay ends with its recording
            seconds = rig.duration_s if seconds is None else min(seconds, rig.duration_s)
        if rig.ticks is not None:  # a replay at max speed: the recorded ticks, no waiting
            from edgefusion.session.replay import replay_tick

            for tick in rig.ticks:
                if stop.is_set() or (seconds is not None and tick["t"] - t0 > seconds):
                    break
                replay_tick(runtime, rig.sensors, tick)
        else:
            runtime.run(stop, seconds)
    finally:
        if telemetry is not None:
            telemetry.stop()
        heartbeat.stop()
        health.stop()
        try:
            notifier.stopping()
        except OSError as err:  # the rest of the shutdown must happen all the same
            log.error(f"could not tell systemd we are stopping: {err}")
        signals.restore()
        states = _sensor_states(runtime) if t_start is not None else {}
        runtime.stop()
        rig.close()
        if view:
            view.close()
        if t_start is not None:
            log.notice(_exit_line(runtime, time.monotonic() - t_start, states))
    report = summary.report(runtime) if summary else None
    if recorder is not None:
        report["recording"] = {"out": str(recorder.out), **recorder.close()}
    return report


def _say_status(sinks: list, bundle, backend, state: str) -> None:
    """The service's state to the sinks that publish it (the bus): what runs, since when."""
    from edgefusion import __version__

    status = {
        "state": state,
        "t": time.time(),
        "bundle": bundle.manifest.get("name", bundle.root.name),
        "labels": list(bundle.labels),
        "modalities": list(bundle.names),
        "backend": backend.name,
        "precision": backend.precision,
        "version": __version__,
    }
    for sink in sinks:
        if hasattr(sink, "status"):
            sink.status(status)


def _start_line(bundle, backend, cfg, json_lines: bool, record: dict | None, streams: tuple[str, ...]) -> str:
    """What a run runs: bundle, precision, backend, source (the devices of ``streams``), rate
    and where results go."""
    src = cfg.source
    if src.kind == "replay":
        source = f"replay of {src.path} ({'real time' if src.realtime else 'max speed'})"
    elif src.kind == "realsense":
        devices = []
        cameras = [m for m in streams if m != "audio"]
        if cameras:
            camera = f"RealSense {cfg.camera.serial}" if cfg.camera.serial else "the first RealSense found"
            devices.append(
                f"{camera} ({'+'.join(cameras)}, {cfg.camera.width}x{cfg.camera.height} at {cfg.camera.fps} fps)"
            )
        if "audio" in streams:
            devices.append(
                f"microphone {cfg.microphone.device!r}" if cfg.microphone.device else "the default microphone"
            )
        source = " and ".join(devices)
    else:
        source = f"{src.kind} rig (seed {src.seed}, faults: {src.faults or 'none'})"
    sinks = [name for name, on in (("stdout", json_lines), (cfg.output.file, bool(cfg.output.file))) if on]
    if cfg.output.zenoh.enabled:
        from edgefusion.bus.config import robot_name

        zenoh = cfg.output.zenoh
        where = f" via {', '.join(zenoh.connect)}" if zenoh.connect else ""
        sinks.append(f"zenoh edgefusion/{robot_name(zenoh)}/* ({zenoh.mode}{where}{', ROS 2' if zenoh.ros2 else ''})")
    if record is not None:
        sinks.append(f"session {record['out']}")
    if cfg.output.mcap:
        sinks.append(f"MCAP log {cfg.output.mcap}")
    return (
        f"running bundle {bundle.manifest.get('name', bundle.root.name)} ({bundle.root}), {backend.precision} on "
        f"{backend.name}, at {cfg.runtime.tick_hz:g} Hz; source: {source}; results to: {', '.join(sinks) or 'nowhere'}"
    ) + (f"; degraded: {backend.degraded}" if backend.degraded else "")


def _sensor_states(runtime) -> dict[str, str]:
    """Each sensor's state and its reason as the run ends (before the sensors are closed)."""
    states = {}
    for m, sensor in runtime.sensors.items():
        state, why = sensor.state(runtime.max_age_s[m])
        states[m] = f"{state.value} ({why})" if why else state.value
    return states


def _exit_line(runtime, seconds: float, states: dict[str, str]) -> str:
    """What happened in a run: ticks, rate, overruns and late ticks, each sensor's state and
    counters, what the sinks dropped or failed to write."""
    from edgefusion.backends.fallback import degraded_mark
    from edgefusion.service.heartbeat import sensor_events

    rate = runtime.ticks / seconds if seconds > 0 else 0.0
    sensors = "; ".join(f"{m} {states.get(m, '?')}" for m in runtime.sensors)
    events = sensor_events(runtime.sensors)
    writer = runtime.writer
    lost = writer.results_lost if writer is not None else 0
    sinks = f"{lost} results lost, {writer.errors if writer is not None else 0} sink errors"
    backend = " (backend failed)" if runtime.backend_failed else ""
    mark = degraded_mark(runtime.backend)  # the backend at the end: a reload may have mended it
    backend += f"; {mark}" if mark else ""
    return (
        f"stopped after {seconds:.1f} s: {runtime.ticks} ticks ({rate:.1f} Hz), {runtime.overruns} overruns, "
        f"{runtime.late} late ticks (> {runtime.deadline_ms:g} ms), {runtime.invalid} ticks with no valid "
        f"output{backend}; {sensors}" + (f" [{events}]" if events else "") + f"; {sinks}"
    )
