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

from edgefusion.args import Parser, new_folder, number, unwritable
from edgefusion.atomic import atomic_write
from edgefusion.errors import EdgefusionError, run_cli

PROG = "edgefusion-export"
HELDOUT_SIZE = 2_000  # held-out samples of `all`, and of `compare` where no earlier report says otherwise


def _kinds(value: str) -> list[str]:
    kinds = list(FUSION_KINDS) if value == "all" else value.split(",")
    bad = [k for k in kinds if k not in FUSION_KINDS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown fusion {bad[0]!r}; choose from {', '.join(FUSION_KINDS)} or all")
    return kinds


def _bundle_name(value: str) -> str:
    """A bundle's name (the manifest's "name", shown by `edgefusion info` and in STATUS): one
    short line of printable text."""
    if not value.strip() or len(value) > 100 or not value.isprintable():
        raise argparse.ArgumentTypeError(f"{value!r}: give a name of 1 to 100 printable characters")
    return value


def _factory(value: str) -> str:
    module, sep, attr = value.partition(":")
    if not sep or not module or not attr.isidentifier() or not all(p.isidentifier() for p in module.split(".")):
        raise argparse.ArgumentTypeError(f"{value!r}: give MODULE:FACTORY, e.g. my_robot.model:bundle_args")
    return value


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help: str, fusion: bool = True, default_kinds: str = "all") -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--runs", type=Path, default=Path("runs"), help="working folder (default: ./runs)")
        if fusion:
            sp.add_argument(
                "--fusion",
                type=_kinds,
                default=_kinds("all") if default_kinds == "all" else None,
                metavar="KINDS",
                help=f"lmf, early, late, tensor, a comma list, or all (default: {default_kinds})",
            )
        return sp

    for sp in (
        add("train", "train fusion models with modality dropout"),
        add("all", "train, export, quantize, compare, bundle"),
    ):
        sp.add_argument("--epochs", type=number(1, 1000, integer=True), default=14, help="(default: 14)")
        sp.add_argument(
            "--train-size",
            type=number(64, 1_000_000, integer=True),
            default=10_000,
            help="training samples (default: 10000)",
        )
    add("export", "export trained models to ONNX (opset 17), fp32 and fp16")
    add("quantize", "make INT8 QDQ graphs, calibrated on every presence pattern")

    def sessions(sp: argparse.ArgumentParser, help: str) -> None:
        sp.add_argument("--sessions", type=Path, nargs="+", default=(), metavar="DIR", help=help)

    for name in ("train", "quantize", "all"):
        sessions(
            sub.choices[name],
            "recorded sessions (edgefusion record): added to training; INT8 calibrates on them instead",
        )
    compare = add(
        "compare",
        "accuracy per precision and presence pattern, fusion size, head latency",
        default_kinds="every kind trained in --runs",
    )
    for sp, default in ((compare, "the last report's, else 2000"), (sub.choices["all"], str(HELDOUT_SIZE))):
        sp.add_argument(
            "--heldout-size",
            type=number(7, 100_000, integer=True),
            default=None,
            help=f"held-out samples (default: {default})",
        )
        sp.add_argument("--json", action="store_true", help="print the report as JSON")
    bundle = add("bundle", "write the deployable bundle from the LMF run, or from your own model", fusion=False)
    bundle.add_argument(
        "--model",
        type=_factory,
        default=None,
        metavar="MODULE:FACTORY",
        help="your own model instead of the LMF run: FACTORY() in MODULE (importable from here) returns "
        "export_bundle's keyword arguments as a dict (model, labels, modalities, calibration, ...)",
    )
    sessions(bundle, "the recorded sessions `quantize` calibrated INT8 on, if any")
    for sp in (bundle, sub.choices["all"]):
        sp.add_argument("--out", type=new_folder, required=True, help="bundle folder to write")
        sp.add_argument(
            "--name", type=_bundle_name, default=None, help="the bundle's name (default: the --out folder's name)"
        )
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
    if cmd == "bundle" and args.model:
        from edgefusion.export.factory import bundle_from_factory

        out = bundle_from_factory(args.model, args.out, args.name, warn=_log)
        _log(f"bundle → {out}")
        return 0
    if cmd == "all" and "lmf" not in args.fusion:
        raise EdgefusionError("all makes a bundle, which is LMF: include lmf in --fusion")
    if args.runs.exists() and not args.runs.is_dir():
        raise EdgefusionError(f"--runs {args.runs}: a file is there; give the runs folder")
    problem = unwritable(args.runs) if cmd != "bundle" else None  # every other step writes there
    if problem:
        raise EdgefusionError(f"--runs {args.runs}: {problem}; choose a folder you can write")
    if cmd == "all":
        args.heldout_size = args.heldout_size or HELDOUT_SIZE
    if cmd in ("train", "all"):
        cfg = pipeline.TrainConfig(epochs=args.epochs)
        # Training reports held-out accuracy on the very samples `all` then compares on.
        sizes = pipeline.DataSizes(train=args.train_size, heldout=getattr(args, "heldout_size", None) or HELDOUT_SIZE)
        for kind in args.fusion:
            pipeline.train_kind(kind, args.runs, cfg, sizes, _log, tuple(args.sessions))
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
        from edgefusion.export.builtin_bundle import build_bundle

        report_path = args.runs / "compare.json"
        if not report_path.exists():
            raise EdgefusionError(f"{report_path} is missing; run `{PROG} compare` first")
        try:
            report = json.loads(report_path.read_text())
        except json.JSONDecodeError as err:
            raise EdgefusionError(f"{report_path} is not valid JSON ({err}); run `{PROG} compare` again") from None
        if not isinstance(report, dict):
            raise EdgefusionError(f"{report_path} is not a compare report; run `{PROG} compare` again")
        name = args.name or args.out.resolve().name
        calib = pipeline.calibration_set(tuple(args.sessions))
        _log(f"bundle {name!r} → {build_bundle(args.runs, args.out, report, name, calib, warn=_log)}")
    return 0


def _previous_heldout_size(runs: Path) -> int | None:
    """The held-out size of the report already in ``runs`` (made by `all`, say), so that
    `compare` again gives the same table, not one on another sample."""
    try:
        size = json.loads((runs / "compare.json").read_text())["heldout"]["samples"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return size if type(size) is int and size >= 7 else None


def _trained_kinds(runs: Path) -> list[str]:
    """The fusion kinds with a checkpoint in ``runs``: what `compare` compares by default."""
    kinds = [k for k in FUSION_KINDS if (runs / k / "checkpoint.pt").is_file()]
    if not kinds:
        raise EdgefusionError(f"{runs}: no trained model there; run `{PROG} train` (or `all`) first")
    return kinds


def _compare(args) -> None:
    from edgefusion.export import task_data
    from edgefusion.export.builtin_bundle import heldout_description
    from edgefusion.export.compare import compare, render_table

    kinds = args.fusion or _trained_kinds(args.runs)
    size = args.heldout_size or _previous_heldout_size(args.runs) or HELDOUT_SIZE
    data = task_data.load(task_data.HELDOUT_SEED, size)
    report = compare(args.runs, kinds, data, heldout_description(size))
    with atomic_write(args.runs / "compare.json") as f:
        f.write(json.dumps(report, indent=1).encode())
    print(json.dumps(report, indent=1) if args.json else render_table(report))


def entry() -> int:
    return run_cli(main, None, PROG)


if __name__ == "__main__":
    sys.exit(entry())
