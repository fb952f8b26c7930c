"""``edgefusion``: the device CLI (demo, run, record, export-mcap, calibrate-offset, doctor, service-network, bench,
eval, engines, listen, info, hil).

``--json`` wherever a command reports. This module parses and reports; a run is assembled in
``app.py``.

Every command that loads a model takes ``--bundle DIR`` and defaults to the demo bundle shipped
in the package. User errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgefusion.app import Signals, load_bundle, run_session
from edgefusion.args import Parser, existing_file, new_file, new_folder, number
from edgefusion.errors import EdgefusionError, run_cli

PROG = "edgefusion"
DEMO_SECONDS = 20.0
PRECISIONS = ("fp32", "fp16", "int8")
SECONDS = number(0.001, 10**9)  # a run's length: up to ~30 years, never 0, NaN or inf
SEED = number(0, 2**31 - 1, integer=True)  # as [source] seed
THREADS = number(0, 256, integer=True)  # as [runtime] threads


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
    cfg.runtime.backend, cfg.runtime.precision = args.backend, args.precision
    cfg.runtime.check("--precision")
    out = sys.stderr if args.json else sys.stdout
    if not args.json:
        what = cfg.source.path if cfg.source.kind == "replay" else f"{cfg.source.kind} rig"
        print(f"edgefusion demo: {what}, faults: {cfg.source.faults or 'none'}  (Ctrl-C stops)", file=out)
    seconds = args.seconds if args.seconds is not None or cfg.source.kind == "replay" else DEMO_SECONDS
    view = None if args.json else sys.stdout
    report = run_session(cfg, args.bundle, seconds, json_lines=args.json, demo=True, view_stream=view)
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
    if args.backend is not None:
        cfg.runtime.backend = args.backend
    run_session(cfg, args.bundle, args.seconds, json_lines=cfg.output.stdout, demo=False, signals=args.signals)
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
    report = run_session(
        cfg, args.bundle, args.seconds, json_lines=False, demo=False, record=vars(args), view_stream=view
    )
    print(json.dumps(report) if args.json else _render_summary(report) + f"\nrecorded into {args.out}")
    return 0


def cmd_export_mcap(args) -> int:
    from edgefusion.session.to_mcap import export_session

    counts = export_session(args.session, args.out, args.frames_hz)
    if args.json:
        print(json.dumps({"out": str(args.out), "messages": counts}))
    else:
        print(f"{args.out}: " + ", ".join(f"{n} on {topic}" for topic, n in counts.items()))
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


def cmd_service_network(args) -> int:
    from edgefusion.config import load_config
    from edgefusion.service import network

    cfg = load_config(args.config)
    at = f"{args.config}: [output.zenoh]"
    if args.print:
        text = network.dropin(cfg.output.zenoh, at)
        print(text if text is not None else "# [output.zenoh] is off: no drop-in, the unit's IPAddressDeny=any stands")
        return 0
    path, text = network.install(cfg.output.zenoh, args.out, at)
    allowed = [line.split("=", 1)[1] for line in network.directives(text) if line.startswith("IPAddressAllow=")]
    if text is None:
        print(f"no {path} ([output.zenoh] is off): the unit's IPAddressDeny=any stands")
    else:
        print(f"wrote {path}: IPAddressAllow {', '.join(allowed)}")
    print("then: systemctl daemon-reload && systemctl restart edgefusion")
    return 0


def _backend_config(backend: str, precision: str, threads: int = 1):
    """The config ``open_backend`` takes, for a command without ``--config`` (bench, eval)."""
    from edgefusion.config import Config

    cfg = Config()
    cfg.runtime.backend, cfg.runtime.precision, cfg.runtime.threads = backend, precision, threads
    return cfg


def cmd_bench(args) -> int:
    from edgefusion.backends import open_backend
    from edgefusion.bench import render, run_bench

    bundle = load_bundle(args.bundle)
    backend = open_backend(_backend_config(args.backend, args.precision, args.threads), bundle)
    report = run_bench(bundle, backend, args.ticks, args.alloc_ticks, args.checkpoint)
    print(json.dumps(report) if args.json else render(report))
    return 0


def cmd_eval(args) -> int:
    from edgefusion.backends import open_backend
    from edgefusion.evaluate import evaluate, heldout, plot, render, require_matplotlib

    if args.plot and args.no_noise:
        raise EdgefusionError("--plot draws the noise curves: drop --no-noise")
    if args.plot:
        require_matplotlib()  # before the minutes of work, not after them
    bundle = load_bundle(args.bundle)
    precisions = args.precisions.split(",") if args.precisions else list(bundle.precisions)
    unknown = [p for p in precisions if p not in bundle.precisions]
    if unknown:
        raise EdgefusionError(
            f"--precisions: {unknown[0]!r} is not in this bundle; choose from {', '.join(bundle.precisions)}"
        )
    backends = {}
    try:
        for p in precisions:
            backends[p] = open_backend(_backend_config(args.backend, p), bundle)
        report = evaluate(bundle, backends, heldout(bundle, args.samples, args.data), noise=not args.no_noise)
    finally:
        for b in backends.values():
            b.deactivate()
    if args.plot and "noise" in report:
        plot(report, args.plot, bundle)
        report["plot"] = str(args.plot)
    print(json.dumps(report) if args.json else render(report))
    return 0


def cmd_listen(args) -> int:
    import dataclasses

    from edgefusion.bus.config import ZenohSection
    from edgefusion.bus.listen import listen
    from edgefusion.config import load_config

    section = load_config(args.config).output.zenoh if args.config else ZenohSection()
    if args.connect:
        section = dataclasses.replace(section, mode="peer", connect=tuple(args.connect), listen=(), scouting=False)
    section.check("--connect")
    return listen(section, args.robot, args.json, args.seconds, Signals(reloadable=False).stop)


def cmd_info(args) -> int:
    bundle = load_bundle(args.bundle)
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


def cmd_engines(args) -> int:
    from edgefusion.backends.tensorrt import engines
    from edgefusion.config import load_config

    cfg = load_config(args.config) if args.config else None
    options = engines.cli_options(cfg, args.cache_dir, getattr(args, "workspace_mb", None))
    root = str(options.cache_path())
    if args.engines_command == "build":
        bundle = load_bundle(args.bundle or (Path(cfg.runtime.bundle) if cfg and cfg.runtime.bundle else None))
        precision = args.precision or (cfg.runtime.precision if cfg else "fp32")
        rows = engines.build_all(bundle, list(bundle.precisions) if precision == "all" else [precision], options)
        print(json.dumps(rows) if args.json else engines.render_built(rows, root))
    elif args.engines_command == "list":
        entries = engines.list_entries(options)
        print(json.dumps(entries) if args.json else engines.render_entries(entries, root))
    else:
        removed = engines.clear(options, args.bundle)
        print(f"removed {removed} TensorRT engines from {root}")
    return 0


def cmd_hil(args) -> int:
    from edgefusion.hil.command import run

    return run(args)


def _describe_modality(spec) -> dict:
    """One modality as ``info`` shows it: its name, the stream feeding it, its input, its timing."""
    d = {"name": spec.name, "sensor": spec.sensor, "shape": list(spec.shape), "rate_hz": spec.rate_hz}
    if spec.sensor == "audio":
        d.update(sample_rate=spec.sample_rate, window_s=spec.window_s)
    return d


def _render_summary(r: dict) -> str:
    lines = [
        f"ran {r['seconds']:.1f} s on {r['backend']} ({r['precision']}): {r['ticks']} ticks "
        f"({r['tick_rate_hz']:.1f} Hz, {r['overruns']} overruns), "
        f"latency p50 {r['latency_ms_p50']:.2f} ms, p99 {r['latency_ms_p99']:.2f} ms",
        "encoder runs: "
        + ", ".join(f"{m} {n}" for m, n in r["encoder_runs"].items())
        + f" (head: {r['head_runs']}): per-modality caching skipped {r['encoder_runs_saved']:.0%} of encoder runs",
    ]
    if r["degraded"]:
        lines.append(f"DEGRADED: {r['degraded']}")
    if not r["accuracy_by_pattern"]:
        lines.append(
            "accuracy against the scenario: not scored (no settled tick with a known intent; "
            "a bundle whose labels are not the built-in task's is never scored)"
        )
        return "\n".join(lines)
    lines.append("accuracy against the scenario, by what was present (settled ticks):")
    for pattern, e in r["accuracy_by_pattern"].items():
        lines.append(f"  {pattern:<16} {e['accuracy']:.2f}  over {e['ticks']} ticks")
    return "\n".join(lines)


def _add_backend(sp: argparse.ArgumentParser, default: str | None = "onnxruntime") -> None:
    """``--backend``: where TensorRT cannot run (no library, driver or engine), the command goes on
    with the next backend that does, says why in a line, and reports itself degraded."""
    from edgefusion.backends import BACKENDS

    sp.add_argument(
        "--backend",
        choices=BACKENDS,
        default=default,
        help=("override [runtime] backend" if default is None else f"default: {default}")
        + "; where TensorRT cannot run: a more precise engine, then onnxruntime, said and marked degraded",
    )


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
    _add_backend(sp)
    sp.add_argument("--json", action="store_true", help="result lines (JSON) on stdout, summary JSON on stderr")
    sp.set_defaults(fn=cmd_demo)

    sp = add("run", "the production entry point: run with a TOML config until stopped")
    sp.add_argument("--config", type=Path, required=True, help="TOML config file (see the README)")
    sp.add_argument("--seconds", type=SECONDS, default=None, help="stop after this long (default: run until signalled)")
    sp.add_argument("--source", default=None, help="override [source]: simulated, virtual, realsense or replay:DIR")
    sp.add_argument("--max-speed", action="store_true", help="replay as fast as the ticks run, on the recorded ticks")
    _add_backend(sp, default=None)
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
        "export-mcap",
        help="a recorded session as an MCAP file (results, events, camera, audio) for Foxglove",
        description="a recorded session as an MCAP file (results, events, camera, audio) for Foxglove",
    )
    sp.add_argument("--session", type=Path, required=True, help="a session recorded with `edgefusion record`")
    sp.add_argument("--out", type=new_file, required=True, help="the .mcap file to write (replaced if there)")
    sp.add_argument(
        "--frames-hz",
        type=number(0, 1000),
        default=5.0,
        help="camera frames per second and stream, at most (default: 5; 0: none)",
    )
    sp.add_argument("--json", action="store_true", help="the messages written, by topic, as JSON")
    sp.set_defaults(fn=cmd_export_mcap)

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

    sp = sub.add_parser(
        "service-network",
        help="the unit's network drop-in for [output.zenoh]: written, or removed when the sink is off",
        description="write UNIT_DIR/edgefusion.service.d/zenoh.conf: the IP addresses the Zenoh sink needs "
        "(IPAddressAllow=) and no more; remove it when [output.zenoh] is off (the unit denies every address)",
    )
    sp.add_argument("--config", type=existing_file, required=True, help="the robot's TOML config")
    sp.add_argument(
        "--out", type=Path, default=Path("/etc/systemd/system"), help="the unit's folder (default: /etc/systemd/system)"
    )
    sp.add_argument("--print", action="store_true", help="print the drop-in, write nothing")
    sp.set_defaults(fn=cmd_service_network)

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
    _add_backend(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_bench)

    sp = add("eval", "accuracy per precision and presence pattern, Fusion_Gain, robustness, noise curves")
    sp.add_argument(
        "--samples", type=number(7, 100_000, integer=True), default=700, help="held-out samples (default: 700)"
    )
    sp.add_argument("--precisions", default=None, help="comma list (default: every variant in the bundle)")
    sp.add_argument(
        "--data",
        type=existing_file,
        default=None,
        help="held-out data for a bundle of your own: an .npz with one array per modality name and labels",
    )
    sp.add_argument("--no-noise", action="store_true", help="skip the noise curves")
    sp.add_argument("--plot", type=new_file, default=None, help="write the noise curves as a PNG (needs matplotlib)")
    _add_backend(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_eval)

    sp = sub.add_parser(
        "engines",
        help="TensorRT engines: build them for a bundle, list or clear the cache",
        description="TensorRT engines, cached in the service's state directory ([tensorrt] cache_dir)",
    )
    engines_sub = sp.add_subparsers(dest="engines_command", required=True)
    for name, text in (
        ("build", "build the bundle's engines where missing or stale (minutes per graph, once)"),
        ("list", "the cached engines: bundle, graph, precision, TensorRT, GPU, size, built, last used"),
        ("clear", "remove cached engines (every one, or one bundle's)"),
    ):
        esp = engines_sub.add_parser(name, help=text, description=text)
        esp.add_argument("--config", type=existing_file, default=None, help="take [tensorrt] and [runtime] from it")
        esp.add_argument("--cache-dir", default=None, help="the engine cache (default: [tensorrt] cache_dir)")
        if name == "build":
            esp.add_argument(
                "--bundle", type=Path, default=None, help="bundle folder (default: the config's, or the demo)"
            )
            esp.add_argument(
                "--precision",
                choices=(*PRECISIONS, "all"),
                default=None,
                help="the variant to build, or all (default: the config's [runtime] precision, else fp32)",
            )
            esp.add_argument("--workspace-mb", type=number(1, 1 << 20, integer=True), default=None)
        if name == "clear":
            esp.add_argument("--bundle", default=None, metavar="NAME", help="only this bundle's (its manifest name)")
        if name != "clear":
            esp.add_argument("--json", action="store_true")
        esp.set_defaults(fn=cmd_engines)

    sp = sub.add_parser(
        "listen",
        help="the fleet on the Zenoh bus: one line per robot (states, intent, latency, age), or the raw results",
        description="the fleet on the Zenoh bus: one line per robot, refreshed live, or with --json the result lines",
    )
    sp.add_argument("--robot", default="*", metavar="NAME", help="one robot, or '*' for every one (default)")
    sp.add_argument("--json", action="store_true", help="print each result line (JSON) as it comes")
    sp.add_argument("--config", type=Path, default=None, help="take mode and endpoints from its [output.zenoh]")
    sp.add_argument(
        "--connect",
        action="append",
        default=[],
        metavar="ENDPOINT",
        help="reach this router or robot, e.g. tcp/10.0.0.2:7447 (repeatable; no LAN scouting then)",
    )
    sp.add_argument("--seconds", type=SECONDS, default=None, help="stop after this long (default: until Ctrl-C)")
    sp.set_defaults(fn=cmd_listen)

    sp = add("info", "verify a bundle and describe it")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_info)

    sp = add("hil", "run the hardware-in-the-loop suite (hw_tests/) and write its report (JUnit XML, Markdown, HTML)")
    sp.add_argument(
        "--rig",
        choices=("virtual", "realsense"),
        default="virtual",
        help="virtual (the software RealSense and a private PulseAudio, as CI) or realsense (this robot's own "
        "camera and microphone; EDGEFUSION_SERIAL and EDGEFUSION_MIC pick them)",
    )
    sp.add_argument(
        "--backend",
        default="",
        metavar="IDS",
        help="comma list of onnxruntime-cpu, onnxruntime-cuda, tensorrt, tensorrt-fake (default: every one present)",
    )
    sp.add_argument("--data", type=existing_file, default=None, help="labelled held-out .npz for your own bundle")
    sp.add_argument("--precision", choices=PRECISIONS, default="fp32", help="the loop tests' variant (default: fp32)")
    sp.add_argument("--suite", type=Path, default=None, help="the tests' folder (default: this checkout's hw_tests/)")
    sp.add_argument("-k", default="", metavar="EXPR", help="only the tests pytest's -k EXPR selects")
    sp.add_argument("--report", type=new_folder, required=True, help="the report's folder (created if missing)")
    sp.set_defaults(fn=cmd_hil)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # run's handlers go in first, before even the parser is built (it imports the sensors, numpy).
    signals = Signals(reloadable=True) if argv[:1] == ["run"] else None
    args = _parser().parse_args(argv)
    args.signals = signals
    return args.fn(args)


def entry() -> int:
    return run_cli(main, None, PROG)


if __name__ == "__main__":
    sys.exit(entry())
