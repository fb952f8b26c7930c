"""ONNX export: opset, op allow-list, dynamic batch, ONNX Runtime == PyTorch, split == monolithic, fp16."""

import numpy as np
import pytest

from edgefusion.modalities import MODALITIES, all_patterns, pattern_name

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from edgefusion.export.compare import full_scale_audio  # noqa: E402
from edgefusion.export.graph_eval import SplitRunner, monolithic_logits, session  # noqa: E402
from edgefusion.export.models.model import to_fp16  # noqa: E402
from edgefusion.export.onnx_export import OPSET, TRT_OPS_FILE, graph_ops, trt_supported_ops  # noqa: E402


def _torch_logits(model, batch, present):
    mask = torch.tensor([present] * len(batch), dtype=torch.float32)
    with torch.no_grad():
        args = [torch.from_numpy(getattr(batch, m)) for m in MODALITIES]
        return model(*args, mask).float().numpy()


def _graphs(exported, precision):
    return [p for name, p in exported[precision].items() if name != "absent"]


def test_the_op_list_ships_in_the_package_and_reads_as_operators():
    """The exporter's allow-list is package data (found in a wheel or a clone, nothing beside it)
    and parses to operator names: the ones our graphs use, not the ones TensorRT 8.6 lacks."""
    from importlib.resources import files

    packaged = files("edgefusion.export") / "tensorrt_onnx_ops.txt"
    assert packaged.read_text() == TRT_OPS_FILE.read_text()
    ops = trt_supported_ops()
    assert {"Conv", "Gemm", "MatMul", "QuantizeLinear", "DequantizeLinear"} <= ops
    assert not {"STFT", "DFT"} & ops and all(op.isidentifier() for op in ops)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_graphs_are_opset_17_checker_clean_and_tensorrt_parsable(exported_lmf, precision):
    allowed = trt_supported_ops()
    graphs = _graphs(exported_lmf[1], precision)
    assert {p.stem for p in graphs} == {*MODALITIES, "head", "monolithic"}
    for path in graphs:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
        assert all(o.version <= OPSET for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        assert graph_ops(proto) <= allowed, f"{path.name}: {graph_ops(proto) - allowed}"
        assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_op_check_catches_an_unsupported_operator(tmp_path):
    """The allow-list check itself must be able to fail: STFT is what torch.stft would export."""
    node = onnx.helper.make_node("STFT", ["x", "step"], ["y"])
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16000, 1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.helper.make_tensor("step", onnx.TensorProto.INT64, [], [160])],
    )
    assert "STFT" in graph_ops(onnx.helper.make_model(graph)) - trt_supported_ops()


@pytest.mark.parametrize("batch_size", [1, 6])
def test_onnxruntime_matches_pytorch(exported_lmf, small_batch, batch_size):
    model, exported = exported_lmf
    batch = small_batch
    from edgefusion.task import TaskBatch

    sub = TaskBatch(**{f: getattr(batch, f)[:batch_size] for f in TaskBatch.__dataclass_fields__})
    for present in all_patterns(len(MODALITIES)):
        ref = _torch_logits(model, sub, present)
        got = monolithic_logits(exported["fp32"]["monolithic"], sub, [present])[pattern_name(MODALITIES, present)]
        assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_split_graphs_compose_to_the_monolithic_graph(exported_lmf, small_batch):
    _, exported = exported_lmf
    fp32 = exported["fp32"]
    with np.load(fp32["absent"]) as z:
        absent = {m: z[m] for m in MODALITIES}
    runner = SplitRunner(fp32, absent)
    proj = runner.projections(small_batch)
    for present in all_patterns(len(MODALITIES)):
        split = runner.logits(proj, present)
        mono = monolithic_logits(fp32["monolithic"], small_batch, [present])[pattern_name(MODALITIES, present)]
        assert np.abs(split - mono).max() <= 1e-5 * np.abs(mono).max(), present


def test_absent_projection_is_the_encoder_graph_output_for_zero_embedding(exported_lmf):
    """What the runtime feeds for a missing sensor equals the model's projection of h = 0."""
    model, exported = exported_lmf
    with np.load(exported["fp32"]["absent"]) as z:
        for m in MODALITIES:
            with torch.no_grad():
                ref = model.fusion.project(m, torch.zeros(1, model.config.dim))[0].numpy()
            np.testing.assert_allclose(z[m], ref, rtol=0, atol=1e-7)


def test_fp16_graph_keeps_the_audio_front_end_in_fp32(exported_lmf):
    proto = onnx.load(str(exported_lmf[1]["fp16"]["audio"]))
    inits = {i.name: i for i in proto.graph.initializer}
    dtypes = {}
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            weight = next(inits[i] for i in node.input if i in inits)
            dtypes[node.name] = weight.data_type
    front = {n: t for n, t in dtypes.items() if "/frontend/" in n}
    body = {n: t for n, t in dtypes.items() if "/frontend/" not in n}
    assert front and all(t == onnx.TensorProto.FLOAT for t in front.values())
    assert body and all(t == onnx.TensorProto.FLOAT16 for t in body.values())


def test_fp16_full_scale_audio_stays_finite_in_true_fp16_and_in_the_graph(exported_lmf):
    model, exported = exported_lmf
    audio = full_scale_audio()
    with torch.no_grad():
        h = to_fp16(model).encoders["audio"](torch.from_numpy(audio)).float().numpy()
    p = session(exported["fp16"]["audio"]).run(None, {"audio": audio})[0]
    assert np.isfinite(h).all() and np.isfinite(p).all()
    # The same input without in-graph normalisation overflows fp16: the guard is what saves it.
    x = torch.from_numpy(audio[:1]).half()
    front = model.encoders["audio"].frontend
    with torch.no_grad():
        spec = torch.nn.functional.conv2d(x[:, None, None, :], front.dft.weight.half(), stride=(1, front.hop))
        assert not torch.isfinite(spec * spec).all()


def test_fp16_graph_matches_true_fp16_arithmetic(exported_lmf, small_batch):
    model, exported = exported_lmf
    half = to_fp16(model)
    present = (True, True, True)
    ref = _torch_logits(half, small_batch, present)
    got = monolithic_logits(exported["fp16"]["monolithic"], small_batch, [present])[pattern_name(MODALITIES, present)]
    assert np.abs(got - ref).max() <= 2e-2 * max(1.0, np.abs(ref).max())
