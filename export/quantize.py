"""INT8 with explicit Q/DQ (what TensorRT 10 builds from, and ONNX Runtime can check on a CPU).

Only the encoders' Conv/Gemm/MatMul are quantized. Left in float on purpose (notes/export.md):
the audio front end (its power spectrum spans ~1e-10..1e4, far beyond 256 levels) and the fusion
layers (LMF multiplies three projections: their relative error multiplies too, and the head's
logit range is set by all-present inputs, so missing-sensor logits collapse to a few levels).
Symmetric int8, per-channel weights, zero points 0 and float biases (no INT32 bias
DequantizeLinear, which TensorRT 8.x's parser rejects).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx
from edgefusion.calibration.int8_set import CalibrationSet
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
# Node-name fragments of the parts that stay float (module paths in the exported graphs).
KEEP_FLOAT = ("/frontend/", "/fusion/")


class _Reader(CalibrationDataReader):
    def __init__(self, calib: CalibrationSet, input_names: list[str]):
        self._batches = calib.batches(input_names)

    def get_next(self):
        return next(self._batches, None)


def built_in_kept_float(node_name: str) -> bool:
    """The built-in model's float parts, by node name."""
    return any(part in node_name for part in KEEP_FLOAT)


def nodes_to_quantize(model: onnx.ModelProto, keep_float: Callable[[str], bool] = built_in_kept_float) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and not keep_float(n.name)]


def quantize_graph(
    fp32_path: Path, out_path: Path, calib: CalibrationSet, keep_float: Callable[[str], bool] = built_in_kept_float
) -> Path:
    """An int8 QDQ copy of one fp32 graph, calibrated (MinMax) on ``calib``; the nodes for whose
    names ``keep_float`` is true stay float."""
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        names = nodes_to_quantize(model, keep_float)
        inputs = [i.name for i in model.graph.input]
        logging.getLogger("onnxruntime").setLevel(logging.WARNING)
        quantize_static(
            str(pre),
            str(out_path),
            _Reader(calib, inputs),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_quantize=names,
            op_types_to_quantize=list(QUANTIZED_OPS),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,
                "AddQDQPairToWeight": True,
                "DedicatedQDQPair": True,
            },
        )
    onnx.checker.check_model(onnx.load(str(out_path)), full_check=True)
    return out_path
