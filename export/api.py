"""The model side of the public API: what a modality's raw input is, and the fusion model around a user's encoders.

``Modality`` describes what the runtime delivers for one modality (spec: the bundle is the
runtime's whole contract), so the exporter can feed each encoder exactly that and write it into
the manifest. ``LowRankFusion`` wraps any encoders (raw input → (N, d_m)) with the deployed
low-rank fusion layer; its module layout (``encoders.<name>``, ``fusion``) is what the exported
graphs' node names carry, so an error can name the user's own module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from edgefusion.export.models.fusion import LMFFusion
from torch import nn

from edgefusion.errors import EdgefusionError
from edgefusion.modalities import STREAMS

NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
RESERVED = ("head", "monolithic", "present")
MIN_SIDE, MAX_SIDE = 8, 4096
MIN_RATE, MAX_RATE = 1000, 384_000
MAX_WINDOW_S = 10.0
MAX_RATE_HZ = 1000.0
CAMERA_HZ, AUDIO_WINDOWS_HZ = 30, 10

_DELIVERED: dict[str, dict[str, Any]] = {
    "rgb": {"source": "color stream, RGB order", "layout": "NCHW", "values": "0..255 as float32"},
    "depth": {"source": "depth aligned to the color stream", "units": "metres", "invalid": 0.0, "layout": "NCHW"},
    "audio": {
        "source": "mono microphone PCM",
        "values": "int16 counts as float32 (full scale 32767)",
        "window": "the last window_s seconds, ending at the tick's time",
    },
}


def check_name(name: Any, what: str = "modality name") -> str:
    """A modality name as the manifest allows it (spec.md's rules), or a one-line error."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or name in RESERVED:
        raise EdgefusionError(
            f"{what} {name!r} is not allowed: use 1 to 32 of a-z, 0-9, _ starting with a letter, "
            f"and not {', '.join(RESERVED)}"
        )
    return name


def _rate_hz(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_RATE_HZ:
        raise EdgefusionError(f"rate_hz {value!r} is not a number in (0, {MAX_RATE_HZ:g}]; give the fps or windows/s")
    return float(value)


def _side(what: str, value: Any) -> int:
    if type(value) is not int or not MIN_SIDE <= value <= MAX_SIDE:
        raise EdgefusionError(f"{what} {value!r} is not an integer from {MIN_SIDE} to {MAX_SIDE} pixels")
    return value


@dataclass(frozen=True)
class Modality:
    """The raw input the runtime delivers for one modality, batch axis left out (spec.md):
    rgb (3, H, W) 0..255, depth (1, H, W) metres with 0 = no data, audio (samples,) in int16 units."""

    sensor: str
    shape: tuple[int, ...]
    rate_hz: float
    sample_rate: int | None = None
    window_s: float | None = None
    preprocessing: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.sensor not in STREAMS:
            raise EdgefusionError(f"sensor {self.sensor!r} is not a stream; use Modality.rgb, .depth or .audio")

    @classmethod
    def rgb(cls, height: int, width: int, rate_hz: float = CAMERA_HZ, preprocessing=None) -> Modality:
        return cls._camera("rgb", 3, height, width, rate_hz, preprocessing)

    @classmethod
    def depth(cls, height: int, width: int, rate_hz: float = CAMERA_HZ, preprocessing=None) -> Modality:
        return cls._camera("depth", 1, height, width, rate_hz, preprocessing)

    @classmethod
    def _camera(cls, sensor, channels, height, width, rate_hz, preprocessing) -> Modality:
        shape = (channels, _side(f"{sensor} height", height), _side(f"{sensor} width", width))
        return cls(sensor, shape, _rate_hz(rate_hz), preprocessing={**_DELIVERED[sensor], **(preprocessing or {})})

    @classmethod
    def audio(
        cls, seconds: float, rate: int = 16_000, rate_hz: float = AUDIO_WINDOWS_HZ, preprocessing=None
    ) -> Modality:
        if type(rate) is not int or not MIN_RATE <= rate <= MAX_RATE:
            raise EdgefusionError(f"audio rate {rate!r} is not an integer from {MIN_RATE} to {MAX_RATE} Hz")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= MAX_WINDOW_S:
            raise EdgefusionError(f"audio seconds {seconds!r} is not a window length in (0, {MAX_WINDOW_S:g}] s")
        samples = round(rate * seconds)
        return cls(
            "audio",
            (samples,),
            _rate_hz(rate_hz),
            sample_rate=rate,
            window_s=float(seconds),
            preprocessing={**_DELIVERED["audio"], **(preprocessing or {})},
        )

    def example(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Random input of this shape in the delivered range (what the exporter traces and checks with)."""
        x = torch.rand(batch, *self.shape, generator=generator)
        if self.sensor == "rgb":
            return x * 255
        if self.sensor == "depth":
            return torch.where(x < 0.05, torch.zeros_like(x), x * 4)
        return (x - 0.5) * 2000

    def extremes(self) -> np.ndarray:
        """Inputs at the edges of what the runtime can deliver, where fp16 overflows first: for
        audio DC, a clipped square wave and clipped loud noise at int16 full scale; for cameras an
        empty frame and a saturated one (255, or z16's largest depth, 65.535 m)."""
        if self.sensor == "audio":
            n = self.shape[0]
            t = np.arange(n)
            noise = np.random.default_rng(0).standard_normal(n) * 60000
            rows = [np.full(n, 32767.0), np.where((t // 40) % 2 == 0, 32767.0, -32768.0), np.clip(noise, -32768, 32767)]
            return np.stack(rows).astype(np.float32)
        top = 255.0 if self.sensor == "rgb" else 65.535
        return np.stack([np.zeros(self.shape), np.full(self.shape, top)]).astype(np.float32)

    def manifest_entry(self, name: str, projection: tuple[int, ...]) -> dict:
        entry: dict[str, Any] = {
            "name": name,
            "sensor": self.sensor,
            "input": {"name": name, "shape": ["batch", *self.shape], "dtype": "float32"},
            "output": {"name": f"p_{name}", "shape": ["batch", *projection], "dtype": "float32"},
            "rate_hz": self.rate_hz,
        }
        if self.sensor == "audio":
            entry |= {"sample_rate": self.sample_rate, "window_s": self.window_s}
        return entry | {"preprocessing": dict(self.preprocessing)}


class LowRankFusion(nn.Module):
    """Low-rank multimodal fusion over any 1 to 3 encoders (dict order = modality order).

    ``encoders[name]`` maps the raw input the runtime delivers to (N, dims[name]); an absent
    modality's embedding is zero, so its projection is a learned constant the runtime caches.
    ``forward(inputs, present)`` takes a dict name → raw tensor and a presence mask (N, M).
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        dims: Mapping[str, int],
        n_classes: int,
        rank: int = 4,
        d_out: int = 32,
        hidden: int = 64,
    ):
        super().__init__()
        names = list(encoders)
        if not 1 <= len(names) <= len(STREAMS):
            raise EdgefusionError(f"give 1 to {len(STREAMS)} encoders (one per sensor stream), not {len(names)}")
        for name in names:
            check_name(name)
            if not isinstance(encoders[name], nn.Module):
                raise EdgefusionError(f"encoder {name!r} is a {type(encoders[name]).__name__}, not a torch nn.Module")
        if set(dims) != set(names):
            raise EdgefusionError(
                f"dims has keys {sorted(dims)}, but the encoders are {names}; give one dim per encoder"
            )
        for name in names:
            if type(dims[name]) is not int or dims[name] < 1:
                raise EdgefusionError(f"dims[{name!r}] is {dims[name]!r}; give the encoder's embedding size (an int)")
        for what, value in (("n_classes", n_classes), ("rank", rank), ("d_out", d_out), ("hidden", hidden)):
            if type(value) is not int or value < 1:
                raise EdgefusionError(f"{what} is {value!r}; give a positive integer")
        try:
            self.encoders = nn.ModuleDict(dict(encoders))
        except KeyError as err:  # a name that is a ModuleDict attribute ("keys", "update", ...)
            raise EdgefusionError(f"modality name clashes with a torch attribute ({err}); choose another") from None
        self.fusion = LMFFusion({m: dims[m] for m in names}, n_classes, rank=rank, d_out=d_out, hidden=hidden)

    @classmethod
    def from_parts(cls, encoders: nn.ModuleDict, fusion: LMFFusion) -> LowRankFusion:
        """A view of trained parts (the built-in model's encoders and fusion layer), sharing their weights."""
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.encoders = nn.ModuleDict({m: encoders[m] for m in fusion.names})
        model.fusion = fusion
        return model

    @property
    def names(self) -> tuple[str, ...]:
        return self.fusion.names

    @property
    def dims(self) -> dict[str, int]:
        return {m: lin.in_features for m, lin in self.fusion.proj.items()}

    @property
    def n_classes(self) -> int:
        return self.fusion.classifier[-1].out_features

    @property
    def projection_shape(self) -> tuple[int, int]:
        return self.fusion.rank, self.fusion.d_out

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: self.encoders[m](inputs[m]) for m in self.names}

    def forward(self, inputs: Mapping[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return self.fusion(self.embed(inputs), present)

    def project(self, name: str, h: torch.Tensor) -> torch.Tensor:
        return self.fusion.project(name, h)

    def head(self, *projections: torch.Tensor) -> torch.Tensor:
        return self.fusion.head(*projections)


def pattern_weights(n: int, probs: tuple[float, ...] | None = None) -> tuple[list[tuple[bool, ...]], list[float]]:
    """Every non-empty pattern of ``n`` modalities and its probability: ``probs[k]`` is the chance
    of a pattern with k sensors missing (k = 0 .. n-1), spread evenly over the patterns with that
    count. The default favours one-missing patterns (what a robot meets when a sensor dies)."""
    from edgefusion.modalities import all_patterns

    probs = probs or {1: (1.0,), 2: (0.4, 0.6), 3: (0.3, 0.6, 0.1)}[n]
    if len(probs) != n or any(not math.isfinite(p) or p < 0 for p in probs) or sum(probs) <= 0:
        raise EdgefusionError(f"probs {probs!r} must be {n} non-negative numbers (all present, one missing, ...)")
    patterns = all_patterns(n)
    missing = [n - sum(p) for p in patterns]
    weights = [probs[k] / missing.count(k) for k in missing]
    total = sum(weights)
    return patterns, [w / total for w in weights]


def random_presence(
    n: int, m: int, generator: torch.Generator | None = None, probs: tuple[float, ...] | None = None
) -> torch.Tensor:
    """A bool presence mask (n, m) for modality dropout in a training loop: one non-empty
    pattern per sample, drawn with ``pattern_weights(m, probs)``."""
    patterns, weights = pattern_weights(m, probs)
    idx = torch.multinomial(torch.tensor(weights), n, replacement=True, generator=generator)
    return torch.tensor(patterns, dtype=torch.bool)[idx]
