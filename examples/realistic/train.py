"""Train the realistic model briefly on the built-in task and export it as a bundle.

    python -m examples.realistic.train --out DIR [--train 1500] [--epochs 2] [--held-out 500] [--json]

Written only against the public API (``edgefusion.export``): the encoders of ``model.py`` under
``LowRankFusion``, then ``export_bundle`` in fp32, fp16 and INT8. The task renders 48x64 frames;
they are upsampled to the model's sizes as a camera at that resolution would see them (bilinear
for colour, nearest for depth, whose holes must stay holes), and the inputs are in the units the
runtime delivers (0..255, metres, int16 units). Modality dropout gives every presence pattern
to one model; an auxiliary cue loss per encoder (the task knows which object, gesture and word it
made) gives each encoder its own signal in so few steps. ``export_bundle`` measures the held-out
accuracy on the bundle's own graphs, per precision and presence pattern (ONNX Runtime, CPU), and
writes it into the manifest; the training's figures go there too (``training``).
Everything runs on the CPU with ``--threads`` (1 by default: the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from edgefusion.export import LowRankFusion, Modality, export_bundle, random_presence
from torch import nn

from edgefusion.task import INTENTS, TaskBatch, generate
from examples.realistic.model import AUDIO_RATE, AUDIO_SECONDS, DEPTH_HW, DIMS, RGB_HW, make_encoders

NAMES = ("rgb", "depth", "audio")  # the bundle's modalities, fed by the streams of the same names
SEEDS = {"train": 1, "held_out": 2, "calibration": 3}  # the task's seeds, as the package's own export uses


def model_inputs(data: TaskBatch, rows: slice | np.ndarray) -> dict[str, torch.Tensor]:
    """The task's samples at the model's sizes, in the runtime's units."""
    rgb = F.interpolate(torch.from_numpy(data.rgb[rows]), size=RGB_HW, mode="bilinear", align_corners=False)
    depth = F.interpolate(torch.from_numpy(data.depth[rows]), size=DEPTH_HW, mode="nearest")
    return {"rgb": rgb, "depth": depth, "audio": torch.from_numpy(data.audio[rows])}


def train(
    model: LowRankFusion, encoders: dict[str, nn.Module], data: TaskBatch, epochs: int, batch_size: int, lr: float, log
) -> dict:
    """AdamW with a one-cycle schedule; fusion loss + 0.5 x the cue losses of the present encoders.

    The embeddings are read with forward hooks on ``encoders`` (the modules given to the model),
    so the model is used exactly as the public API defines it: (inputs, present) -> logits."""
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
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
                present = random_presence(len(rows), len(NAMES), generator=gen)  # all 30 %, one missing 60 %
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


def numpy_batches(data: TaskBatch, size: int) -> list[dict[str, np.ndarray]]:
    """Raw inputs as the runtime delivers them (float32 arrays at the model's sizes), ``size`` at a time."""
    return [
        {m: x.numpy() for m, x in model_inputs(data, slice(i, i + size)).items()} for i in range(0, len(data), size)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="the bundle folder to write (replaced whole)")
    parser.add_argument("--train", type=int, default=1500, help="training samples (seed 1)")
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
    out = export_bundle(
        model,
        out=args.out,
        labels=list(INTENTS),
        modalities={
            "rgb": Modality.rgb(*RGB_HW, preprocessing={"in_graph": "x / 255, ImageNet mean and std"}),
            "depth": Modality.depth(*DEPTH_HW, preprocessing={"in_graph": "(d - 2) / 1.5 where d > 0, validity mask"}),
            "audio": Modality.audio(AUDIO_SECONDS, AUDIO_RATE, preprocessing={"in_graph": "RMS norm, log-mel (40)"}),
        },
        calibration=numpy_batches(calib, 32),
        heldout=[(b, held_out.intent[i * 50 : (i + 1) * 50]) for i, b in enumerate(numpy_batches(held_out, 50))],
        precisions=("fp32", "fp16", "int8"),
        keep_fp32=("frontend",),
        provenance={"training": {"example": "examples/realistic", "params": params, **training}},
        warn=log,
    )
    export_s = round(time.perf_counter() - t1, 1)
    log(f"bundle written to {out} in {export_s} s")
    accuracy = json.loads((Path(out) / "manifest.json").read_text())["accuracy"]
    report = {"params": params, "training": training, "export_s": export_s, "accuracy": accuracy}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    table = accuracy["by_precision"]
    patterns = list(table["fp32"])
    print(
        f"held-out accuracy ({args.held_out} samples, seed {SEEDS['held_out']}), the bundle's graphs in ONNX Runtime:"
    )
    print(f"{'':6}" + "".join(f"{p:>16}" for p in patterns))
    for precision, row in table.items():
        print(f"{precision:6}" + "".join(f"{row[p]:>16.3f}" for p in patterns))


if __name__ == "__main__":
    main()
