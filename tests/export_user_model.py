"""A user's own model, written the way a user would: no built-in encoders, no casts, own names.

Depth 96×128 through BatchNorm, a residual depthwise-separable block, SiLU and a global pool;
0.5 s of raw 16 kHz audio through 1-D convolutions and GELU, its first conv a "frontend" kept
fp32. The data is synthetic and learnable: the class sets the scene's distance and the tone's pitch.
``bundle_args`` is the ``edgefusion-export bundle --model`` factory.
"""

import torch
import torch.nn.functional as F
from edgefusion.export import LowRankFusion, Modality, random_presence
from torch import nn

LABELS = ["left", "right", "up", "down"]
H, W, RATE, SECONDS = 96, 128, 16_000, 0.5
MODALITIES = {"range": Modality.depth(height=H, width=W), "mic": Modality.audio(seconds=SECONDS, rate=RATE)}


class Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.act = nn.SiLU()

    def forward(self, x):
        return x + self.act(self.bn(self.pw(self.dw(x))))


class DepthNet(nn.Module):
    def __init__(self, dim: int = 24, act: nn.Module | None = None):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, stride=4, padding=1), nn.BatchNorm2d(8), act or nn.SiLU())
        self.block = Residual(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out = nn.Linear(8, dim)

    def forward(self, depth):
        return self.out(self.pool(self.block(self.stem(depth / 4.0))).flatten(1))


class AudioNet(nn.Module):
    def __init__(self, dim: int = 16):
        super().__init__()
        self.frontend = nn.Conv1d(1, 8, 64, stride=32)
        self.body = nn.Sequential(nn.GELU(), nn.Conv1d(8, 16, 5, stride=4), nn.GELU())
        self.out = nn.Linear(16, dim)

    def forward(self, pcm):
        x = self.frontend((pcm / 32768.0).unsqueeze(1))
        return self.out(self.body(x).mean(dim=2))


def make_model(depth_net: nn.Module | None = None, seed: int = 0) -> LowRankFusion:
    torch.manual_seed(seed)
    encoders = {"range": depth_net or DepthNet(), "mic": AudioNet()}
    return LowRankFusion(encoders, dims={"range": 24, "mic": 16}, n_classes=4, rank=3, d_out=8, hidden=16)


def data(n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Raw inputs as the runtime delivers them: depth in metres (0 = no data), audio in int16 units."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    depth = torch.rand(n, 1, H, W, generator=g) * 0.5 + (0.8 + 0.6 * y.float()).view(n, 1, 1, 1)
    depth = torch.where(torch.rand(n, 1, H, W, generator=g) < 0.05, torch.zeros_like(depth), depth)
    t = torch.arange(round(RATE * SECONDS)) / RATE
    tone = torch.sin(2 * torch.pi * (300.0 * (1 + y.float())).view(n, 1) * t)
    pcm = 4000 * tone + 500 * torch.randn(n, len(t), generator=g)
    return {"range": depth, "mic": pcm}, y


def train(model: LowRankFusion, steps: int = 60, seed: int = 0) -> LowRankFusion:
    """A user's loop: modality dropout from random_presence, cross-entropy, Adam."""
    x, y = data(128, seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (32,), generator=g)
        present = random_presence(len(idx), len(model.names), g)
        loss = F.cross_entropy(model({m: v[idx] for m, v in x.items()}, present), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def bundle_args() -> dict:
    """The factory for ``edgefusion-export bundle --model export_user_model:bundle_args``."""
    heldout = data(48, 7)
    return {
        "model": train(make_model()),
        "labels": LABELS,
        "modalities": MODALITIES,
        "calibration": [data(24, 3)[0], data(24, 4)[0]],
        "heldout": [heldout],
        "keep_fp32": ("frontend",),
    }
