"""``edgefusion``: the device CLI (demo, run, record, calibrate-offset, doctor, bench, eval, info).

``--json`` wherever a command reports.

Every command that loads a model takes ``--bundle DIR`` and defaults to the demo bundle shipped
in the package. User errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from edgefusion import log
from edgefusion.args import Parser, existing_file, new_file, new_folder, number
from edgefusion.errors import EdgefusionError, run_cli

PROG = "edgefusion"
DEMO_SECONDS = 20.0
ACTIVATE_TIMEOUT_S = 600.0  # what systemd is asked to wait while the backend activates
PRECISIONS = ("fp32", "fp16", "int8")
SECONDS = number(0.001, 10**9)  # a run's length: up to ~30 years, never 0, NaN or inf
SEED = number(0, 2**31 - 1, integer=True)  # as [source] seed
THREADS = number(0, 256, integer=True)  # as [runtime] threads


def _load_bundle(path: Path | None):
    from edgefusion.bundle import default_bundle_path, load_bundle

    return load_bundle(path or default_bundle_path())


class _Signals:
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


def _reloader(cfg, bundle_path: Path | None, runtime) -> Callable[[], None]:
    """SIGHUP: load, verify and activate the bundle again on a thread of its own (the ticks go
    on), then hand it to the loop, which swaps it in between two ticks. Activation ends with a
    warm tick on the new backend, so what is handed over runs. Whatever fails (a bundle refused,
    a file vanishing mid-check, onnxruntime refusing a graph, even a bug) is one log line, and
    the running model stays."""
    from edgefusion.backends import make_backend
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
        bundle = _load_bundle(bundle_path)
        if bundle.labels != runtime.labels:
            raise EdgefusionError(f"its labels differ ({', '.join(bundle.labels)}); restart to change them")
        backend = make_backend(cfg.runtime.backend, bundle, cfg.runtime.precision, threads=cfg.runtime.threads)
        backend.activate()
        runtime.next_backend = backend
        log.notice(f"reloaded {bundle.root}")

    def request() -> None:
        if busy.locked():
            log.warning("reload ignored: one is in progress; send SIGHUP again when it is done")
        else:
            threading.Thread(target=load, name="bundle-reload", daemon=True).start()

    return request


def _session(
    cfg,
    bundle_path: Path | None,
    seconds: float | None,
    json_lines: bool,
    demo: bool,
    record: dict | None = None,
    signals: _Signals | None = None,
    view_stream: TextIO | None = None,
) -> dict | None:
    """Run the loop on the configured source until ``seconds`` pass, a signal arrives or a
    max-speed replay ends; with ``record`` (out, label), into a session folder as well.

    ``view_stream`` gets the live view. A demo or a recording returns a summary scored against
    the rig's truth; a production run keeps nothing per tick (it may run for months), and says
    on stderr what it runs when it starts and what happened when it ends (a service's journal
    then holds both)."""
    from edgefusion.backends import make_backend
    from edgefusion.loop import Runtime
    from edgefusion.rigs import make_rig
    from edgefusion.sinks import RotatingFileSink, StreamSink
    from edgefusion.summary import SessionSummary
    from edgefusion.view import LiveView

    signals = signals or _Signals(reloadable=not demo)
    bundle_path = bundle_path or (Path(cfg.runtime.bundle) if cfg.runtime.bundle else None)
    bundle = _load_bundle(bundle_path)
    backend = make_backend(cfg.runtime.backend, bundle, cfg.runtime.precision, threads=cfg.runtime.threads)
    if record is not None and record.get("label") not in (None, *bundle.labels):
        raise EdgefusionError(f"--label {record['label']!r}: not a label of this bundle ({', '.join(bundle.labels)})")
    rig = make_rig(cfg, bundle.modalities, bundle.labels)
    for warning in rig.facts.get("warnings", ()):  # a replay of a session cut short says so
        log.warning(warning)
    sinks, recorder = [], None
    try:  # a refusal here must still close the rig (the virtual rig's sound server would outlive us)
        if json_lines:
            sinks.append(StreamSink(sys.stdout))
        if cfg.output.file:
            sinks.append(RotatingFileSink(cfg.output.file, cfg.output.max_bytes, cfg.output.backups))
        if record is not None:
            from edgefusion.session.recorder import SessionRecorder

            offsets = {m: s.offset_ms for m, s in cfg.sensors.items()}
            facts = {**rig.facts, "bundle": str(bundle.root), "tick_hz": cfg.runtime.tick_hz, "offsets_ms": offsets}
            recorder = SessionRecorder(
                record["out"], rig.sensors, bundle.modalities, facts, rig.truth, record.get("label")
            )
            sinks.append(recorder.sink())
    except BaseException:
        rig.close()
        raise
    from edgefusion.service.heartbeat import Heartbeat, LastLine
    from edgefusion.service.notify import Notifier, watchdog_interval_s
    from edgefusion.service.telemetry import Telemetry, make_reader

    notifier = Notifier()  # a no-op unless systemd started us with Type=notify
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
    stop, t_start = signals.stop, None
    try:
        # Activation may build TensorRT engines (minutes on a Jetson): systemd is told to wait.
        notifier.extend_timeout(ACTIVATE_TIMEOUT_S)
        backend.activate()  # before the rig's clock starts: fault times count from the loop's start
        t0 = rig.start()
        for clocked in (summary, view):
            if clocked is not None:
                clocked.t0 = t0
        if recorder is not None:
            recorder.start(t0)
        runtime.start()
        # Ready: the bundle is loaded, the backend warm, the sensors attempted (each keeps trying).
        notifier.ready(f"running {bundle.root.name} on {backend.name} ({backend.precision})")
        if not demo:
            t_start = time.monotonic()
            log.notice(_start_line(bundle, backend, cfg, json_lines, record, tuple(rig.sensors)))
            signals.reload_with(_reloader(cfg, bundle_path, runtime))
        heartbeat.start()
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
    if record is not None:
        sinks.append(f"session {record['out']}")
    return (
        f"running bundle {bundle.manifest.get('name', bundle.root.name)} ({bundle.root}), {backend.precision} on "
        f"{backend.name}, at {cfg.runtime.tick_hz:g} Hz; source: {source}; results to: {', '.join(sinks) or 'nowhere'}"
    )


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
    from edgefusion.service.heartbeat import sensor_events

    rate = runtime.ticks / seconds if seconds > 0 else 0.0
    sensors = "; ".join(f"{m} {states.get(m, '?')}" for m in runtime.sensors)
    events = sensor_events(runtime.sensors)
    writer = runtime.writer
    lost = writer.results_lost if writer is not None else 0
    sinks = f"{lost} results lost, {writer.errors if writer is not None else 0} sink errors"
    backend = " (backend failed)" if runtime.backend_failed else ""
    return (
        f"stopped after {seconds:.1f} s: {runtime.ticks} ticks ({rate:.1f} Hz), {runtime.overruns} overruns, "
        f"{runtime.late} late ticks (> {runtime.deadline_ms:g} ms), {runtime.invalid} ticks with no valid "
        f"output{backend}; {sensors}" + (f" [{events}]" if events else "") + f"; {sinks}"
    )


def _apply_source(cfg, source: str | None, max_speed: bool = False) -> None:
    """``--source`` (simulated, virtual, realsense, or replay:PATH: a session folder, a folder of
    another tool's recording and/or WAV, or such a file) over the config's [source]."""
    if source is not None:
        kind, _, path = source.partition(":")
        if (kind == "replay") != bool(path):
            raise EdgefusionError(
                f"--source {source!r}: use simulated, virtual, realsense or replay:DIR (a session folder, "
                "or a folder of a .bag/.db3 and/or a .wav), or replay:FILE (one of those files)"
            )
        cfg.source.kind, cfg.source.path = kind, path
    if max_speed:
        if cfg.source.kind != "replay":
            raise EdgefusionError("--max-speed replays a session as fast as it runs: use it with --source replay:DIR")
        cfg.source.realtime = False
    cfg.source.check("--source")


def cmd_demo(args) -> int:
    from edgefusion.config import Config
    from edgefusion.sensors.faults import DEFAULT_DEMO_FAULTS

    cfg = Config()
    cfg.source.kind = args.rig
    if args.source is not None and args.faults:
        raise EdgefusionError("--faults: a replay plays what was recorded, faults included")
    default = DEFAULT_DEMO_FAULTS if args.rig == "simulated" and args.source is None else ""
    cfg.source.faults = default if args.faults is None else args.faults
    cfg.source.seed = args.seed
    _apply_source(cfg, args.source, args.max_speed)
    cfg.runtime.precision = args.precision
    cfg.runtime.check("--precision")
    out = sys.stderr if args.json else sys.stdout
    if not args.json:
        what = cfg.source.path if cfg.source.kind == "replay" else f"{cfg.source.kind} rig"
        print(f"edgefusion demo: {what}, faults: {cfg.source.faults or 'none'}  (Ctrl-C stops)", file=out)
    seconds = args.seconds if args.seconds is not None or cfg.source.kind == "replay" else DEMO_SECONDS
    view = None if args.json else sys.stdout
    report = _session(cfg, args.bundle, seconds, json_lines=args.json, demo=True, view_stream=view)
    print(json.dumps(report) if args.json else _render_summary(report), file=out)
    return 0


def cmd_run(args) -> int:
    import faulthandler

    from edgefusion.config import load_config

    # systemd's watchdog ends a hung service with SIGABRT: every thread's stack then goes to the
    # journal, which says where it hung.
    faulthandler.enable()

    cfg = load_config(args.config)
    _apply_source(cfg, args.source, args.max_speed)
    _session(cfg, args.bundle, args.seconds, json_lines=cfg.output.stdout, demo=False, signals=args.signals)
    return 0


def cmd_record(args) -> int:
    from edgefusion.config import Config, load_config

    cfg = load_config(args.config) if args.config else Config()
    _apply_source(cfg, args.source)
    if cfg.source.kind == "replay":
        raise EdgefusionError("record from sensors (simulated, virtual or realsense), not from a replay")
    if not args.json:
        print(f"edgefusion record: {cfg.source.kind} rig into {args.out}  (Ctrl-C stops)")
    view = sys.stderr if args.json else sys.stdout  # the live status while recording
    report = _session(cfg, args.bundle, args.seconds, json_lines=False, demo=False, record=vars(args), view_stream=view)
    print(json.dumps(report) if args.json else _render_summary(report) + f"\nrecorded into {args.out}")
    return 0


def cmd_calibrate_offset(args) -> int:
    from edgefusion.calibration.time_offset import session_offset
    from edgefusion.config import set_sensor_offset
    from edgefusion.session.layout import load_session

    session = load_session(args.session)
    est = session_offset(session)
    recorded = session.facts.get("offsets_ms", {}).get("audio", 0.0)
    offset_ms = recorded + est.offset_s * 1000
    report = {
        "offset_ms": offset_ms,
        "correction_ms": est.offset_s * 1000,
        "recorded_with_ms": recorded,
        "residual": est.residual,
        "event_frames": est.events_frames,
    }
    if est.events_frames < 3 or est.residual > 1.0:
        raise EdgefusionError(
            f"{args.session}: no clear clapper events (frames with events: {est.events_frames}, residual "
            f"{est.residual:.2f}); record again with a flash-and-click clapper in view, several times"
        )
    if args.config:
        set_sensor_offset(args.config, "audio", offset_ms)
        report["config"] = str(args.config)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"audio-video offset: [sensors.audio] offset_ms = {offset_ms:.2f}  (residual {est.residual:.3f})")
        if args.config:
            print(f"written to {args.config}")
    return 0


def cmd_doctor(args) -> int:
    from edgefusion.doctor import as_json, diagnose, render

    checks = diagnose(args.config, args.bundle)
    print(json.dumps(as_json(checks)) if args.json else render(checks))
    return 1 if any(c.status == "fail" for c in checks) else 0


def cmd_bench(args) -> int:
    from edgefusion.backends import make_backend
    from edgefusion.bench import render, run_bench

    bundle = _load_bundle(args.bundle)
    backend = make_backend("onnxruntime", bundle, args.precision, threads=args.threads)
    report = run_bench(bundle, backend, args.ticks, args.alloc_ticks, args.checkpoint)
    print(json.dumps(report) if args.json else render(report))
    return 0


def cmd_eval(args) -> int:
    from edgefusion.backends import make_backend
    from edgefusion.evaluate import evaluate, heldout, plot, render, require_matplotlib

    if args.plot and args.no_noise:
        raise EdgefusionError("--plot draws the noise curves: drop --no-noise")
    if args.plot:
        require_matplotlib()  # before the minutes of work, not after them
    bundle = _load_bundle(args.bundle)
    precisions = args.precisions.split(",") if args.precisions else list(bundle.precisions)
    unknown = [p for p in precisions if p not in bundle.precisions]
    if unknown:
        raise EdgefusionError(
            f"--precisions: {unknown[0]!r} is not in this bundle; choose from {', '.join(bundle.precisions)}"
        )
    backends = {p: make_backend("onnxruntime", bundle, p) for p in precisions}
    for b in backends.values():
        b.activate()
    try:
        report = evaluate(bundle, backends, heldout(bundle, args.samples), noise=not args.no_noise)
    finally:
        for b in backends.values():
            b.deactivate()
    if args.plot and "noise" in report:
        plot(report, args.plot, bundle)
        report["plot"] = str(args.plot)
    print(json.dumps(report) if args.json else render(report))
    return 0


def cmd_info(args) -> int:
    bundle = _load_bundle(args.bundle)
    m = bundle.manifest
    info = {
        "bundle": str(bundle.root),
        "name": m.get("name"),
        "format_version": m["format_version"],
        "labels": list(bundle.labels),
        "precisions": list(bundle.precisions),
        "modalities": [_describe_modality(s) for s in bundle.modalities],
        "fusion": m.get("fusion"),
        "files": len(m["files"]),
        "bytes": sum(f["bytes"] for f in m["files"].values()),
        "accuracy": bundle.accuracy.get("by_precision", {}),
        "warnings": bundle.accuracy.get("warnings", []),  # edgefusion-export's (a model near chance)
    }
    if args.json:
        print(json.dumps(info))
        return 0
    print(
        f"{info['bundle']}: {info['name']} (format {info['format_version']}), verified: {info['files']} files, "
        f"{info['bytes'] / 1e6:.1f} MB"
    )
    print(f"labels: {', '.join(info['labels'])}")
    for d in info["modalities"]:
        shape = "x".join(str(n) for n in d["shape"])
        timing = (
            f"{d['sample_rate']} Hz, {d['window_s']:g} s window, {d['rate_hz']:g} windows/s"
            if d["sensor"] == "audio"
            else f"{d['rate_hz']:g} fps"
        )
        print(f"modality {d['name']}: {d['sensor']} stream, input {shape}, {timing}")
    print(f"fusion: {info['fusion']}")
    for prec, table in info["accuracy"].items():
        print(f"{prec:<5} " + "  ".join(f"{k} {v:.3f}" for k, v in table.items()))
    for warning in info["warnings"]:
        print(f"WARNING: {warning}")
    return 0


def _describe_modality(spec) -> dict:
    """One modality as ``info`` shows it: its name, the stream feeding it, its input, its timing."""
    d = {"name": spec.name, "sensor": spec.sensor, "shape": list(spec.shape), "rate_hz": spec.rate_hz}
    if spec.sensor == "audio":
        d.update(sample_rate=spec.sample_rate, window_s=spec.window_s)
    return d


def _render_summary(r: dict) -> str:
    lines = [
        f"ran {r['seconds']:.1f} s: {r['ticks']} ticks ({r['tick_rate_hz']:.1f} Hz, {r['overruns']} overruns), "
        f"latency p50 {r['latency_ms_p50']:.2f} ms, p99 {r['latency_ms_p99']:.2f} ms",
        "encoder runs: "
        + ", ".join(f"{m} {n}" for m, n in r["encoder_runs"].items())
        + f" (head: {r['head_runs']}): per-modality caching skipped {r['encoder_runs_saved']:.0%} of encoder runs",
        "accuracy against the scenario, by what was present (settled ticks):",
    ]
    for pattern, e in r["accuracy_by_pattern"].items():
        lines.append(f"  {pattern:<16} {e['accuracy']:.2f}  over {e['ticks']} ticks")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    from edgefusion.sensors.faults import FAULT_KINDS, JUMP_S

    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--bundle", type=Path, default=None, help="model bundle folder (default: the shipped demo)")
        return sp

    sp = add("demo", "run the bundle on the simulated rig with scripted sensor faults")
    sp.add_argument("--seconds", type=SECONDS, default=None, help="how long to run (default: 20; a replay: all of it)")
    sp.add_argument(
        "--faults",
        default=None,
        metavar="SPEC",
        help=f"STREAM:KIND@START-END,... (kinds: {', '.join(FAULT_KINDS)}; jump: the device clock jumps "
        f"{JUMP_S:g} s late, then early); '' for none",
    )
    sp.add_argument("--seed", type=SEED, default=0, help="scenario seed (default: 0)")
    sp.add_argument(
        "--rig",
        choices=("simulated", "virtual"),
        default="simulated",
        help="simulated (numpy, the default) or virtual (the real RealSense and PortAudio libraries, fed the "
        "same scenario; needs the sensors extra and PulseAudio)",
    )
    sp.add_argument("--source", default=None, metavar="replay:DIR", help="replay a recorded session instead")
    sp.add_argument("--max-speed", action="store_true", help="replay as fast as the ticks run, on the recorded ticks")
    sp.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bundle variant (default: fp32)")
    sp.add_argument("--json", action="store_true", help="result lines (JSON) on stdout, summary JSON on stderr")
    sp.set_defaults(fn=cmd_demo)

    sp = add("run", "the production entry point: run with a TOML config until stopped")
    sp.add_argument("--config", type=Path, required=True, help="TOML config file (see the README)")
    sp.add_argument("--seconds", type=SECONDS, default=None, help="stop after this long (default: run until signalled)")
    sp.add_argument("--source", default=None, help="override [source]: simulated, virtual, realsense or replay:DIR")
    sp.add_argument("--max-speed", action="store_true", help="replay as fast as the ticks run, on the recorded ticks")
    sp.set_defaults(fn=cmd_run)

    sp = add("record", "record a session (camera, audio, events, results) from the configured sensors")
    sp.add_argument("--out", type=new_folder, required=True, help="new session folder")
    sp.add_argument("--config", type=Path, default=None, help="TOML config (default: the simulated rig)")
    sp.add_argument("--source", default=None, help="override [source]: simulated, virtual or realsense")
    sp.add_argument("--seconds", type=SECONDS, default=None, help="stop after this long (default: until signalled)")
    sp.add_argument("--label", default=None, help="the intent shown throughout (where the rig cannot know it)")
    sp.add_argument("--json", action="store_true", help="summary as JSON")
    sp.set_defaults(fn=cmd_record)

    sp = sub.add_parser(
        "calibrate-offset",
        help="the audio-video time offset from a recorded session of claps",
        description="the audio-video time offset from a recorded session of claps (an LED clapper seen and heard)",
    )
    sp.add_argument("--session", type=Path, required=True, help="a session recorded with `edgefusion record`")
    sp.add_argument("--config", type=Path, default=None, help="write [sensors.audio] offset_ms into this TOML file")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_calibrate_offset)

    sp = add("doctor", "check this machine for a run: packages, config, bundle, GPU, cameras, microphones, permissions")
    sp.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the config to check (default: /etc/edgefusion/edgefusion.toml if present)",
    )
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_doctor)

    sp = add("bench", "runtime overhead over bare inference, caching savings, allocations, memory")
    sp.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bundle variant (default: fp32)")
    sp.add_argument("--ticks", type=number(100, 10**7, integer=True), default=3000, help="timed ticks (default: 3000)")
    sp.add_argument(
        "--alloc-ticks",
        type=number(1, 10**7, integer=True),
        default=10_000,
        help="ticks for allocation growth (default: 10000)",
    )
    sp.add_argument("--threads", type=THREADS, default=1, help="onnxruntime intra-op threads (default: 1)")
    sp.add_argument("--checkpoint", type=existing_file, default=None, help="LMF checkpoint, to add PyTorch eager")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_bench)

    sp = add("eval", "accuracy per precision and presence pattern, Fusion_Gain, robustness, noise curves")
    sp.add_argument(
        "--samples", type=number(7, 100_000, integer=True), default=700, help="held-out samples (default: 700)"
    )
    sp.add_argument("--precisions", default=None, help="comma list (default: every variant in the bundle)")
    sp.add_argument("--no-noise", action="store_true", help="skip the noise curves")
    sp.add_argument("--plot", type=new_file, default=None, help="write the noise curves as a PNG (needs matplotlib)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_eval)

    sp = add("info", "verify a bundle and describe it")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # run's handlers go in first, before even the parser is built (it imports the sensors, numpy).
    signals = _Signals(reloadable=True) if argv[:1] == ["run"] else None
    args = _parser().parse_args(argv)
    args.signals = signals
    return args.fn(args)


def entry() -> int:
    return run_cli(main, None, PROG)


if __name__ == "__main__":
    sys.exit(entry())
