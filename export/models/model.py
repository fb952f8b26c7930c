"""The whole model (encoders + fusion) and the graph-shaped views of it that are exported.

``MonolithicGraph`` takes every input plus the presence mask and gives logits + probs.
For LMF, ``BranchGraph(m)`` (encoder + projection → p_m) and ``HeadGraph`` (every p_m → logits
+ probs) are the split export that lets the runtime cache each modality's projection.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from edgefusion.export.models.encoders import LogMelFrontEnd, make_encoders
from edgefusion.export.models.fusion import FUSIONS, LMFFusion
from torch import nn

from edgefusion.modalities import MODALITIES
from edgefusion.task import N_SYMBOLS


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

    def embed(self, rgb, depth, audio) -> dict[str, torch.Tensor]:
        return {
            "rgb": self.encoders["rgb"](rgb),
            "depth": self.encoders["depth"](depth),
            "audio": self.encoders["audio"](audio),
        }

    def forward(self, rgb, depth, audio, present) -> torch.Tensor:
        return self.fusion(self.embed(rgb, depth, audio), present)

    def to_dict(self) -> dict:
        return asdict(self.config)


class MonolithicGraph(nn.Module):
    def __init__(self, model: FusionModel):
        super().__init__()
        self.model = model

    def forward(self, rgb, depth, audio, present):
        logits = self.model(rgb, depth, audio, present).float()
        return logits, torch.softmax(logits, dim=1)


class BranchGraph(nn.Module):
    def __init__(self, model: FusionModel, modality: str):
        super().__init__()
        assert isinstance(model.fusion, LMFFusion), "only LMF is exported split"
        self.encoder = model.encoders[modality]
        self.fusion = model.fusion
        self.modality = modality

    def forward(self, x):
        return self.fusion.project(self.modality, self.encoder(x)).float()


class HeadGraph(nn.Module):
    def __init__(self, model: FusionModel):
        super().__init__()
        self.fusion = model.fusion

    def forward(self, p_rgb, p_depth, p_audio):
        dtype = self.fusion.bias.dtype
        logits = self.fusion.head(p_rgb.to(dtype), p_depth.to(dtype), p_audio.to(dtype)).float()
        return logits, torch.softmax(logits, dim=1)


def to_fp16(model: FusionModel) -> FusionModel:
    """A copy in fp16 except the audio front end, which stays fp32 (its power spectrum would
    overflow fp16 on loud input before normalisation takes effect)."""
    half = copy.deepcopy(model).half()
    for mod in half.modules():
        if isinstance(mod, LogMelFrontEnd):
            mod.float()
    return half.eval()
