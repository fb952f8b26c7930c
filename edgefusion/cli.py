"""``edgefusion``: the device CLI (demo, run, bench, eval, info). ``--json`` wherever it reports.

Every command that loads a model takes ``--bundle DIR`` and defaults to the demo bundle shipped
in the package. User errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from edgefusion.errors import EdgefusionError, run_cli

PROG = "edgefusion"


def _load_bundle(path: Path | None):
    from edgefusion.bundle import default_bundle_path, load_bundle

    return load_bundle(path or default_bundle_path())


def _stop_on_signals() -> tuple[threading.Event, dict]:
    """The first SIGINT/SIGTERM asks the loop to stop; the previous handlers come back for
    shutdown (restored by the caller), so a second Ctrl-C still interrupts a stuck stop."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    return stop, previous


def _session(cfg, bundle_path: Path | None, seconds: float | None, json_lines: bool, demo: bool) -> dict | None:
    """Run the loop on the configured source until ``seconds`` pass or a signal arrives.

    A demo also shows the live view and returns a summary scored against the scenario; a
    production run keeps nothing per tick (it may run for months)."""
    from edgefusion.backends import make_backend
    from edgefusion.loop import Runtime
    from edgefusion.sensors.faults import parse_faults
    from edgefusion.sensors.simulated import simulated_rig
    from edgefusion.sinks import RotatingFileSink, StreamSink
    from edgefusion.summary import SessionSummary
    from edgefusion.view import LiveView

    if seconds is not None and not seconds > 0:  # also refuses NaN
        raise EdgefusionError("--seconds must be > 0")
    bundle = _load_bundle(bundle_path or (Path(cfg.runtime.bundle) if cfg.runtime.bundle else None))
    backend = make_backend(cfg.runtime.backend, bundle, cfg.runtime.precision, threads=cfg.runtime.threads)
    rig = simulated_rig(cfg.source.seed, parse_faults(cfg.source.faults))
    for m, sensor in rig.sensors.items():
        sensor.offset_s = cfg.sensors[m].offset_ms / 1000
    sinks = []
    if json_lines:
        sinks.append(StreamSink(sys.stdout))
    if cfg.output.file:
        sinks.append(RotatingFileSink(cfg.output.file, cfg.output.max_bytes, cfg.output.backups))
    scenario = rig.scenario
    truth = lambda t: bundle.labels[scenario.intent_at(t)]  # noqa: E731
    view = LiveView(truth) if demo and not json_lines else None
    summary = SessionSummary(truth, scenario.segment_s) if demo else None

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
        on_result if demo else None,
        cfg.output.flush_ms / 1000,
    )
    stop, previous = _stop_on_signals()
    try:
        backend.activate()  # before the rig's clock starts: fault times count from the loop's start
        t0 = rig.clock.start()
        for clocked in (summary, view):
            if clocked is not None:
                clocked.t0 = t0
        runtime.start()
        runtime.run(stop, seconds)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        runtime.stop()
        if view:
            view.close()
    return summary.report(runtime) if summary else None


def cmd_demo(args) -> int:
    from edgefusion.config import Config
    from edgefusion.sensors.faults import DEFAULT_DEMO_FAULTS, parse_faults

    cfg = Config()
    cfg.source.faults = DEFAULT_DEMO_FAULTS if args.faults is None else args.faults
    parse_faults(cfg.source.faults)  # a bad SPEC is reported before anything starts
    cfg.source.seed = args.seed
    cfg.runtime.precision = args.precision
    cfg.runtime.check("--precision")
    out = sys.stderr if args.json else sys.stdout
    if not args.json:
        print(f"edgefusion demo: simulated rig, faults: {cfg.source.faults or 'none'}  (Ctrl-C stops)", file=out)
    report = _session(cfg, args.bundle, args.seconds, json_lines=args.json, demo=True)
    print(json.dumps(report) if args.json else _render_summary(report), file=out)
    return 0


def cmd_run(args) -> int:
    from edgefusion.config import load_config

    cfg = load_config(args.config)
    _session(cfg, args.bundle, args.seconds, json_lines=cfg.output.stdout, demo=False)
    return 0


def cmd_bench(args) -> int:
    from edgefusion.backends import make_backend
    from edgefusion.bench import render, run_bench

    if args.ticks < 100 or args.alloc_ticks < 1:
        raise EdgefusionError("--ticks must be >= 100 and --alloc-ticks >= 1")
    bundle = _load_bundle(args.bundle)
    backend = make_backend("onnxruntime", bundle, args.precision, threads=args.threads)
    report = run_bench(bundle, backend, args.ticks, args.alloc_ticks, args.checkpoint)
    print(json.dumps(report) if args.json else render(report))
    return 0


def cmd_eval(args) -> int:
    from edgefusion.backends import make_backend
    from edgefusion.evaluate import evaluate, heldout, plot, render

    if args.samples < 7:
        raise EdgefusionError("--samples must be at least 7")
    if args.plot and args.no_noise:
        raise EdgefusionError("--plot draws the noise curves: drop --no-noise")
    if args.plot and not args.plot.resolve().parent.is_dir():
        raise EdgefusionError(f"--plot {args.plot}: no such folder")
    bundle = _load_bundle(args.bundle)
    precisions = args.precisions.split(",") if args.precisions else list(bundle.precisions)
    backends = {p: make_backend("onnxruntime", bundle, p) for p in precisions}
    for b in backends.values():
        b.activate()
    try:
        report = evaluate(bundle, backends, heldout(bundle, args.samples), noise=not args.no_noise)
    finally:
        for b in backends.values():
            b.deactivate()
    if args.plot and "noise" in report:
        plot(report, args.plot)
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
        "fusion": m.get("fusion"),
        "files": len(m["files"]),
        "bytes": sum(f["bytes"] for f in m["files"].values()),
        "accuracy": bundle.accuracy.get("by_precision", {}),
    }
    if args.json:
        print(json.dumps(info))
        return 0
    print(
        f"{info['bundle']}: {info['name']} (format {info['format_version']}), verified: {info['files']} files, "
        f"{info['bytes'] / 1e6:.1f} MB"
    )
    print(f"labels: {', '.join(info['labels'])}")
    print(f"fusion: {info['fusion']}")
    for prec, table in info["accuracy"].items():
        print(f"{prec:<5} " + "  ".join(f"{k} {v:.3f}" for k, v in table.items()))
    return 0


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
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--bundle", type=Path, default=None, help="model bundle folder (default: the shipped demo)")
        return sp

    sp = add("demo", "run the bundle on the simulated rig with scripted sensor faults")
    sp.add_argument("--seconds", type=float, default=20.0, help="how long to run (default: 20)")
    sp.add_argument(
        "--faults",
        default=None,
        metavar="SPEC",
        help="MODALITY:KIND@START-END,... (kinds: stop, stall, frozen, nan, noise); '' for none",
    )
    sp.add_argument("--seed", type=int, default=0, help="scenario seed (default: 0)")
    sp.add_argument("--precision", default="fp32", help="bundle variant: fp32, fp16 or int8 (default: fp32)")
    sp.add_argument("--json", action="store_true", help="result lines (JSON) on stdout, summary JSON on stderr")
    sp.set_defaults(fn=cmd_demo)

    sp = add("run", "the production entry point: run with a TOML config until stopped")
    sp.add_argument("--config", type=Path, required=True, help="TOML config file (see the README)")
    sp.add_argument("--seconds", type=float, default=None, help="stop after this long (default: run until signalled)")
    sp.set_defaults(fn=cmd_run)

    sp = add("bench", "runtime overhead over bare inference, caching savings, allocations, memory")
    sp.add_argument("--precision", default="fp32", help="bundle variant (default: fp32)")
    sp.add_argument("--ticks", type=int, default=3000, help="timed ticks per measurement (default: 3000)")
    sp.add_argument("--alloc-ticks", type=int, default=10_000, help="ticks for allocation growth (default: 10000)")
    sp.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default: 1)")
    sp.add_argument("--checkpoint", type=Path, default=None, help="LMF checkpoint, to add PyTorch eager as (d)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_bench)

    sp = add("eval", "accuracy per precision and presence pattern, Fusion_Gain, robustness, noise curves")
    sp.add_argument("--samples", type=int, default=700, help="held-out samples (default: 700)")
    sp.add_argument("--precisions", default=None, help="comma list (default: every variant in the bundle)")
    sp.add_argument("--no-noise", action="store_true", help="skip the noise curves")
    sp.add_argument("--plot", type=Path, default=None, help="write the noise curves as a PNG (needs matplotlib)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_eval)

    sp = add("info", "verify a bundle and describe it")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.fn(args)


def entry() -> int:
    return run_cli(main, None, PROG)


if __name__ == "__main__":
    sys.exit(entry())
