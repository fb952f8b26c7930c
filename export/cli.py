"""``edgefusion-export``: the workstation side, from training to the bundle the robot runs.

``edgefusion-export all --out DIR`` is the whole path in one command (it is how the shipped demo
bundle is made); the steps can also be run one at a time on a runs folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgefusion.export import FUSION_KINDS

from edgefusion.atomic import atomic_write
from edgefusion.errors import EdgefusionError, run_cli

PROG = "edgefusion-export"


def _kinds(value: str) -> list[str]:
    kinds = list(FUSION_KINDS) if value == "all" else value.split(",")
    bad = [k for k in kinds if k not in FUSION_KINDS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown fusion {bad[0]!r}; choose from {', '.join(FUSION_KINDS)} or all")
    return kinds


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help: str, fusion: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--runs", type=Path, default=Path("runs"), help="working folder (default: ./runs)")
        if fusion:
            sp.add_argument(
                "--fusion",
                type=_kinds,
                default=_kinds("all"),
                metavar="KINDS",
                help="lmf, early, late, tensor, a comma list, or all (default: all)",
            )
        return sp

    for sp in (
        add("train", "train fusion models with modality dropout"),
        add("all", "train, export, quantize, compare, bundle"),
    ):
        sp.add_argument("--epochs", type=int, default=14)
        sp.add_argument("--train-size", type=int, default=10_000, help="training samples (default: 10000)")
    add("export", "export trained models to ONNX (opset 17), fp32 and fp16")
    add("quantize", "make INT8 QDQ graphs, calibrated on every presence pattern")
    for name in ("train", "quantize", "all"):
        sub.choices[name].add_argument(
            "--sessions",
            type=Path,
            nargs="+",
            default=(),
            metavar="DIR",
            help="recorded sessions (edgefusion record): added to training; INT8 calibrates on them instead",
        )
    for sp in (
        add("compare", "accuracy per precision and presence pattern, fusion size, head latency"),
        sub.choices["all"],
    ):
        sp.add_argument("--heldout-size", type=int, default=2_000, help="held-out samples (default: 2000)")
        sp.add_argument("--json", action="store_true", help="print the report as JSON")
    for sp in (add("bundle", "write the deployable bundle from the LMF run", fusion=False), sub.choices["all"]):
        sp.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    return p


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:  # torch is imported here, after argument errors are out
        from edgefusion.export import pipeline
    except ImportError as err:
        raise EdgefusionError(f"{err.name or err} is not installed: pip install 'edgefusion[export]'") from None

    cmd = args.command
    if cmd == "all" and "lmf" not in args.fusion:
        raise EdgefusionError("all makes a bundle, which is LMF: include lmf in --fusion")
    if cmd in ("compare", "all") and args.heldout_size < 7:
        raise EdgefusionError("--heldout-size must be at least 7")
    if cmd in ("bundle", "all") and not args.out.resolve().parent.is_dir():
        raise EdgefusionError(f"--out {args.out}: its parent folder does not exist")
    if cmd in ("train", "all"):
        if args.epochs < 1 or args.train_size < 64:
            raise EdgefusionError("--epochs must be >= 1 and --train-size >= 64")
        cfg = pipeline.TrainConfig(epochs=args.epochs)
        for kind in args.fusion:
            pipeline.train_kind(
                kind, args.runs, cfg, pipeline.DataSizes(train=args.train_size), _log, tuple(args.sessions)
            )
    if cmd in ("export", "all"):
        for kind in args.fusion:
            _log(f"exported {kind} → {pipeline.export_kind(args.runs, kind)}")
    if cmd in ("quantize", "all"):
        calib = pipeline.calibration_set(tuple(args.sessions))
        for kind in args.fusion:
            _log(f"quantized {kind} → {pipeline.quantize_kind(args.runs, kind, calib)}")
    if cmd in ("compare", "all"):
        _compare(args)
    if cmd in ("bundle", "all"):
        from edgefusion.export.bundle import build_bundle

        report_path = args.runs / "compare.json"
        if not report_path.exists():
            raise EdgefusionError(f"{report_path} is missing; run `{PROG} compare` first")
        try:
            report = json.loads(report_path.read_text())
        except json.JSONDecodeError as err:
            raise EdgefusionError(f"{report_path} is not valid JSON ({err}); run `{PROG} compare` again") from None
        if not isinstance(report, dict):
            raise EdgefusionError(f"{report_path} is not a compare report; run `{PROG} compare` again")
        _log(f"bundle → {build_bundle(args.runs, args.out, report)}")
    return 0


def _compare(args) -> None:
    from edgefusion.export import dataset
    from edgefusion.export.bundle import heldout_description
    from edgefusion.export.compare import compare, render_table

    data = dataset.load(dataset.HELDOUT_SEED, args.heldout_size)
    report = compare(args.runs, args.fusion, data, heldout_description(args.heldout_size))
    with atomic_write(args.runs / "compare.json") as f:
        f.write(json.dumps(report, indent=1).encode())
    print(json.dumps(report, indent=1) if args.json else render_table(report))


def entry() -> int:
    return run_cli(main, None, PROG)


if __name__ == "__main__":
    sys.exit(entry())
