"""The workstation's steps on a runs folder: train → export → quantize, one folder per fusion kind.

    runs/<kind>/checkpoint.pt            weights + model/training config + history
    runs/<kind>/onnx/{fp32,fp16,int8}/   graphs (+ absent.npz for LMF)
    runs/<kind>/fusion_head.onnx         embeddings → logits, for the latency comparison
    runs/compare.json                    the compare report

Every file is written to a temp name and renamed, so an interrupted step leaves the previous
result or nothing, never half a file.
"""

from __future__ import annotations

import functools
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from edgefusion.calibration.int8_set import CalibrationSet
from edgefusion.export import task_data
from edgefusion.export.models.model import FusionModel, ModelConfig
from edgefusion.export.onnx_export import export_all, export_fusion_head
from edgefusion.export.quantize import quantize_graph
from edgefusion.export.train import TrainConfig, accuracy_by_pattern, train

from edgefusion.atomic import atomic_directory, atomic_write
from edgefusion.errors import EdgefusionError
from edgefusion.session.examples import session_batch
from edgefusion.task import INTENTS

CALIBRATION_SAMPLES = 448  # 64 per presence pattern


@dataclass(frozen=True)
class DataSizes:
    train: int = 10_000
    heldout: int = 2_000


def kind_dir(runs: Path, kind: str) -> Path:
    return Path(runs) / kind


@functools.lru_cache(maxsize=1)
def _session_examples(sessions: tuple[Path, ...]):
    """Decoded once for every fusion kind trained on them (a RealSense playback per session)."""
    return session_batch(sessions, INTENTS)


def train_kind(
    kind: str, runs: Path, cfg: TrainConfig, sizes: DataSizes, log=print, sessions: tuple[Path, ...] = ()
) -> Path:
    """Train on the built-in task, plus every labelled example of the recorded ``sessions``."""
    torch.set_num_threads(os.cpu_count() or 1)
    data = task_data.load(task_data.TRAIN_SEED, sizes.train)
    if sessions:
        recorded = _session_examples(tuple(sessions))
        log(f"adding {len(recorded)} examples from {len(sessions)} recorded session(s)")
        data = task_data.concat([data, recorded])
    heldout = task_data.load(task_data.HELDOUT_SEED, sizes.heldout)
    model = FusionModel(ModelConfig(fusion=kind))
    log(f"training {kind} on {sizes.train} samples (seed {task_data.TRAIN_SEED})")
    result = train(model, data, cfg, log=log)
    acc = accuracy_by_pattern(model, heldout)
    log(f"{kind} held-out accuracy (PyTorch fp32): " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    out = kind_dir(runs, kind) / "checkpoint.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(
        {
            "state_dict": model.state_dict(),
            "model": model.to_dict(),
            "training": {
                **cfg.to_dict(),
                "train_seed": task_data.TRAIN_SEED,
                "train_samples": sizes.train,
                "sessions": [str(p) for p in sessions],
                "seconds": result["seconds"],
                "history": result["history"],
                "torch": str(torch.__version__),
            },
            "heldout_accuracy_torch": acc,
        },
        buf,
    )
    with atomic_write(out) as f:
        f.write(buf.getvalue())
    return out


def load_checkpoint(path: Path) -> tuple[FusionModel, dict]:
    if not Path(path).is_file():
        raise EdgefusionError(f"{path}: no checkpoint there; run `edgefusion-export train` first")
    try:  # any failure here means the file is not what `train` writes (cut short, another file)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = FusionModel(ModelConfig(**ckpt["model"]))
        model.load_state_dict(ckpt["state_dict"])
    except Exception:  # torch's own message suggests weights_only=False: not advice to pass on
        raise EdgefusionError(
            f"{path}: not a checkpoint written by `edgefusion-export train` (cut short, or another file); train again"
        ) from None
    return model.eval(), ckpt


def export_kind(runs: Path, kind: str) -> Path:
    """fp32 + fp16 graphs of one trained model into runs/<kind>/onnx (replaced whole)."""
    model, _ = load_checkpoint(kind_dir(runs, kind) / "checkpoint.pt")
    out = kind_dir(runs, kind) / "onnx"
    with atomic_directory(out) as tmp:
        export_all(model, tmp)
    head = kind_dir(runs, kind) / "fusion_head.onnx"
    tmp_head = head.with_name(".fusion_head.onnx.tmp")
    try:
        export_fusion_head(model, tmp_head)
        os.replace(tmp_head, head)
    finally:
        tmp_head.unlink(missing_ok=True)
    return out


def calibration_set(sessions: tuple[Path, ...] = ()) -> CalibrationSet:
    """The built-in task's calibration seed, or examples spread over recorded sessions (the
    robot's own camera and room: the ranges INT8 must cover there)."""
    if sessions:
        batch = session_batch(sessions, INTENTS, max_examples=CALIBRATION_SAMPLES)
        return CalibrationSet.from_batch(batch, f"{len(batch)} examples of sessions {', '.join(map(str, sessions))}")
    batch = task_data.load(task_data.CALIBRATION_SEED, CALIBRATION_SAMPLES)
    return CalibrationSet.from_batch(batch, f"built-in task, seed {task_data.CALIBRATION_SEED}")


def quantize_kind(runs: Path, kind: str, calib: CalibrationSet) -> Path:
    """int8 QDQ copies of the fp32 encoder and monolithic graphs into runs/<kind>/onnx/int8.

    The LMF head is not quantized: the int8 variant runs the fp32 head on int8 encoders' output.
    """
    onnx_dir = kind_dir(runs, kind) / "onnx"
    fp32 = onnx_dir / "fp32"
    if not fp32.is_dir():
        raise EdgefusionError(f"{fp32}: no fp32 graphs; run `edgefusion-export export --fusion {kind}` first")
    out = onnx_dir / "int8"
    with atomic_directory(out) as tmp:
        for graph in sorted(fp32.glob("*.onnx")):
            if graph.stem != "head":
                quantize_graph(graph, tmp / graph.name, calib)
        (tmp / "calibration.json").write_text(json.dumps(calib.describe(), indent=1))
    return out
