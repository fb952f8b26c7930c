"""PyTorch → ONNX: the split LMF graphs, the monolithic graph, the fusion head, in fp32 and fp16.

Opset 17 with the legacy (TorchScript) exporter: TensorRT 8.6 (JetPack 6.0) parses ONNX only up
to opset 17, and torch's dynamo exporter cannot go below 18. Every graph has a dynamic batch axis
and is checked with ``onnx.checker`` and against the TensorRT op allow-list before it is kept.

The graph wrappers hold the model's parts under the model's own attribute names (``encoders``,
``fusion``), so the module paths in the exported node names ("/depth/body/body.0/Conv") resolve
to the user's module ("encoders.depth.body.0") when an operator must be refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import torch
from edgefusion.export.api import LowRankFusion
from edgefusion.export.models.model import FusionModel, MonolithicGraph, to_fp16

from edgefusion.backends.base import first_line
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


def module_path(root: torch.nn.Module, node_name: str) -> str:
    """The dotted path in ``root`` of the module that made an ONNX node, from the legacy exporter's
    node name: each scope of "/depth/body/body.0/Conv" is the tail of a module path below the
    scope before it ("" when the node was made by ``root`` itself)."""
    paths = [p for p, _ in root.named_modules() if p]
    current = ""
    for scope in node_name.strip("/").split("/")[:-1]:
        below = [
            p for p in paths if (not current or p.startswith(current + ".")) and (p == scope or p.endswith("." + scope))
        ]
        if not below:
            break
        current = min(below, key=lambda p: p.count("."))
    return current


def _describe(root: torch.nn.Module, path: str) -> str:
    return f"{path} ({type(root.get_submodule(path)).__name__})" if path else "the model's own forward"


def export_graph(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str]) -> Path:
    """One checked graph: opset 17, dynamic batch, onnx.checker full check, TensorRT's operators only."""
    dynamic = {name: {0: "batch"} for name in inputs + outputs}
    try:
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
    except (RuntimeError, TypeError, ValueError, torch.onnx.errors.OnnxExporterError) as err:
        raise EdgefusionError(
            f"{path.parent.name}/{path.name}: torch cannot export this model to ONNX opset {OPSET}: {first_line(err)}"
        ) from None
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    if proto.opset_import[0].version > OPSET:
        raise EdgefusionError(f"{path.name}: exported opset {proto.opset_import[0].version} > {OPSET}")
    allowed = trt_supported_ops()
    bad = [n for n in proto.graph.node if n.op_type not in allowed]
    if bad:
        made_by = _describe(module, module_path(module, bad[0].name))
        others = sorted({n.op_type for n in bad} - {bad[0].op_type})
        also = f" (also {', '.join(others)})" if others else ""
        raise EdgefusionError(
            f"{path.parent.name}/{path.name}: operator {bad[0].op_type}{also}, made by {made_by}, is not in "
            "TensorRT 8.6's ONNX parser list (export/tensorrt_onnx_ops.txt); rewrite it with supported operators"
        )
    return path


class BranchGraph(torch.nn.Module):
    """One modality's raw input → encoder → projection p_m, float32 out whatever the precision."""

    def __init__(self, model: LowRankFusion, name: str):
        super().__init__()
        self.encoders = torch.nn.ModuleDict({name: model.encoders[name]})
        self.fusion = model.fusion
        self.modality = name

    def forward(self, x):
        return self.fusion.project(self.modality, self.encoders[self.modality](x)).float()


class HeadGraph(torch.nn.Module):
    """Every modality's projection (float32) → logits + probs, in the fusion layer's own precision."""

    def __init__(self, model: LowRankFusion):
        super().__init__()
        self.fusion = model.fusion

    def forward(self, *projections):
        dtype = self.fusion.bias.dtype
        logits = self.fusion.head(*(p.to(dtype) for p in projections)).float()
        return logits, torch.softmax(logits, dim=1)


class FusedGraph(torch.nn.Module):
    """Every raw input + the presence mask → logits + probs: the monolithic graph."""

    def __init__(self, model: LowRankFusion):
        super().__init__()
        self.encoders = model.encoders
        self.fusion = model.fusion

    def forward(self, *args):
        *inputs, present = args
        h = {m: self.encoders[m](x) for m, x in zip(self.fusion.names, inputs)}
        logits = self.fusion(h, present).float()
        return logits, torch.softmax(logits, dim=1)


def absent_projections(model: LowRankFusion) -> dict[str, np.ndarray]:
    """What an absent modality contributes: its projection of h = 0, i.e. the Linear's bias."""
    fusion = model.fusion
    with torch.no_grad():
        return {
            m: fusion.proj[m].bias.detach().reshape(fusion.rank, fusion.d_out).float().numpy().astype(np.float32)
            for m in fusion.names
        }


def export_split(
    model: LowRankFusion, out: Path, examples: Mapping[str, torch.Tensor], monolithic: bool
) -> dict[str, Path]:
    """The split graphs (one per modality, the head), absent.npz and optionally the monolithic
    graph of one precision into ``out``; the model's dtype decides the precision."""
    out.mkdir(parents=True, exist_ok=True)
    names = list(model.names)
    paths = {m: export_graph(BranchGraph(model, m), (examples[m],), out / f"{m}.onnx", [m], [f"p_{m}"]) for m in names}
    with torch.no_grad():
        p = tuple(BranchGraph(model, m)(examples[m]) for m in names)
    heads = [f"p_{m}" for m in names]
    paths["head"] = export_graph(HeadGraph(model), p, out / "head.onnx", heads, ["logits", "probs"])
    if monolithic:
        present = torch.ones(len(p[0]), len(names))
        args = (*(examples[m] for m in names), present)
        paths["monolithic"] = export_graph(
            FusedGraph(model), args, out / "monolithic.onnx", [*names, "present"], ["logits", "probs"]
        )
    paths["absent"] = out / "absent.npz"
    np.savez(paths["absent"], **absent_projections(model))
    return paths


def export_fusion_head(model: FusionModel, path: Path) -> Path:
    """Embeddings h_m + presence → logits: the same cut for every fusion kind, for latency."""

    class _Head(torch.nn.Module):
        def __init__(self, fusion):
            super().__init__()
            self.fusion = fusion

        def forward(self, h_rgb, h_depth, h_audio, present):
            return self.fusion({"rgb": h_rgb, "depth": h_depth, "audio": h_audio}, present)

    h = torch.randn(2, model.config.dim)
    return export_graph(
        _Head(model.fusion), (h, h, h, torch.ones(2, 3)), path, ["h_rgb", "h_depth", "h_audio", "present"], ["logits"]
    )


def export_precision(model: FusionModel, out: Path) -> dict[str, Path]:
    """Every graph of one precision of the built-in model into ``out``: LMF split and monolithic,
    a baseline monolithic only."""
    x = example_inputs()
    if model.config.fusion == "lmf":
        return export_split(LowRankFusion.from_parts(model.encoders, model.fusion), out, x, monolithic=True)
    out.mkdir(parents=True, exist_ok=True)
    args = (x["rgb"], x["depth"], x["audio"], x["present"])
    path = export_graph(
        MonolithicGraph(model), args, out / "monolithic.onnx", [*MODALITIES, "present"], ["logits", "probs"]
    )
    return {"monolithic": path}


def export_all(model: FusionModel, out: Path) -> dict[str, dict[str, Path]]:
    """fp32 and fp16 variants of every graph, under ``out/fp32`` and ``out/fp16``."""
    model = model.float().eval()
    return {"fp32": export_precision(model, out / "fp32"), "fp16": export_precision(to_fp16(model), out / "fp16")}
