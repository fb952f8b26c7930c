"""The compare report: every fusion kind × precision × presence pattern on the held-out set.

Precisions are measured where they are honest: fp32 and int8 by running the exported graphs in
ONNX Runtime (the int8 QDQ file is the very file TensorRT builds from); fp16 by running the
model in PyTorch in true fp16 arithmetic, because ONNX Runtime's CPU kernels compute fp16
Conv/Gemm in fp32 and would hide an overflow. The fp16 ONNX file is then checked against that
true-fp16 reference.
"""

from __future__ import annotations

import numpy as np
import torch
from edgefusion.export.api import Modality
from edgefusion.export.graph_eval import SplitRunner, median_latency_ms, monolithic_logits, rel_err, session
from edgefusion.export.models.model import to_fp16
from edgefusion.export.pipeline import kind_dir, load_checkpoint
from edgefusion.export.train import logits_by_pattern

from edgefusion.bundle.loader import sha256_file
from edgefusion.errors import EdgefusionError
from edgefusion.modalities import MODALITIES, all_patterns, pattern_name
from edgefusion.task import AUDIO_WINDOW_S, HEIGHT, SAMPLE_RATE, WIDTH, TaskBatch

PATTERNS = [pattern_name(MODALITIES, p) for p in all_patterns(len(MODALITIES))]


def _ort_logits(onnx_dir, kind: str, precision: str, data: TaskBatch) -> dict[str, np.ndarray]:
    if kind != "lmf":
        mono = onnx_dir / precision / "monolithic.onnx"
        return monolithic_logits(mono, data)
    # int8 runs the int8 encoders with the fp32 head and absent projections, as the bundle does.
    float_dir = onnx_dir / ("fp32" if precision == "int8" else precision)
    graphs = {m: onnx_dir / precision / f"{m}.onnx" for m in MODALITIES}
    graphs["head"] = float_dir / "head.onnx"
    with np.load(float_dir / "absent.npz") as z:
        absent = {m: z[m] for m in MODALITIES}
    return SplitRunner(graphs, absent).logits_by_pattern(data)


def full_scale_audio(n: int = SAMPLE_RATE * int(AUDIO_WINDOW_S)) -> np.ndarray:
    """The built-in audio window's extremes (``Modality.extremes``): DC, square wave, loud noise."""
    return Modality.audio(n / SAMPLE_RATE, SAMPLE_RATE).extremes()


def _fp16_full_scale_finite(model, onnx_dir) -> bool:
    """No inf/NaN from full-scale audio, in true fp16 and in the fp16 ONNX graph."""
    audio = full_scale_audio()
    n = len(audio)
    with torch.no_grad():
        h = to_fp16(model).encoders["audio"](torch.from_numpy(audio)).float().numpy()
    feed = {
        "rgb": np.zeros((n, 3, HEIGHT, WIDTH), np.float32),
        "depth": np.zeros((n, 1, HEIGHT, WIDTH), np.float32),
        "audio": audio,
        "present": np.ones((n, len(MODALITIES)), np.float32),
    }
    out = session(onnx_dir / "fp16" / "monolithic.onnx").run(None, feed)
    return bool(np.isfinite(h).all() and all(np.isfinite(o).all() for o in out))


def graph_digests(onnx_dir) -> dict[str, str]:
    """sha256 of every graph measured, so a bundle can prove its accuracy table is about its files."""
    return {p.relative_to(onnx_dir).as_posix(): sha256_file(p) for p in sorted(onnx_dir.glob("*/*.onnx"))}


def compare_kind(runs, kind: str, data: TaskBatch) -> dict:
    model, ckpt = load_checkpoint(kind_dir(runs, kind) / "checkpoint.pt")
    onnx_dir = kind_dir(runs, kind) / "onnx"
    for needed in ("fp32", "fp16", "int8"):
        if not (onnx_dir / needed).is_dir():
            raise EdgefusionError(f"{onnx_dir / needed}: missing; run `edgefusion-export export` and `quantize` first")
    y = data.intent
    logits = {prec: _ort_logits(onnx_dir, kind, prec, data) for prec in ("fp32", "int8")}
    logits["fp16"] = logits_by_pattern(to_fp16(model), data)
    fp16_ort = _ort_logits(onnx_dir, kind, "fp16", data)
    torch32 = logits_by_pattern(model, data)

    precisions = {}
    for prec in ("fp32", "fp16", "int8"):
        lg = logits[prec]
        entry = {"accuracy": {p: float((lg[p].argmax(1) == y).mean()) for p in PATTERNS}}
        if prec != "fp32":
            ref = logits["fp32"]
            entry["agreement"] = {p: float((lg[p].argmax(1) == ref[p].argmax(1)).mean()) for p in PATTERNS}
            entry["max_abs_error"] = max(float(np.abs(lg[p] - ref[p]).max()) for p in PATTERNS)
        precisions[prec] = entry
    acc = precisions["fp32"]["accuracy"]
    best_single = max(acc[m] for m in MODALITIES)
    head_sess = session(kind_dir(runs, kind) / "fusion_head.onnx", threads=1)
    h = np.random.default_rng(0).standard_normal((1, model.config.dim)).astype(np.float32)
    feed = {"h_rgb": h, "h_depth": h, "h_audio": h, "present": np.ones((1, 3), np.float32)}
    checks = {
        "ort_vs_torch_rel_err": max(rel_err(logits["fp32"][p], torch32[p]) for p in PATTERNS),
        "fp16_onnx_vs_true_fp16_max_abs": max(float(np.abs(fp16_ort[p] - logits["fp16"][p]).max()) for p in PATTERNS),
        "fp16_full_scale_audio_finite": _fp16_full_scale_finite(model, onnx_dir),
    }
    result = {
        "graphs_sha256": graph_digests(onnx_dir),
        "fusion_parameters": model.fusion.fusion_parameters(),
        "fusion_head_latency_ms": median_latency_ms(head_sess, feed),
        "precisions": precisions,
        "single_modality_accuracy": {m: acc[m] for m in MODALITIES},
        "fusion_gain": (acc[PATTERNS[0]] - best_single) / best_single,
        "training": {k: v for k, v in ckpt["training"].items() if k != "history"},
        "checks": checks,
    }
    if kind == "lmf":
        mono = monolithic_logits(onnx_dir / "fp32" / "monolithic.onnx", data)
        checks["split_vs_monolithic_rel_err"] = max(rel_err(logits["fp32"][p], mono[p]) for p in PATTERNS)
        split_head = session(onnx_dir / "fp32" / "head.onnx", threads=1)
        with np.load(onnx_dir / "fp32" / "absent.npz") as z:
            pfeed = {f"p_{m}": z[m][None] for m in MODALITIES}
        result["split_head_latency_ms"] = median_latency_ms(split_head, pfeed)
    return result


def compare(runs, kinds: list[str], data: TaskBatch, heldout_desc: dict) -> dict:
    return {"heldout": heldout_desc, "patterns": PATTERNS, "models": {k: compare_kind(runs, k, data) for k in kinds}}


def render_table(report: dict) -> str:
    """A plain-text table: one row per fusion kind and precision."""
    short = {p: p.replace("rgb", "R").replace("depth", "D").replace("audio", "A") for p in PATTERNS}
    head = f"{'model':<8}{'prec':<6}" + "".join(f"{short[p]:>8}" for p in PATTERNS)
    head += f"{'agree':>8}{'maxerr':>9}{'fusion params':>15}{'head ms':>9}"
    lines = [head, "-" * len(head)]
    for kind, r in report["models"].items():
        for prec, e in r["precisions"].items():
            agree = min(e["agreement"].values()) if "agreement" in e else 1.0
            err = e.get("max_abs_error", 0.0)
            row = f"{kind:<8}{prec:<6}" + "".join(f"{e['accuracy'][p]:>8.3f}" for p in PATTERNS)
            row += f"{agree:>8.3f}{err:>9.4f}"
            row += f"{r['fusion_parameters']:>15,}{r['fusion_head_latency_ms']:>9.3f}" if prec == "fp32" else ""
            lines.append(row)
        lines.append(f"{'':<14}Fusion_Gain {r['fusion_gain']:.2f}")
    lines.append("R = rgb, D = depth, A = audio; agree = worst-pattern argmax agreement with fp32;")
    lines.append("fp16 = true fp16 arithmetic (PyTorch), fp32/int8 = the exported ONNX graphs in ONNX Runtime.")
    return "\n".join(lines)
