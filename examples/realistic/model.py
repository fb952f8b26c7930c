"""A fusion model at the size people deploy on a RealSense robot, written only against the public API.

    python -m examples.realistic.model [--runs 50] [--json]

Encoders (each raw input as the runtime delivers it -> (N, d); normalisation is inside, hence in
the exported graph):
- rgb (N, 3, 224, 224), 0..255: a MobileNetV2 at width 0.5 (inverted residuals: 1x1 expand, 3x3 depthwise,
  1x1 linear projection, BatchNorm, ReLU6), global average pool. ReLU6 exports as Clip, which
  TensorRT fuses into the convolution and which keeps INT8 ranges bounded.
- depth (N, 1, 120, 160), metres, 0 = no data: a small ResNet (basic residual blocks). The
  validity mask is a second input channel, so "no data" is never read as "very close".
- audio (N, 16000), int16 units: the package's log-mel front end (a framed DFT as a Conv, mel
  MatMul, log), then a depthwise-separable CNN (the keyword-spotting "DS-CNN" shape), averaged
  over time only (a word can start anywhere, its spectrum's layout matters).

No encoder casts: for fp16 the exporter casts at each weighted module's door, and the log-mel
front end is kept fp32 (``keep_fp32=("frontend",)``: its power spectrum would overflow fp16).

Run as a module, it prints each encoder's parameter count, exports each alone (opset 17, legacy
exporter), checks its operators against TensorRT's parser list, and times it in ONNX Runtime on
the CPU (batch 1, one thread).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections.abc import Callable, Hashable
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from edgefusion.export.models.encoders import LogMelFrontEnd
from torch import nn

RGB_HW = (224, 224)
DEPTH_HW = (120, 160)
AUDIO_RATE = 16000
AUDIO_SECONDS = 1.0
DIMS = {"rgb": 128, "depth": 96, "audio": 96}

# MobileNetV2's stages (expansion t, channels c, repeats n, first stride s), Sandler et al. 2018.
MOBILENET_V2 = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
K = TypeVar("K", bound=Hashable)


def _conv_bn(
    cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: nn.Module | None = None
) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act] if act is not None else []))


def _round8(x: float) -> int:
    """Channels rounded to a multiple of 8 (at least 8), as MobileNet does for the hardware."""
    return max(8, int(x + 4) // 8 * 8)


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t = 1), 3x3 depthwise, 1x1 linear projection; identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [_conv_bn(cin, hidden, 1, act=nn.ReLU6())]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6()), _conv_bn(hidden, cout, 1)]
        self.body = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.skip else self.body(x)


class MobileNetV2(nn.Module):
    """RGB (N, 3, H, W) in 0..255 -> (N, dim). Scaled with ImageNet's mean and std, so an
    ImageNet-pretrained MobileNetV2's weights would drop in (torchvision's layout, not its names)."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, dim: int = DIMS["rgb"], width: float = 0.5, last: int = 1280):
        super().__init__()
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("scale", (1 / (255 * std)).reshape(1, 3, 1, 1))
        self.register_buffer("shift", (-mean / std).reshape(1, 3, 1, 1))
        cin = _round8(32 * width)
        layers: list[nn.Module] = [_conv_bn(3, cin, 3, 2, act=nn.ReLU6())]
        for t, c, n, s in MOBILENET_V2:
            cout = _round8(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(_conv_bn(cin, last, 1, act=nn.ReLU6()))
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(last, dim)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = rgb * self.scale + self.shift
        return self.out(self.features(x).mean(dim=(2, 3)))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a skip (a 1x1 projection when the shape changes), He et al. 2016."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, 3, stride, act=nn.ReLU()), _conv_bn(cout, cout, 3))
        self.skip = nn.Identity() if stride == 1 and cin == cout else _conv_bn(cin, cout, 1, stride)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class DepthResNet(nn.Module):
    """Depth (N, 1, H, W) in metres, 0 = no data -> (N, dim).

    Input channels: centred depth where valid (0 elsewhere) and the validity mask. The last map
    (1/32 of the input, 4x5 at 120x160) is kept as a map, not pooled to one vector: a gesture is
    where the arm is relative to the body, which a global pool would erase."""

    def __init__(self, dim: int = DIMS["depth"], widths: tuple[int, ...] = (32, 64, 96, 128), in_hw=DEPTH_HW):
        super().__init__()
        # ResNet's stem (stride-2 conv, 3x3 max pool): the blocks run at 1/4 of the frame.
        layers: list[nn.Module] = [_conv_bn(2, widths[0], 5, 2, act=nn.ReLU()), nn.MaxPool2d(3, 2, 1)]
        cin = widths[0]
        for i, w in enumerate(widths):
            layers.append(BasicBlock(cin, w, 1 if i == 0 else 2))
            layers.append(BasicBlock(w, w, 1))
            cin = w
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            n_flat = self.features(torch.zeros(1, 2, *in_hw)).flatten(1).shape[1]
        self.out = nn.Linear(n_flat, dim)

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        valid = (depth > 0).to(depth.dtype)
        x = torch.cat([(depth - 2.0) * (1 / 1.5) * valid, valid], dim=1)
        return self.out(self.features(x).flatten(1))


class AudioDSCNN(nn.Module):
    """PCM (N, samples) in int16 units -> (N, dim): log-mel, BatchNorm, a DS-CNN (Zhang et al.,
    "Hello Edge", 2017), mean over time, a Linear over the frequency layout."""

    def __init__(self, dim: int = DIMS["audio"], rate: int = AUDIO_RATE, seconds: float = AUDIO_SECONDS):
        super().__init__()
        self.frontend = LogMelFrontEnd(sr=rate)
        self.norm = nn.BatchNorm2d(1)
        blocks: list[nn.Module] = [_conv_bn(1, 64, 3, 2, act=nn.ReLU())]
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1)):
            blocks += [_conv_bn(cin, cin, 3, stride, groups=cin, act=nn.ReLU()), _conv_bn(cin, cout, 1, act=nn.ReLU())]
            cin = cout
        self.features = nn.Sequential(*blocks)
        n_frames = self.frontend.n_frames(round(rate * seconds))
        with torch.no_grad():
            n_flat = self.features(torch.zeros(1, 1, self.frontend.n_mels, n_frames)).mean(dim=3).flatten(1).shape[1]
        self.out = nn.Linear(n_flat, dim)

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.frontend(pcm))
        return self.out(self.features(x).mean(dim=3).flatten(1))


def make_encoders() -> dict[str, nn.Module]:
    """The three encoders, keyed by modality name, in the bundle's order."""
    return {"rgb": MobileNetV2(), "depth": DepthResNet(), "audio": AudioDSCNN()}


def input_shapes() -> dict[str, tuple[int, ...]]:
    """Each encoder's raw input after the batch axis, as the runtime delivers it."""
    return {"rgb": (3, *RGB_HW), "depth": (1, *DEPTH_HW), "audio": (round(AUDIO_RATE * AUDIO_SECONDS),)}


def example_input(name: str, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Random input in the stream's units: 0..255 colour, 0.3..5 m depth with holes, speech-level PCM."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, *input_shapes()[name])
    if name == "rgb":
        return torch.rand(shape, generator=g) * 255
    if name == "depth":
        d = 0.3 + torch.rand(shape, generator=g) * 4.7
        return d * (torch.rand(shape, generator=g) > 0.1)
    return torch.randn(shape, generator=g) * 3000


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def export_encoder(encoder: nn.Module, name: str, path: Path, opset: int = 17) -> Path:
    """One encoder alone as ONNX (legacy exporter, dynamic batch), for checking and timing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice, every call
        torch.onnx.export(
            encoder.eval(),
            (example_input(name, batch=2),),
            str(path),
            opset_version=opset,
            dynamo=False,
            input_names=[name],
            output_names=[f"h_{name}"],
            dynamic_axes={name: {0: "batch"}, f"h_{name}": {0: "batch"}},
        )
    return path


def ort_session(path: Path | bytes):
    """An ONNX Runtime CPU session on one thread: a per-call cost comparable across machines' cores."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path) if isinstance(path, Path) else path, opts, providers=["CPUExecutionProvider"])


def median_cpu_ms(fns: dict[K, Callable[[], object]], runs: int, warmup: int = 3) -> dict[K, float]:
    """Median CPU time in ms of each ``fn()`` on this thread (ONNX Runtime with one thread computes
    on the caller's), so that other processes on a shared machine do not count; the calls go in
    turns, one of each per round, so that all of them meet the same cache and memory traffic."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[K, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t0 = time.thread_time()
            fn()
            times[k].append(time.thread_time() - t0)
    return {k: float(np.median(v) * 1000) for k, v in times.items()}


def check_encoders(runs: int = 50) -> dict[str, dict]:
    """Per encoder: parameters, output shape, operators (and any TensorRT cannot parse), ONNX
    Runtime == PyTorch, and ONNX Runtime's CPU time per call at batch 1 on one thread."""
    import onnx
    from edgefusion.export.onnx_export import graph_ops, trt_supported_ops

    allowed = trt_supported_ops()
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, enc in make_encoders().items():
            enc.eval()
            path = export_encoder(enc, name, Path(tmp) / f"{name}.onnx")
            proto = onnx.load(str(path))
            onnx.checker.check_model(proto, full_check=True)
            x = example_input(name, batch=1, seed=1)
            with torch.no_grad():
                ref = enc(x).numpy()
            sess = ort_session(path)
            feed = {name: x.numpy()}
            out = sess.run(None, feed)[0]
            ops = graph_ops(proto)
            report[name] = {
                "params": parameter_count(enc),
                "input": list(input_shapes()[name]),
                "output": list(out.shape[1:]),
                "ops": sorted(ops),
                "not_in_tensorrt": sorted(ops - allowed),
                "max_abs_diff_vs_torch": float(np.abs(out - ref).max()),
                "ort_cpu_ms": median_cpu_ms({name: partial(sess.run, None, feed)}, runs)[name],
            }
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed calls per encoder (median reported)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = check_encoders(args.runs)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{'encoder':8} {'input':>14} {'params':>10} {'out':>5} {'ORT CPU ms':>11}  ops outside TensorRT's list")
    for name, r in report.items():
        shape = "x".join(map(str, r["input"]))
        bad = ", ".join(r["not_in_tensorrt"]) or "none"
        print(f"{name:8} {shape:>14} {r['params']:>10,} {r['output'][0]:>5} {r['ort_cpu_ms']:>11.2f}  {bad}")
    print(f"{'total':8} {'':>14} {sum(r['params'] for r in report.values()):>10,}")


if __name__ == "__main__":
    main()
