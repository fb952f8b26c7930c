"""Format-2 bundles of any modality set, built without torch: tiny ONNX graphs from ``onnx.helper``.

    from tiny_bundle import make_bundle
    root = make_bundle(tmp_path / "b", [("depth", "depth", (1, 96, 128)), ("mic", "audio", (8000,), 16000, 0.5)],
                       labels=["left", "right", "up"])

Each modality is ``(name, sensor, shape)`` or, for audio, ``(name, "audio", (samples,), sample_rate, window_s)``;
``shape`` is the input's after the batch axis. The model is a real (if minute) low-rank fusion, so
its outputs depend on the inputs: encoder m maps its input to one feature f_m (its mean, scaled
to about 0..1 by the stream's range), then to p_m = reshape(f_m · W_m + b_m) of shape (RANK, D_OUT);
an absent modality's projection is b_m (f_m = 0, as in LMF). The head multiplies the projections,
sums over the rank, and gives logits = Σ · W_h + b_h and their softmax. The monolithic graph is the
same with f_m multiplied by the presence column, so split == monolithic. Weights come from
``seed``. ``precisions`` beyond fp32 reuse the fp32 files (the manifest allows it); the bundle is
written by ``edgefusion.bundle.write_bundle``, so it is one the loader accepts.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgefusion.bundle import write_bundle

RANK, D_OUT = 2, 4
OPSET = 17
# Scale of each stream's values (spec: rgb 0..255, depth metres, audio int16 units), so features are ~0..1.
SCALE = {"rgb": 255.0, "depth": 10.0, "audio": 32767.0}
RATE_HZ = {"rgb": 30, "depth": 30, "audio": 10}


def make_bundle(
    path: str | Path,
    modalities: Sequence[tuple] = (("rgb", "rgb", (3, 48, 64)), ("depth", "depth", (1, 48, 64))),
    labels: Sequence[str] = ("yes", "no", "maybe"),
    precisions: Sequence[str] = ("fp32",),
    seed: int = 0,
    name: str = "tiny",
    **manifest,
) -> Path:
    """Write a bundle at ``path`` (which must not exist or be an empty folder) and return ``path``.

    ``manifest``: further top-level manifest entries, e.g. ``accuracy={"heldout": {"task_seed": 2}}``."""
    rng = np.random.default_rng(seed)
    specs = [_spec(m) for m in modalities]
    weights = {s["name"]: _encoder_weights(rng) for s in specs}
    head_w = rng.standard_normal((D_OUT, len(labels))).astype(np.float32)
    head_b = rng.standard_normal(len(labels)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        files = {}
        for s in specs:
            files[f"fp32/{s['name']}.onnx"] = _save(_encoder(s, weights[s["name"]]), src / f"{s['name']}.onnx")
        files["fp32/head.onnx"] = _save(_head(specs, head_w, head_b), src / "head.onnx")
        files["fp32/monolithic.onnx"] = _save(_monolithic(specs, weights, head_w, head_b), src / "monolithic.onnx")
        files["fp32/absent.npz"] = src / "absent.npz"
        np.savez(files["fp32/absent.npz"], **{n: b.reshape(RANK, D_OUT) for n, (_, b) in weights.items()})
        graphs = {s["name"]: f"fp32/{s['name']}.onnx" for s in specs} | {"head": "fp32/head.onnx"}
        variants = {p: {"graphs": dict(graphs), "absent": "fp32/absent.npz"} for p in precisions}
        variants.setdefault("fp32", {"graphs": dict(graphs), "absent": "fp32/absent.npz"})
        variants["fp32"]["graphs"]["monolithic"] = "fp32/monolithic.onnx"
        body = {
            "name": name,
            "labels": list(labels),
            "modalities": [_entry(s) for s in specs],
            "head": {"inputs": [f"p_{s['name']}" for s in specs], "outputs": ["logits", "probs"]},
            "monolithic": {"inputs": [s["name"] for s in specs] + ["present"], "outputs": ["logits", "probs"]},
            "variants": variants,
            "fusion": {"kind": "lmf", "rank": RANK, "d_out": D_OUT},
            "training": {"note": "untrained: tests/tiny_bundle.py"},
            **manifest,
        }
        return write_bundle(path, files, body)


def _spec(m: tuple) -> dict:
    name, sensor, shape, *audio = m
    spec = {"name": name, "sensor": sensor, "shape": tuple(shape)}
    if audio:
        spec["sample_rate"], spec["window_s"] = audio
    return spec


def _entry(s: dict) -> dict:
    entry = {
        "name": s["name"],
        "sensor": s["sensor"],
        "input": {"name": s["name"], "shape": ["batch", *s["shape"]], "dtype": "float32"},
        "output": {"name": f"p_{s['name']}", "shape": ["batch", RANK, D_OUT], "dtype": "float32"},
        "rate_hz": RATE_HZ[s["sensor"]],
    }
    if "sample_rate" in s:
        entry |= {"sample_rate": s["sample_rate"], "window_s": s["window_s"]}
    return entry


def _encoder_weights(rng) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal((1, RANK * D_OUT)).astype(np.float32), rng.standard_normal(RANK * D_OUT).astype(
        np.float32
    )


def _feature_nodes(s: dict, x: str, out: str, init: list) -> list:
    """``out`` (N, 1) = mean of input ``x`` over everything but the batch axis, over the stream's scale."""
    p = s["name"]
    init.append(numpy_helper.from_array(np.array(1.0 / SCALE[s["sensor"]], np.float32), f"{p}_scale"))
    return [
        helper.make_node("Flatten", [x], [f"{p}_flat"], axis=1),
        helper.make_node("ReduceMean", [f"{p}_flat"], [f"{p}_mean"], axes=[1], keepdims=1),
        helper.make_node("Mul", [f"{p}_mean", f"{p}_scale"], [out]),
    ]


def _projection_nodes(s: dict, feature: str, out: str, w: tuple, init: list) -> list:
    """``out`` (N, RANK, D_OUT) = reshape(feature · W + b)."""
    p = s["name"]
    init += [
        numpy_helper.from_array(w[0], f"{p}_W"),
        numpy_helper.from_array(w[1], f"{p}_b"),
        numpy_helper.from_array(np.array([-1, RANK, D_OUT], np.int64), f"{p}_shape"),
    ]
    return [
        helper.make_node("MatMul", [feature, f"{p}_W"], [f"{p}_mm"]),
        helper.make_node("Add", [f"{p}_mm", f"{p}_b"], [f"{p}_flatproj"]),
        helper.make_node("Reshape", [f"{p}_flatproj", f"{p}_shape"], [out]),
    ]


def _fusion_nodes(projections: list[str], head_w, head_b, init: list) -> list:
    init += [
        numpy_helper.from_array(np.array([1], np.int64), "head_axes"),
        numpy_helper.from_array(head_w, "head_W"),
        numpy_helper.from_array(head_b, "head_b"),
    ]
    nodes, product = [], projections[0]
    for i, p in enumerate(projections[1:]):
        nodes.append(helper.make_node("Mul", [product, p], [f"head_prod{i}"]))
        product = f"head_prod{i}"
    return nodes + [
        helper.make_node("ReduceSum", [product, "head_axes"], ["head_sum"], keepdims=0),
        helper.make_node("MatMul", ["head_sum", "head_W"], ["head_mm"]),
        helper.make_node("Add", ["head_mm", "head_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]


def _tensor(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape])


def _model(nodes, inputs, outputs, init) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _encoder(s: dict, w) -> onnx.ModelProto:
    init: list = []
    nodes = _feature_nodes(s, s["name"], "feature", init) + _projection_nodes(s, "feature", f"p_{s['name']}", w, init)
    return _model(nodes, [_tensor(s["name"], s["shape"])], [_tensor(f"p_{s['name']}", (RANK, D_OUT))], init)


def _head(specs, head_w, head_b) -> onnx.ModelProto:
    init: list = []
    names = [f"p_{s['name']}" for s in specs]
    nodes = _fusion_nodes(names, head_w, head_b, init)
    outputs = [_tensor("logits", (len(head_b),)), _tensor("probs", (len(head_b),))]
    return _model(nodes, [_tensor(n, (RANK, D_OUT)) for n in names], outputs, init)


def _monolithic(specs, weights, head_w, head_b) -> onnx.ModelProto:
    init: list = []
    nodes = []
    for i, s in enumerate(specs):
        p = s["name"]
        init += [numpy_helper.from_array(np.array([v], np.int64), f"{p}_{k}") for k, v in (("i", i), ("j", i + 1))]
        init.append(numpy_helper.from_array(np.array([1], np.int64), f"{p}_axis"))
        nodes += _feature_nodes(s, p, f"{p}_feature", init)
        nodes += [
            helper.make_node("Slice", ["present", f"{p}_i", f"{p}_j", f"{p}_axis"], [f"{p}_present"]),
            helper.make_node("Mul", [f"{p}_feature", f"{p}_present"], [f"{p}_kept"]),
        ]
        nodes += _projection_nodes(s, f"{p}_kept", f"{p}_proj", weights[p], init)
    nodes += _fusion_nodes([f"{s['name']}_proj" for s in specs], head_w, head_b, init)
    inputs = [_tensor(s["name"], s["shape"]) for s in specs] + [_tensor("present", (len(specs),))]
    outputs = [_tensor("logits", (len(head_b),)), _tensor("probs", (len(head_b),))]
    return _model(nodes, inputs, outputs, init)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path
