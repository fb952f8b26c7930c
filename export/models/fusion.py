"""Fusion layers: low-rank multimodal fusion (deployed) and the seed's baselines (compared).

Every layer maps the embeddings ``h`` (modality → (N, d)) and a presence mask (N, M) to class
logits; the modalities, in the order of the mask's columns, are the keys of ``dims``. An absent
modality's embedding is zero: for LMF that makes its projection the Linear's bias, a learned
"absent" factor, so the runtime needs no special graph for a missing sensor.
"""

from __future__ import annotations

import torch
from torch import nn


def _classifier(d_in: int, hidden: int, n_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


def _masked(h: dict[str, torch.Tensor], present: torch.Tensor, names: tuple[str, ...]) -> list[torch.Tensor]:
    return [h[m] * present[:, i : i + 1].to(h[m].dtype) for i, m in enumerate(names)]


class LMFFusion(nn.Module):
    """Low-rank multimodal fusion (Liu et al., 2018), one ``Linear(d_m, rank*d_out)`` per modality.

    fused = sum_i w_i * prod_m p_m[i] + b with p_m = Linear_m(h_m) viewed as (rank, d_out); the
    Linear's bias is the paper's appended 1. The projections start with bias 1 so an absent
    modality begins as the multiplicative identity rather than zeroing the product.
    """

    kind = "lmf"

    def __init__(self, dims: dict[str, int], n_classes: int, rank: int = 4, d_out: int = 32, hidden: int = 64):
        super().__init__()
        self.names = tuple(dims)
        self.rank, self.d_out = rank, d_out
        self.proj = nn.ModuleDict({m: nn.Linear(d, rank * d_out) for m, d in dims.items()})
        for lin in self.proj.values():
            nn.init.xavier_normal_(lin.weight, gain=0.5)
            nn.init.ones_(lin.bias)
        self.rank_weight = nn.Parameter(torch.full((rank,), 1.0 / rank))
        self.bias = nn.Parameter(torch.zeros(d_out))
        self.classifier = _classifier(d_out, hidden, n_classes)

    def project(self, m: str, h: torch.Tensor) -> torch.Tensor:
        """p_m: (N, rank, d_out). Depends on one modality only: the runtime caches it."""
        return self.proj[m](h).reshape(-1, self.rank, self.d_out)

    def head(self, *projections: torch.Tensor) -> torch.Tensor:
        """Logits from every modality's projection, in ``names`` order."""
        prod = projections[0]
        for p in projections[1:]:
            prod = prod * p
        w = self.rank_weight.to(prod.dtype).reshape(1, self.rank, 1)
        fused = (prod * w).sum(dim=1) + self.bias.to(prod.dtype)
        return self.classifier(fused)

    def forward(self, h: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return self.head(*(self.project(m, x) for m, x in zip(self.names, _masked(h, present, self.names))))

    def fusion_parameters(self) -> int:
        return sum(p.numel() for p in self.proj.parameters()) + self.rank_weight.numel() + self.bias.numel()


class EarlyFusion(nn.Module):
    """Concatenate the embeddings (zeros where absent), then an MLP."""

    kind = "early"

    def __init__(self, dims: dict[str, int], n_classes: int, d_out: int = 32, hidden: int = 64):
        super().__init__()
        self.names = tuple(dims)
        self.fuse = nn.Sequential(nn.Linear(sum(dims.values()), d_out), nn.ReLU())
        self.classifier = _classifier(d_out, hidden, n_classes)

    def forward(self, h: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.fuse(torch.cat(_masked(h, present, self.names), dim=1)))

    def fusion_parameters(self) -> int:
        return sum(p.numel() for p in self.fuse.parameters())


class LateFusion(nn.Module):
    """A classifier per modality; a product of experts over the present ones (sum of log-probs)."""

    kind = "late"

    def __init__(self, dims: dict[str, int], n_classes: int, hidden: int = 64):
        super().__init__()
        self.names = tuple(dims)
        self.experts = nn.ModuleDict({m: _classifier(d, hidden, n_classes) for m, d in dims.items()})

    def forward(self, h: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        out = 0
        for i, m in enumerate(self.names):
            logp = torch.log_softmax(self.experts[m](h[m]), dim=1)
            out = out + logp * present[:, i : i + 1].to(logp.dtype)
        return out

    def fusion_parameters(self) -> int:
        return 0  # the combination itself has no parameters; the experts are classifiers


class TensorFusion(nn.Module):
    """Full tensor fusion (Zadeh et al., 2017): the outer product of every [h_m; 1], then a Linear."""

    kind = "tensor"

    def __init__(self, dims: dict[str, int], n_classes: int, d_out: int = 32, hidden: int = 64):
        super().__init__()
        self.names = tuple(dims)
        size = 1
        for d in dims.values():
            size *= d + 1
        self.fuse = nn.Sequential(nn.Linear(size, d_out), nn.ReLU())
        self.classifier = _classifier(d_out, hidden, n_classes)

    def forward(self, h: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        z = [torch.cat([x, torch.ones_like(x[:, :1])], dim=1) for x in _masked(h, present, self.names)]
        outer = z[0]
        for zi in z[1:]:
            outer = (outer.unsqueeze(2) * zi.unsqueeze(1)).flatten(1)
        return self.classifier(self.fuse(outer))

    def fusion_parameters(self) -> int:
        return sum(p.numel() for p in self.fuse[0].parameters())


FUSIONS = {cls.kind: cls for cls in (LMFFusion, EarlyFusion, LateFusion, TensorFusion)}
