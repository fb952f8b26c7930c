"""Per-modality encoders, each ending in an embedding h_m.

Every encoder casts its input to the dtype of its own weights at the door. That one rule makes
the fp16 export exact and simple: ``model.half()`` plus the audio front end put back to fp32
gives a graph whose Cast nodes sit exactly at the precision boundaries, and the same module run
in PyTorch is the true-fp16 reference (ONNX Runtime's CPU kernels compute fp16 Conv/Gemm in fp32).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgefusion.task import AUDIO_WINDOW_S, HEIGHT, SAMPLE_RATE, WIDTH


def _conv_stack(cin: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        cin = w
    return nn.Sequential(*layers)


class _ConvEncoder(nn.Module):
    """Strided convolutions, then a Linear over the whole feature map.

    Images keep their layout to the end (a gesture is "arm left of the body", which a global
    average pool would erase); audio averages over time only, since a word can start anywhere
    in the window but its spectrum's layout matters.
    """

    def __init__(self, cin: int, dim: int, widths: tuple[int, ...], in_hw: tuple[int, int], pool_time: bool):
        super().__init__()
        self.body = _conv_stack(cin, widths)
        self.pool_time = pool_time
        with torch.no_grad():
            n_flat = self._pool(self.body(torch.zeros(1, cin, *in_hw))).shape[1]
        self.out = nn.Linear(n_flat, dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.out.weight.dtype

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return (x.mean(dim=3) if self.pool_time else x).flatten(1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self._pool(self.body(x)))


class RGBEncoder(_ConvEncoder):
    """RGB (N, 3, H, W), 0..255. Each channel of each frame is standardised first, which takes
    out exposure and white balance: the robot's rooms differ in light, not in what objects are."""

    def __init__(self, dim: int = 32, widths: tuple[int, ...] = (16, 32, 64, 64)):
        super().__init__(3, dim, widths, (HEIGHT, WIDTH), pool_time=False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        # (x - mean) / sqrt(var + 1) per frame and channel: one InstanceNormalization node.
        return self.embed(F.instance_norm(rgb.float(), eps=1.0).to(self.dtype))


class DepthEncoder(_ConvEncoder):
    """Depth (N, 1, H, W) in metres, 0 where the camera has no data."""

    def __init__(self, dim: int = 32, widths: tuple[int, ...] = (16, 32, 64, 64)):
        super().__init__(1, dim, widths, (HEIGHT, WIDTH), pool_time=False)

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        return self.embed((depth.to(self.dtype) - 2.0) * (1 / 1.5))


def _mel_filterbank(n_mels: int, n_bins: int, sr: int, fmin: float = 60.0) -> np.ndarray:
    def mel(f):
        return 2595 * np.log10(1 + f / 700)

    edges = 700 * (10 ** (np.linspace(mel(fmin), mel(sr / 2), n_mels + 2) / 2595) - 1)
    freqs = np.linspace(0, sr / 2, n_bins)
    fb = np.zeros((n_mels, n_bins))
    for i in range(n_mels):
        lo, mid, hi = edges[i : i + 3]
        fb[i] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    return fb


class LogMelFrontEnd(nn.Module):
    """Raw PCM (N, samples) in int16 units → log-mel (N, 1, n_mels, frames), always fp32.

    The window is first normalised to unit RMS (with a floor near -90 dBFS), so any gain up to
    full scale gives the same spectrum and the largest power stays below fp16's 65504 even for
    pathological input (DC: 4e4). The framed DFT is a Conv2d with a (1, n_fft) kernel of fixed
    Hann-windowed cos/sin weights (TensorRT 8.x has no STFT op and parses only 2D/3D Conv);
    re² + im² summed into mel bands is one MatMul against the filterbank stacked twice.
    """

    def __init__(self, n_fft: int = 256, hop: int = 160, n_mels: int = 40, sr: int = SAMPLE_RATE):
        super().__init__()
        self.n_fft, self.hop, self.n_mels = n_fft, hop, n_mels
        n_bins = n_fft // 2 + 1
        t = np.arange(n_fft)
        k = np.arange(n_bins)[:, None]
        window = 0.5 - 0.5 * np.cos(2 * np.pi * t / n_fft)
        basis = np.concatenate([np.cos(2 * np.pi * k * t / n_fft), -np.sin(2 * np.pi * k * t / n_fft)])
        self.dft = nn.Conv2d(1, 2 * n_bins, (1, n_fft), stride=(1, hop), bias=False)
        self.dft.weight.data = torch.tensor(basis * window, dtype=torch.float32)[:, None, None, :]
        self.dft.weight.requires_grad_(False)
        fb = _mel_filterbank(n_mels, n_bins, sr)
        self.register_buffer("mel", torch.tensor(np.concatenate([fb, fb], 1), dtype=torch.float32))

    def n_frames(self, n_samples: int) -> int:
        return (n_samples - self.n_fft) // self.hop + 1

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        x = pcm.float()
        rms = torch.sqrt(torch.mean(x * x, dim=1, keepdim=True))
        x = x / torch.clamp(rms, min=1.0)
        spec = self.dft(x.unsqueeze(1).unsqueeze(1)).squeeze(2)  # (N, 2*bins, frames)
        mel = torch.matmul(self.mel, spec * spec)  # (N, n_mels, frames)
        return torch.log(mel + 1e-4).unsqueeze(1)


class AudioEncoder(nn.Module):
    """Raw PCM window (N, samples) in int16 units; the front end is part of the graph."""

    def __init__(self, dim: int = 32, widths: tuple[int, ...] = (16, 32, 64, 64)):
        super().__init__()
        self.frontend = LogMelFrontEnd()
        self.norm = nn.BatchNorm2d(1)
        in_hw = (self.frontend.n_mels, self.frontend.n_frames(int(SAMPLE_RATE * AUDIO_WINDOW_S)))
        self.encoder = _ConvEncoder(1, dim, widths, in_hw, pool_time=True)

    def features(self, pcm: torch.Tensor) -> torch.Tensor:
        """The front end alone: fixed weights, so training computes it once per dataset."""
        return self.frontend(pcm)

    def embed_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed(self.norm(feats.to(self.encoder.dtype)))

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        return self.embed_features(self.features(pcm))


def make_encoders(dim: int = 32) -> nn.ModuleDict:
    return nn.ModuleDict({"rgb": RGBEncoder(dim), "depth": DepthEncoder(dim), "audio": AudioEncoder(dim)})
