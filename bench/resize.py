"""Where to resize a camera frame to the model's input: on the host, or inside the exported graph.

    python -m bench.resize [--runs 100] [--json]        (from the repository's root; needs torch, onnx)

For a RealSense colour frame (uint8 RGB, 480x640 and 720x1280) to the example model's 224x224
input (examples/realistic), and depth (z16, 480x640) to its 120x160 input, per frame on the CPU:
  host   what the runtime does today: ``edgefusion.sensors.frames.Resample`` (a block mean
         when the sizes divide, else nearest; nearest for depth) to float32 at model size, the
         sync's copy into the bound input buffer, then the encoder graph at model size;
  graph  the same encoder with an ONNX Resize at its front (opset 17, what TensorRT 8.6 parses),
         fed the full frame as float32 (the manifest's dtype): the host converts HWC uint8 to
         CHW float32 (z16 to metres) at full size, the sync copies that, the graph resizes:
         ``linear``, or ``pool_linear`` (an integer AveragePool, then linear for the rest);
  uint8  for information: the graph fed the camera's own uint8 HWC buffer (Transpose, Cast and
         Resize in the graph), so the host converts nothing and copies a quarter of the bytes.
Times are the calling thread's CPU time (so other work on a shared machine does not count),
medians of ``--runs`` rounds taking every step in turn (ONNX Runtime CPU, one thread, which
computes on the caller's thread); encoder weights are the example's initial ones (cost does not
depend on them). Numerics: each resize against an exact area (box-filter) average of the same
frame, in 0..255 units, and against the host path; the resize modes ONNX offers are compared
alone too (antialias needs opset 18; cubic is not in TensorRT's parser list). The frames are 1/f
noise (the spectrum of natural images: detail at every scale, so aliasing shows as it would on a
real scene), depth with 5 % holes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from edgefusion.export.onnx_export import graph_ops, trt_supported_ops
from onnx import TensorProto, helper, numpy_helper

from edgefusion.sensors.frames import Resample
from examples.realistic.model import DEPTH_HW, RGB_HW, export_encoder, make_encoders, median_cpu_ms, ort_session

DEPTH_SCALE = np.float32(0.001)  # a D4xx's z16 unit: 1 mm
RGB_SOURCES = ((480, 640), (720, 1280))
DEPTH_SOURCES = ((480, 640),)
# mode name -> (Resize attributes, opset). half_pixel is torch's align_corners=False; for nearest
# with round_prefer_ceil it picks source pixel floor((i + 0.5) * scale), the runtime's own choice.
MODES: dict[str, tuple[dict[str, Any], int]] = {
    "nearest": (
        {"mode": "nearest", "coordinate_transformation_mode": "half_pixel", "nearest_mode": "round_prefer_ceil"},
        17,
    ),
    "linear": ({"mode": "linear", "coordinate_transformation_mode": "half_pixel"}, 17),
    # An integer box filter (AveragePool, kernel = stride = floor(src / dst) per axis), then linear
    # for the rest (a factor under 2, so little left to alias): a prefilter TensorRT 8.6 runs.
    "pool_linear": ({"mode": "linear", "coordinate_transformation_mode": "half_pixel"}, 17),
    "linear_aa": ({"mode": "linear", "coordinate_transformation_mode": "half_pixel", "antialias": 1}, 18),
    "cubic_aa": ({"mode": "cubic", "coordinate_transformation_mode": "half_pixel", "antialias": 1}, 18),
}


def camera_frame(hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 with a 1/f amplitude spectrum per channel, channels correlated as in a scene."""
    rng = np.random.default_rng(seed)
    h, w = hw
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.rfftfreq(w), indexing="ij"))
    f[0, 0] = 1.0
    common = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((h, w))) / f, s=(h, w))
    chans = [0.7 * common + 0.3 * np.fft.irfft2(np.fft.rfft2(rng.standard_normal((h, w))) / f, s=(h, w)) for _ in "rgb"]
    img = np.stack(chans, axis=-1)
    img = (img - img.mean()) / (4 * img.std())
    return np.clip(np.rint((img + 0.5) * 255), 0, 255).astype(np.uint8)


def depth_frame(hw: tuple[int, int], seed: int = 1) -> np.ndarray:
    """(H, W) uint16 z16 in mm: smooth surfaces 0.5..4.5 m, 5 % holes (0)."""
    rng = np.random.default_rng(seed)
    metres = 0.5 + 4.0 * camera_frame(hw, seed)[..., 0] / 255.0
    return np.where(rng.random(hw) < 0.05, 0, np.rint(metres * 1000)).astype(np.uint16)


def area_matrix(n_src: int, n_dst: int) -> np.ndarray:
    """(n_dst, n_src) weights of an exact area average: each output pixel is the mean of the source
    pixels under its footprint, fractional ones by their overlap (OpenCV's INTER_AREA)."""
    s = n_src / n_dst
    lo, hi = np.arange(n_dst)[:, None] * s, (np.arange(n_dst)[:, None] + 1) * s
    j = np.arange(n_src)[None, :]
    return np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None) / s


def area_reference(frame: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """(3, h, w) float64: the alias-free target every resize is compared with."""
    wy, wx = area_matrix(frame.shape[0], out_hw[0]), area_matrix(frame.shape[1], out_hw[1])
    return np.stack([wy @ frame[..., c].astype(np.float64) @ wx.T for c in range(frame.shape[2])])


def _const(name: str, values, dtype=np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def resize_prefix(src: str, dst: str, src_hw, out_hw, mode: str, uint8_hwc: bool):
    """Nodes and initializers taking graph input ``src`` (float32 NCHW, or uint8 NHWC) to ``dst``
    (float32 NCHW at ``out_hw``), with a dynamic batch: the Resize's sizes are the input's N, C
    and the model's H, W (opset 17 has no ``axes`` attribute)."""
    nodes, inits, x = [], [_const("rz_start", [0]), _const("rz_end", [2]), _const("rz_hw", out_hw)], src
    if uint8_hwc:
        nodes += [
            helper.make_node("Transpose", [x], ["rz_nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Cast", ["rz_nchw"], ["rz_float"], to=TensorProto.FLOAT),
        ]
        x = "rz_float"
    kernel = [a // b for a, b in zip(src_hw, out_hw)]
    if mode == "pool_linear" and max(kernel) > 1:
        nodes.append(helper.make_node("AveragePool", [x], ["rz_pooled"], kernel_shape=kernel, strides=kernel))
        x = "rz_pooled"
    nodes += [
        helper.make_node("Shape", [x], ["rz_shape"]),
        helper.make_node("Slice", ["rz_shape", "rz_start", "rz_end"], ["rz_nc"]),
        helper.make_node("Concat", ["rz_nc", "rz_hw"], ["rz_sizes"], axis=0),
        helper.make_node("Resize", [x, "", "", "rz_sizes"], [dst], **MODES[mode][0]),
    ]
    return nodes, inits


def _frame_input(name: str, channels: int, src_hw: tuple[int, int], uint8_hwc: bool) -> onnx.ValueInfoProto:
    if uint8_hwc:
        return helper.make_tensor_value_info(name, TensorProto.UINT8, ["batch", *src_hw, channels])
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", channels, *src_hw])


def resize_alone(channels: int, src_hw, out_hw, mode: str, uint8_hwc: bool = False) -> bytes:
    """A graph that only resizes, at the opset its mode needs."""
    nodes, inits = resize_prefix("frame", "resized", src_hw, out_hw, mode, uint8_hwc)
    out = helper.make_tensor_value_info("resized", TensorProto.FLOAT, ["batch", channels, *out_hw])
    graph = helper.make_graph(nodes, "resize", [_frame_input("frame", channels, src_hw, uint8_hwc)], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", MODES[mode][1])])
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def with_resize(encoder: onnx.ModelProto, channels: int, src_hw, out_hw, mode: str, uint8_hwc: bool) -> bytes:
    """The encoder graph with the resize in front: its input becomes the full frame. Refused if an
    operator is outside TensorRT's parser list, as the exporter would."""
    model = onnx.ModelProto()
    model.CopyFrom(encoder)
    g = model.graph
    old = g.input[0].name
    nodes, inits = resize_prefix("frame", old, src_hw, out_hw, mode, uint8_hwc)
    g.input.pop()
    g.input.append(_frame_input("frame", channels, src_hw, uint8_hwc))
    rest = list(g.node)
    del g.node[:]
    g.node.extend(nodes + rest)
    g.initializer.extend(inits)
    onnx.checker.check_model(model, full_check=True)
    outside = graph_ops(model) - trt_supported_ops()
    if outside:
        raise SystemExit(f"the in-graph resize uses operators outside TensorRT's list: {', '.join(sorted(outside))}")
    return model.SerializeToString()


def _run(sess, x: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _diffs(img: np.ndarray, area: np.ndarray, host: np.ndarray) -> dict[str, float]:
    return {
        "mean_abs_vs_area": round(float(np.abs(img - area).mean()), 3),
        "max_abs_vs_area": round(float(np.abs(img - area).max()), 1),
        "mean_abs_vs_host": round(float(np.abs(img - host).mean()), 3),
    }


class _Path:
    """One way to bring a frame to the encoder: the host's work, the copy into the bound input
    buffer (what the sync does with each fresh frame), the graph, and the image the encoder sees."""

    def __init__(self, label: str, host, model_input: np.ndarray, sess, image: np.ndarray):
        self.label, self.image = label, image
        self.bound = np.empty_like(model_input)
        self.steps = {
            "host_ms": host,
            "copy_ms": lambda: np.copyto(self.bound, model_input),
            "graph_ms": lambda: _run(sess, self.bound),
        }


def _measure(paths: dict[str, _Path], runs: int) -> dict[str, dict]:
    """Every path's steps timed in turns, so that each sees the same load."""
    fns = {(name, step): fn for name, p in paths.items() for step, fn in p.steps.items() if fn is not None}
    ms = median_cpu_ms(fns, runs)
    out = {}
    for name, p in paths.items():
        row: dict[str, Any] = {"resample": p.label, "bytes": int(p.bound.nbytes)}
        row.update({step: round(ms.get((name, step), 0.0), 3) for step in p.steps})
        row["total_ms"] = round(row["host_ms"] + row["copy_ms"] + row["graph_ms"], 3)
        out[name] = row
    return out


def bench_rgb(encoder: onnx.ModelProto, src_hw, runs: int) -> dict:
    frame = camera_frame(src_hw)
    resample = Resample(src_hw, RGB_HW)
    host_img = resample.rgb(frame)
    area = area_reference(frame, RGB_HW)
    full = np.empty((1, 3, *src_hw), np.float32)

    def to_float() -> None:
        np.copyto(full[0], frame.transpose(2, 0, 1))

    to_float()
    alone = {mode: ort_session(resize_alone(3, src_hw, RGB_HW, mode)) for mode in MODES}
    resized = {mode: _run(sess, full)[0] for mode, sess in alone.items()}
    paths = {
        "host": _Path(
            "block mean" if resample.block is not None else "nearest",
            lambda: resample.rgb(frame),
            host_img[None],
            ort_session(encoder.SerializeToString()),
            host_img,
        ),
    }
    for mode in ("linear", "pool_linear"):
        sess = ort_session(with_resize(encoder, 3, src_hw, RGB_HW, mode, uint8_hwc=False))
        paths[f"graph_{mode}"] = _Path(f"Resize {mode} (opset 17)", to_float, full, sess, resized[mode])
    sess = ort_session(with_resize(encoder, 3, src_hw, RGB_HW, "pool_linear", uint8_hwc=True))
    paths["uint8_pool_linear"] = _Path("Transpose, Cast, pool_linear", None, frame[None], sess, resized["pool_linear"])
    rows = _measure(paths, runs)
    for name, p in paths.items():
        rows[name].update(_diffs(p.image, area, host_img))
    ms = median_cpu_ms({mode: partial(_run, sess, full) for mode, sess in alone.items()}, runs)
    modes = {m: {"opset": MODES[m][1], "ms": round(ms[m], 3), **_diffs(resized[m], area, host_img)} for m in MODES}
    return {"stream": "rgb", "src": list(src_hw), "dst": list(RGB_HW), "paths": rows, "resize_modes": modes}


def bench_depth(encoder: onnx.ModelProto, src_hw, runs: int) -> dict:
    z16 = depth_frame(src_hw)
    resample = Resample(src_hw, DEPTH_HW)
    host_img = resample.depth(z16, DEPTH_SCALE)
    full = np.empty((1, 1, *src_hw), np.float32)

    def to_metres() -> None:
        np.multiply(z16, DEPTH_SCALE, out=full[0, 0])

    to_metres()
    graph = ort_session(with_resize(encoder, 1, src_hw, DEPTH_HW, "nearest", uint8_hwc=False))
    paths = {
        "host": _Path(
            "nearest",
            lambda: resample.depth(z16, DEPTH_SCALE),
            host_img[None],
            ort_session(encoder.SerializeToString()),
            host_img,
        ),
        "graph_nearest": _Path(
            "Resize nearest (opset 17)",
            to_metres,
            full,
            graph,
            _run(ort_session(resize_alone(1, src_hw, DEPTH_HW, "nearest")), full)[0],
        ),
    }
    rows = _measure(paths, runs)
    for name, p in paths.items():
        rows[name]["max_abs_vs_host_m"] = float(np.abs(p.image - host_img).max())
        rows[name]["pixels_differing"] = int((p.image != host_img).sum())
    return {"stream": "depth", "src": list(src_hw), "dst": list(DEPTH_HW), "paths": rows}


def run(runs: int) -> dict:
    encoders = make_encoders()
    with tempfile.TemporaryDirectory() as tmp:
        protos = {m: onnx.load(str(export_encoder(encoders[m], m, Path(tmp) / f"{m}.onnx"))) for m in ("rgb", "depth")}
    results = [bench_rgb(protos["rgb"], hw, runs) for hw in RGB_SOURCES]
    results += [bench_depth(protos["depth"], hw, runs) for hw in DEPTH_SOURCES]
    return {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_avg_1min": round(os.getloadavg()[0], 2),
            "onnxruntime": ort.__version__,
            "threads": 1,
            "runs": runs,
        },
        "results": results,
    }


def print_table(report: dict) -> None:
    m = report["machine"]
    print(
        f"ONNX Runtime {m['onnxruntime']} CPU, 1 thread, CPU time, median of {m['runs']} rounds; "
        f"load {m['load_avg_1min']} on {m['cores']} cores. ms per frame; |d|: mean |difference| in 0..255"
    )
    print(
        f"{'stream':6} {'frame':>9} {'path':17} {'host':>6} {'copy':>6} {'graph':>6} {'total':>6} {'bytes':>10} "
        f"{'|d| area':>8} {'|d| host':>8}  resample"
    )
    for r in report["results"]:
        frame = "x".join(map(str, r["src"]))
        for name, p in r["paths"].items():
            if "mean_abs_vs_area" in p:
                diffs = f"{p['mean_abs_vs_area']:8.2f} {p['mean_abs_vs_host']:8.2f}"
            else:
                diffs = f"{'':8} {p['pixels_differing']:>6} px"
            print(
                f"{r['stream']:6} {frame:>9} {name:17} {p['host_ms']:6.2f} {p['copy_ms']:6.2f} {p['graph_ms']:6.2f} "
                f"{p['total_ms']:6.2f} {p['bytes']:>10,} {diffs}  {p['resample']}"
            )
    print("\nResize alone (float32 NCHW in): ms, and mean |difference| against an exact area average and the host:")
    for r in report["results"]:
        frame = "x".join(map(str, r["src"]))
        for mode, v in r.get("resize_modes", {}).items():
            print(
                f"  {frame:>9} {mode:11} opset {v['opset']}  {v['ms']:6.2f} ms  |d| area {v['mean_abs_vs_area']:5.2f}"
                f" (max {v['max_abs_vs_area']:5.1f})  |d| host {v['mean_abs_vs_host']:5.2f}"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="timed calls per measurement (median reported)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    report = run(args.runs)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
