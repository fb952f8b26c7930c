"""The realistic example's encoders and the resize bench's graphs: shapes, TensorRT-parseable
ONNX, ONNX Runtime == PyTorch, and the in-graph resize picking the runtime's own pixels."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from edgefusion.export.onnx_export import graph_ops, trt_supported_ops  # noqa: E402

from bench.resize import area_matrix, area_reference, camera_frame, depth_frame, resize_alone  # noqa: E402
from edgefusion.sensors.frames import Resample  # noqa: E402
from examples.realistic.model import (  # noqa: E402
    DIMS,
    example_input,
    export_encoder,
    input_shapes,
    make_encoders,
    ort_session,
)


@pytest.fixture(scope="module")
def encoders():
    torch.manual_seed(0)
    return {m: e.eval() for m, e in make_encoders().items()}


def test_each_encoder_embeds_its_declared_input(encoders):
    assert list(encoders) == list(input_shapes()) == list(DIMS)
    with torch.no_grad():
        for name, enc in encoders.items():
            h = enc(example_input(name, batch=2))
            assert h.shape == (2, DIMS[name]) and torch.isfinite(h).all(), name


@pytest.mark.parametrize("name", ["rgb", "depth", "audio"])
def test_each_encoder_exports_to_opset_17_with_tensorrt_operators_only(encoders, name, tmp_path):
    path = export_encoder(encoders[name], name, tmp_path / f"{name}.onnx")
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == 17
    assert graph_ops(proto) <= trt_supported_ops(), graph_ops(proto) - trt_supported_ops()
    x = example_input(name, batch=3, seed=5)  # another batch size than the export's: the batch axis is dynamic
    with torch.no_grad():
        ref = encoders[name](x).numpy()
    out = ort_session(path).run(None, {name: x.numpy()})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


@pytest.mark.parametrize("src, dst", [((480, 640), (120, 160)), ((480, 640), (224, 224)), ((720, 1280), (224, 224))])
def test_the_in_graph_nearest_resize_takes_the_pixels_the_runtime_takes(src, dst):
    """The bench compares the paths' costs, so the in-graph nearest must be the host's nearest,
    also where the sizes do not divide (where float rounding could shift a row)."""
    z16 = depth_frame(src)
    host = Resample(src, dst).depth(z16, np.float32(1.0))
    graph = ort_session(resize_alone(1, src, dst, "nearest")).run(None, {"frame": z16[None, None].astype(np.float32)})
    np.testing.assert_array_equal(graph[0][0], host)


def test_the_area_reference_is_a_block_mean_where_the_sizes_divide():
    w = area_matrix(640, 224)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    frame = camera_frame((480, 640))
    host = Resample((480, 640), (120, 160)).rgb(frame)  # the runtime's block mean, rounded to whole steps
    assert np.abs(area_reference(frame, (120, 160)) - host).max() <= 0.5
