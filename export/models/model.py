"""The built-in model (encoders + fusion) and the monolithic view of it that a baseline exports.

``MonolithicGraph`` takes every input plus the presence mask and gives logits + probs. An LMF
model is exported split through the public path instead (``edgefusion.export.onnx_export``), as
``LowRankFusion.from_parts(model.encoders, model.fusion)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from edgefusion.export.models.encoders import LogMelFrontEnd, make_encoders
from edgefusion.export.models.fusion import FUSIONS
from edgefusion.export.precision import to_half
from torch import nn

from edgefusion.modalities import MODALITIES
from edgefusion.task import N_SYMBOLS

BUILT_IN_KEEP_FP32 = (LogMelFrontEnd,)


@dataclass(frozen=True)
class ModelConfig:
    fusion: str = "lmf"
    dim: int = 32
    rank: int = 4
    d_out: int = 32
    hidden: int = 64
    n_classes: int = N_SYMBOLS

    def __post_init__(self):
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")


class FusionModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoders = make_encoders(config.dim)
        dims = dict.fromkeys(MODALITIES, config.dim)
        kw = {"hidden": config.hidden}
        if config.fusion != "late":
            kw["d_out"] = config.d_out
        if config.fusion == "lmf":
            kw["rank"] = config.rank
        self.fusion = FUSIONS[config.fusion](dims, config.n_classes, **kw)
        # Training-only cue classifiers (word, gesture, object): not part of any exported graph.
        self.aux = nn.ModuleDict({m: nn.Linear(config.dim, N_SYMBOLS) for m in MODALITIES})

    names = MODALITIES  # as LowRankFusion's: the modalities embed() and fusion take, in order

    def embed(self, inputs) -> dict[str, torch.Tensor]:
        return {m: self.encoders[m](inputs[m]) for m in MODALITIES}

    def forward(self, rgb, depth, audio, present) -> torch.Tensor:
        return self.fusion(self.embed({"rgb": rgb, "depth": depth, "audio": audio}), present)

    def to_dict(self) -> dict:
        return asdict(self.config)


class MonolithicGraph(nn.Module):
    def __init__(self, model: FusionModel):
        super().__init__()
        self.model = model

    def forward(self, rgb, depth, audio, present):
        logits = self.model(rgb, depth, audio, present).float()
        return logits, torch.softmax(logits, dim=1)


def to_fp16(model: FusionModel) -> FusionModel:
    """A copy in fp16 except the audio front end, which stays fp32 (its power spectrum would
    overflow fp16 on loud input before normalisation takes effect)."""
    return to_half(model, keep=BUILT_IN_KEEP_FP32)
