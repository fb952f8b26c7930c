"""Assemble the deployable bundle from an LMF run: graphs, absent projections, provenance, accuracy.

The int8 variant shares the fp32 head and absent projections (the head is never quantized), and
only fp32 carries the monolithic graph: the robot runs the split graphs, and the monolithic one
is there for the split == monolithic check and as the no-caching baseline in benchmarks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import onnxruntime
import torch
from edgefusion.export import dataset
from edgefusion.export.compare import PATTERNS, graph_digests
from edgefusion.export.models.encoders import LogMelFrontEnd
from edgefusion.export.pipeline import kind_dir, load_checkpoint
from edgefusion.export.quantize import KEEP_FLOAT, QUANTIZED_OPS

import edgefusion
from edgefusion.bundle import write_bundle
from edgefusion.errors import EdgefusionError
from edgefusion.modalities import MODALITIES
from edgefusion.task import AUDIO_WINDOW_S, HEIGHT, INTENTS, SAMPLE_RATE, WIDTH

CAMERA_HZ = 30
AUDIO_WINDOWS_HZ = 10
NEAR_CHANCE_POINTS = 0.05  # held-out accuracy this close to 1/n_classes: a model that learned nothing


def _modalities(rank: int, d_out: int, frontend: LogMelFrontEnd) -> list:
    out = {m: {"output": {"name": f"p_{m}", "shape": ["batch", rank, d_out], "dtype": "float32"}} for m in MODALITIES}
    out["rgb"] |= {
        "input": {"name": "rgb", "shape": ["batch", 3, HEIGHT, WIDTH], "dtype": "float32"},
        "rate_hz": CAMERA_HZ,
        "preprocessing": {
            "source": "color stream, RGB order",
            "resize": {"width": WIDTH, "height": HEIGHT, "method": "area"},
            "layout": "NCHW",
            "values": "0..255 as float32",
            "in_graph": "per-frame, per-channel standardisation (exposure and white balance removed)",
        },
    }
    out["depth"] |= {
        "input": {"name": "depth", "shape": ["batch", 1, HEIGHT, WIDTH], "dtype": "float32"},
        "rate_hz": CAMERA_HZ,
        "preprocessing": {
            "source": "depth aligned to the color stream",
            "units": "metres (z16 value × depth scale)",
            "invalid": 0.0,
            "resize": {"width": WIDTH, "height": HEIGHT, "method": "nearest"},
            "layout": "NCHW",
        },
    }
    out["audio"] |= {
        "input": {"name": "audio", "shape": ["batch", int(SAMPLE_RATE * AUDIO_WINDOW_S)], "dtype": "float32"},
        "rate_hz": AUDIO_WINDOWS_HZ,
        "sample_rate": SAMPLE_RATE,
        "window_s": AUDIO_WINDOW_S,
        "preprocessing": {
            "source": "mono microphone PCM",
            "values": "int16 counts as float32 (full scale 32767)",
            "window": "the last window_s seconds, ending at the tick's time",
            "in_graph": (
                f"RMS normalisation, {frontend.n_fft}-point framed DFT (hop {frontend.hop}) as Conv, "
                f"{frontend.n_mels} mel bands, log; kept fp32 in every variant"
            ),
        },
    }
    return [{"name": m, "sensor": m, **out[m]} for m in MODALITIES]  # manifest format 2: a list, fed by namesakes


def near_chance_warning(report: dict, n_classes: int) -> str | None:
    """A sentence when the LMF model's fp32 accuracy with every sensor present is within a few
    points of chance: such a bundle loads and runs, and every result it gives is a guess."""
    complete = report["models"]["lmf"]["precisions"]["fp32"]["accuracy"][PATTERNS[0]]  # every sensor present
    chance = 1 / n_classes
    if complete >= chance + NEAR_CHANCE_POINTS:
        return None
    return (
        f"held-out accuracy {complete:.3f} with every sensor present is near chance (1/{n_classes} = {chance:.3f}): "
        "the model learned next to nothing; train longer or on more data (--epochs, --train-size)"
    )


def build_bundle(runs: Path, dest: Path, report: dict, name: str, warn=None) -> Path:
    """The bundle named ``name``; ``warn`` (a line on stderr) is also told when the model is
    no better than chance, which the manifest then says as well."""
    kdir = kind_dir(runs, "lmf")
    model, ckpt = load_checkpoint(kdir / "checkpoint.pt")
    onnx_dir = kdir / "onnx"
    missing = [p for p in ("fp32/head.onnx", "fp16/head.onnx", "int8/rgb.onnx") if not (onnx_dir / p).exists()]
    if missing:
        raise EdgefusionError(
            f"{onnx_dir}: {missing[0]} is missing; run `edgefusion-export export` and `quantize` first"
        )
    if "lmf" not in report.get("models", {}):
        raise EdgefusionError("the compare report has no lmf entry; run `edgefusion-export compare` first")
    lmf = report["models"]["lmf"]
    if lmf.get("graphs_sha256") != graph_digests(onnx_dir):
        raise EdgefusionError(
            "the compare report measured other graphs than those now in "
            f"{onnx_dir} (exported or quantized again since); run `edgefusion-export compare` again"
        )

    files: dict[str, Path] = {}
    variants: dict[str, dict] = {}
    for prec in ("fp32", "fp16", "int8"):
        float_prec = "fp32" if prec == "int8" else prec
        graphs = {m: f"{prec}/{m}.onnx" for m in MODALITIES}
        graphs["head"] = f"{float_prec}/head.onnx"
        if prec == "fp32":
            graphs["monolithic"] = "fp32/monolithic.onnx"
        variants[prec] = {"graphs": graphs, "absent": f"{float_prec}/absent.npz"}
        for rel in [*graphs.values(), variants[prec]["absent"]]:
            files[rel] = onnx_dir / rel
    calibration = json.loads((onnx_dir / "int8" / "calibration.json").read_text())
    near_chance = near_chance_warning(report, len(INTENTS))
    if near_chance and warn is not None:
        warn(f"WARNING: {dest}: {near_chance}")
    cfg = model.config
    body = {
        "name": name,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "edgefusion_version": edgefusion.__version__,
        "labels": list(INTENTS),
        "modalities": _modalities(cfg.rank, cfg.d_out, model.encoders["audio"].frontend),
        "head": {"inputs": [f"p_{m}" for m in MODALITIES], "outputs": ["logits", "probs"]},
        "monolithic": {"inputs": [*MODALITIES, "present"], "outputs": ["logits", "probs"]},
        "fusion": {"kind": "lmf", "rank": cfg.rank, "d_out": cfg.d_out, "hidden": cfg.hidden, "embedding_dim": cfg.dim},
        "variants": variants,
        "training": {
            **{k: v for k, v in ckpt["training"].items() if k != "history"},
            "task": "built-in HRI intent task (edgefusion.task)",
            "final_loss": ckpt["training"]["history"][-1]["loss"],
            "onnxruntime": onnxruntime.__version__,
            "torch": str(torch.__version__),
        },
        "calibration": {
            **calibration,
            "method": "MinMax, symmetric int8, per-channel weights, explicit QDQ",
            "quantized_ops": list(QUANTIZED_OPS),
            "kept_float": [k.strip("/") for k in KEEP_FLOAT],
        },
        "accuracy": {
            "heldout": report["heldout"],
            "by_precision": {p: e["accuracy"] for p, e in lmf["precisions"].items()},
            "agreement_with_fp32": {p: e["agreement"] for p, e in lmf["precisions"].items() if "agreement" in e},
            "fusion_gain": lmf["fusion_gain"],
            "checks": lmf["checks"],
            "warnings": [near_chance] if near_chance else [],
        },
    }
    return write_bundle(dest, files, body)


def heldout_description(n: int) -> dict:
    return {"task_seed": dataset.HELDOUT_SEED, "samples": n}
