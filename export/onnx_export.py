"""PyTorch → ONNX: the split LMF graphs, the monolithic graph, the fusion head, in fp32 and fp16.

Opset 17 with the legacy (TorchScript) exporter: TensorRT 8.6 (JetPack 6.0) parses ONNX only up
to opset 17, and torch's dynamo exporter cannot go below 18. Every graph has a dynamic batch axis
and is checked with ``onnx.checker`` and against the TensorRT op allow-list before it is kept.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from edgefusion.export.models.fusion import LMFFusion
from edgefusion.export.models.model import BranchGraph, FusionModel, HeadGraph, MonolithicGraph, to_fp16

from edgefusion.errors import EdgefusionError
from edgefusion.modalities import MODALITIES
from edgefusion.task import AUDIO_WINDOW_S, HEIGHT, SAMPLE_RATE, WIDTH

OPSET = 17
# TensorRT 8.6's ONNX parser operator list, shipped as package data: the exporter refuses a graph
# TensorRT could not parse here, on the workstation, not on the robot at first boot.
TRT_OPS_FILE = Path(__file__).with_name("tensorrt_onnx_ops.txt")


def example_inputs(batch: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "rgb": torch.rand(batch, 3, HEIGHT, WIDTH, generator=g) * 255,
        "depth": torch.rand(batch, 1, HEIGHT, WIDTH, generator=g) * 4,
        "audio": (torch.rand(batch, int(SAMPLE_RATE * AUDIO_WINDOW_S), generator=g) - 0.5) * 2000,
        "present": torch.ones(batch, len(MODALITIES)),
    }


def trt_supported_ops(path: Path = TRT_OPS_FILE) -> set[str]:
    """Operator names from the TensorRT parser list (text after '|' is a restriction note)."""
    ops = set()
    for line in path.read_text().splitlines():
        name = line.split("|")[0].strip()
        if name and not name.startswith("#"):
            ops.add(name)
    return ops


def graph_ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str]) -> Path:
    dynamic = {name: {0: "batch"} for name in inputs + outputs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice, every call
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            opset_version=OPSET,
            dynamo=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    if proto.opset_import[0].version > OPSET:
        raise EdgefusionError(f"{path.name}: exported opset {proto.opset_import[0].version} > {OPSET}")
    unsupported = graph_ops(proto) - trt_supported_ops()
    if unsupported:
        raise EdgefusionError(
            f"{path.name}: operators TensorRT 8.6 cannot parse: {', '.join(sorted(unsupported))}; "
            "rewrite that part of the model with supported operators"
        )
    return path


def export_fusion_head(model: FusionModel, path: Path) -> Path:
    """Embeddings h_m + presence → logits: the same cut for every fusion kind, for latency."""

    class _Head(torch.nn.Module):
        def __init__(self, fusion):
            super().__init__()
            self.fusion = fusion

        def forward(self, h_rgb, h_depth, h_audio, present):
            return self.fusion({"rgb": h_rgb, "depth": h_depth, "audio": h_audio}, present)

    h = torch.randn(2, model.config.dim)
    return _export(
        _Head(model.fusion), (h, h, h, torch.ones(2, 3)), path, ["h_rgb", "h_depth", "h_audio", "present"], ["logits"]
    )


def absent_projections(model: FusionModel) -> dict[str, np.ndarray]:
    """What an absent modality contributes: its projection of h = 0, i.e. the Linear's bias."""
    fusion = model.fusion
    assert isinstance(fusion, LMFFusion)
    with torch.no_grad():
        return {
            m: fusion.proj[m].bias.detach().reshape(fusion.rank, fusion.d_out).float().numpy().astype(np.float32)
            for m in MODALITIES
        }


def export_precision(model: FusionModel, out: Path) -> dict[str, Path]:
    """Every graph of one precision into ``out``; the model's dtype decides the precision."""
    out.mkdir(parents=True, exist_ok=True)
    x = example_inputs()
    paths = {
        "monolithic": _export(
            MonolithicGraph(model),
            (x["rgb"], x["depth"], x["audio"], x["present"]),
            out / "monolithic.onnx",
            [*MODALITIES, "present"],
            ["logits", "probs"],
        )
    }
    if isinstance(model.fusion, LMFFusion):
        for m in MODALITIES:
            paths[m] = _export(BranchGraph(model, m), (x[m],), out / f"{m}.onnx", [m], [f"p_{m}"])
        with torch.no_grad():
            p = {m: BranchGraph(model, m)(x[m]) for m in MODALITIES}
        paths["head"] = _export(
            HeadGraph(model),
            tuple(p[m] for m in MODALITIES),
            out / "head.onnx",
            [f"p_{m}" for m in MODALITIES],
            ["logits", "probs"],
        )
        absent = out / "absent.npz"
        np.savez(absent, **absent_projections(model))
        paths["absent"] = absent
    return paths


def export_all(model: FusionModel, out: Path) -> dict[str, dict[str, Path]]:
    """fp32 and fp16 variants of every graph, under ``out/fp32`` and ``out/fp16``."""
    model = model.float().eval()
    return {"fp32": export_precision(model, out / "fp32"), "fp16": export_precision(to_fp16(model), out / "fp16")}
