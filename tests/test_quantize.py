"""INT8 QDQ: the structure TensorRT needs, the parts kept float, calibration on every pattern."""

import numpy as np
import pytest
from edgefusion.calibration.int8_set import CalibrationSet

from edgefusion.modalities import MODALITIES, all_patterns

onnx = pytest.importorskip("onnx")
pytest.importorskip("torch")

from edgefusion.export.graph_eval import session  # noqa: E402
from edgefusion.export.onnx_export import graph_ops, trt_supported_ops  # noqa: E402
from edgefusion.export.quantize import KEEP_FLOAT, QUANTIZED_OPS, quantize_graph  # noqa: E402


@pytest.fixture(scope="module")
def calib():
    from edgefusion.task import generate

    return CalibrationSet.from_batch(generate(seed=3, n=14), "test")


@pytest.fixture(scope="module")
def quantized(exported_lmf, calib, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8")
    fp32 = exported_lmf[1]["fp32"]
    return {g: quantize_graph(fp32[g], out / f"{g}.onnx", calib) for g in (*MODALITIES, "monolithic")}


def test_calibration_covers_every_presence_pattern(calib):
    seen = {tuple(bool(v) for v in row) for row in calib.present}
    assert seen == set(all_patterns(len(MODALITIES)))
    feeds = list(calib.batches(["rgb", "present"], batch_size=4))
    assert sum(len(f["rgb"]) for f in feeds) == len(calib) and set(feeds[0]) == {"rgb", "present"}


def test_calibration_fingerprint_follows_the_data(calib):
    other = CalibrationSet({m: a.copy() for m, a in calib.inputs.items()}, calib.present, "copy")
    assert other.sha256() == calib.sha256()
    other.inputs["audio"][0, 0] += 1
    assert other.sha256() != calib.sha256()


@pytest.mark.parametrize("graph", [*MODALITIES, "monolithic"])
def test_qdq_structure(quantized, graph):
    proto = onnx.load(str(quantized[graph]))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "nothing was quantized"
    for n in qdq:
        zero_point = inits[n.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), f"{n.name}: zero point must be int8 0"
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            assert inits[n.input[0]].dtype == np.int8, f"{n.name}: only int8 may be dequantized (no INT32 bias)"
    quantized_nodes = 0
    for n in proto.graph.node:
        if n.op_type not in QUANTIZED_OPS:
            continue
        fed_by_dq = [producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input[:2]]
        if any(part in n.name for part in KEEP_FLOAT):
            assert not any(fed_by_dq), f"{n.name} must stay float"
        else:
            assert all(fed_by_dq), f"{n.name} should be quantized"
            quantized_nodes += 1
    assert quantized_nodes >= 4
    assert graph_ops(proto) <= trt_supported_ops()


def test_int8_encoder_output_stays_close_to_fp32(exported_lmf, quantized, small_batch):
    fp32 = exported_lmf[1]["fp32"]
    for m in MODALITIES:
        feed = {m: getattr(small_batch, m)}
        ref = session(fp32[m]).run(None, feed)[0]
        got = session(quantized[m]).run(None, feed)[0]
        assert np.isfinite(got).all()
        assert np.abs(got - ref).max() <= 0.1 * np.abs(ref).max(), m
