"""Train the realistic model briefly on the built-in task and export it as a bundle.

    python -m examples.realistic.train --out DIR [--train 2000] [--epochs 2] [--held-out 500] [--json]

Written only against the public API (``edgefusion.export``): the encoders of ``model.py`` under
``LowRankFusion``, then ``export_bundle`` in fp32, fp16 and INT8. The task renders 48x64 frames;
they are upsampled to the model's sizes as a camera at that resolution would see them (bilinear
for colour, nearest for depth, whose holes must stay holes), and the inputs are in the units the
runtime delivers (0..255, metres, int16 units). Modality dropout gives every presence pattern
to one model; an auxiliary cue loss per encoder (the task knows which object, gesture and word it
made) gives each encoder its own signal in so few steps. The held-out accuracy is then measured
on the exported bundle itself, per precision and presence pattern, in ONNX Runtime on the CPU.
Everything runs on the CPU with ``--threads`` (1 by default: the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from edgefusion.export import LowRankFusion, Modality, export_bundle
from torch import nn

from edgefusion.modalities import all_patterns, pattern_name
from edgefusion.task import INTENTS, TaskBatch, generate
from examples.realistic.model import AUDIO_RATE, AUDIO_SECONDS, DEPTH_HW, DIMS, RGB_HW, make_encoders, ort_session

NAMES = ("rgb", "depth", "audio")  # the bundle's modalities, fed by the streams of the same names
# Modality dropout: the share of batches' samples with all present / one missing / one present.
PATTERN_SHARES = {3: 0.3, 2: 0.6, 1: 0.1}
SEEDS = {"train": 1, "held_out": 2, "calibration": 3}  # the task's seeds, as the package's own export uses


def model_inputs(data: TaskBatch, rows: slice | np.ndarray) -> dict[str, torch.Tensor]:
    """The task's samples at the model's sizes, in the runtime's units."""
    rgb = F.interpolate(torch.from_numpy(data.rgb[rows]), size=RGB_HW, mode="bilinear", align_corners=False)
    depth = F.interpolate(torch.from_numpy(data.depth[rows]), size=DEPTH_HW, mode="nearest")
    return {"rgb": rgb, "depth": depth, "audio": torch.from_numpy(data.audio[rows])}


def batches(data: TaskBatch, size: int) -> Iterator[dict[str, torch.Tensor]]:
    for start in range(0, len(data), size):
        yield model_inputs(data, slice(start, start + size))


def pattern_sampler(rng: np.random.Generator):
    """Draws (N, 3) presence masks with PATTERN_SHARES spread evenly over each group's patterns."""
    patterns = np.array(all_patterns(len(NAMES)), dtype=bool)
    counts = patterns.sum(1)
    weights = np.array([PATTERN_SHARES[c] / (counts == c).sum() for c in counts])
    return lambda n: torch.from_numpy(patterns[rng.choice(len(patterns), size=n, p=weights / weights.sum())])


def train(
    model: LowRankFusion, encoders: dict[str, nn.Module], data: TaskBatch, epochs: int, batch_size: int, lr: float, log
) -> dict:
    """AdamW with a one-cycle schedule; fusion loss + 0.5 x the cue losses of the present encoders.

    The embeddings are read with forward hooks on ``encoders`` (the modules given to the model),
    so the model is used exactly as the public API defines it: (inputs, present) -> logits."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    draw = pattern_sampler(rng)
    embedded: dict[str, torch.Tensor] = {}
    hooks = [
        encoders[m].register_forward_hook(lambda _mod, _inp, out, m=m: embedded.__setitem__(m, out)) for m in NAMES
    ]
    aux = nn.ModuleDict({m: nn.Linear(DIMS[m], len(INTENTS)) for m in NAMES})
    params = list(model.parameters()) + list(aux.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(data) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    model.train()
    aux.train()
    t0, step = time.perf_counter(), 0
    try:
        for epoch in range(epochs):
            order = rng.permutation(len(data))
            for start in range(0, len(data), batch_size):
                rows = np.sort(order[start : start + batch_size])
                present = draw(len(rows))
                target = torch.from_numpy(data.intent[rows])
                cues = torch.from_numpy(data.cues[rows])
                loss = F.cross_entropy(model(model_inputs(data, rows), present), target)
                for i, m in enumerate(NAMES):  # only where the encoder saw its modality
                    keep = present[:, i]
                    if keep.any():
                        loss = loss + 0.5 * F.cross_entropy(aux[m](embedded[m][keep]), cues[keep, i])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if step % 10 == 0 or step == steps:
                    log(
                        f"epoch {epoch + 1}/{epochs} step {step}/{steps} loss {loss.item():.3f} "
                        f"({time.perf_counter() - t0:.0f} s)"
                    )
    finally:
        for h in hooks:
            h.remove()
    model.eval()
    return {"seconds": round(time.perf_counter() - t0, 1), "steps": steps, "samples": len(data), "epochs": epochs}


def calibration_batches(data: TaskBatch, size: int) -> list[dict[str, np.ndarray]]:
    """Raw inputs as the runtime delivers them (numpy float32), from the calibration seed."""
    return [{m: x.numpy() for m, x in b.items()} for b in batches(data, size)]


def bundle_accuracy(out: Path, data: TaskBatch, batch_size: int = 50) -> dict[str, dict[str, float]]:
    """Held-out accuracy of the exported bundle per precision and presence pattern, in ONNX Runtime
    (CPU): every encoder graph once per sample, the head once per pattern with the bundle's own
    absent projections for the modalities left out, read from the manifest alone."""
    manifest = json.loads((out / "manifest.json").read_text())
    names = [m["name"] for m in manifest["modalities"]]
    inputs = {m["name"]: m["input"]["name"] for m in manifest["modalities"]}
    table: dict[str, dict[str, float]] = {}
    for precision, variant in manifest["variants"].items():
        graphs = {k: ort_session(out / v) for k, v in variant["graphs"].items() if k != "monolithic"}
        absent = np.load(out / variant["absent"])
        projections: dict[str, list[np.ndarray]] = {m: [] for m in names}
        for b in batches(data, batch_size):
            for m in names:
                projections[m].append(graphs[m].run(None, {inputs[m]: b[m].numpy()})[0])
        p = {m: np.concatenate(v) for m, v in projections.items()}
        head = graphs["head"]
        head_inputs = [i.name for i in head.get_inputs()]
        row = {}
        for present in all_patterns(len(names)):
            feed = {
                h: p[m] if keep else np.broadcast_to(absent[m].reshape(1, *p[m].shape[1:]), p[m].shape).copy()
                for h, m, keep in zip(head_inputs, names, present)
            }
            logits = head.run(["logits"], feed)[0]
            row[pattern_name(names, present)] = round(float((logits.argmax(1) == data.intent).mean()), 4)
        table[precision] = row
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="the bundle folder to write (must not exist)")
    parser.add_argument("--train", type=int, default=2000, help="training samples (seed 1)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--held-out", type=int, default=500, help="held-out samples (seed 2)")
    parser.add_argument("--calibration", type=int, default=224, help="INT8 calibration samples (seed 3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    train_data = generate(SEEDS["train"], args.train)
    held_out = generate(SEEDS["held_out"], args.held_out)
    calib = generate(SEEDS["calibration"], args.calibration)
    log(f"task data generated in {time.perf_counter() - t0:.0f} s")

    encoders = make_encoders()
    model = LowRankFusion(encoders, dims=DIMS, n_classes=len(INTENTS), rank=4, d_out=32)
    params = {m: sum(p.numel() for p in e.parameters()) for m, e in encoders.items()}
    params["fusion"] = sum(p.numel() for p in model.parameters()) - sum(params.values())
    log("parameters: " + ", ".join(f"{k} {v:,}" for k, v in params.items()))
    training = train(model, encoders, train_data, args.epochs, args.batch_size, args.lr, log)

    t1 = time.perf_counter()
    export_bundle(
        model,
        out=args.out,
        labels=list(INTENTS),
        modalities={
            "rgb": Modality.rgb(height=RGB_HW[0], width=RGB_HW[1], preprocessing={"inside_graph": "ImageNet mean/std"}),
            "depth": Modality.depth(
                height=DEPTH_HW[0], width=DEPTH_HW[1], preprocessing={"inside_graph": "(d - 2) / 1.5, validity mask"}
            ),
            "audio": Modality.audio(
                seconds=AUDIO_SECONDS, rate=AUDIO_RATE, preprocessing={"inside_graph": "RMS norm, log-mel 40"}
            ),
        },
        calibration=calibration_batches(calib, 32),
        precisions=("fp32", "fp16", "int8"),
    )
    export_s = round(time.perf_counter() - t1, 1)
    log(f"bundle written to {args.out} in {export_s} s")
    report = {
        "params": params,
        "training": training,
        "export_s": export_s,
        "held_out": args.held_out,
        "accuracy": bundle_accuracy(args.out, held_out),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    names = list(report["accuracy"]["fp32"])
    print(f"{'precision':10}" + "".join(f"{n:>17}" for n in names))
    for precision, row in report["accuracy"].items():
        print(f"{precision:10}" + "".join(f"{row[n]:>17.3f}" for n in names))


if __name__ == "__main__":
    main()
