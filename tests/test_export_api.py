"""The public export API on a user's own model (tests/export_user_model.py): a format-2 bundle the
runtime loads, benches and describes; split == monolithic, fp16 without casts in the user's code,
INT8, and one-line refusals."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefusion.bundle import load_bundle
from edgefusion.errors import EdgefusionError
from edgefusion.modalities import all_patterns, pattern_name

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

import export_user_model as user  # noqa: E402
from edgefusion.export import LowRankFusion, Modality, export_bundle, random_presence  # noqa: E402
from edgefusion.export.bundling import bundle_contents  # noqa: E402
from edgefusion.export.graph_eval import SplitRunner, monolithic_logits, session  # noqa: E402
from edgefusion.export.onnx_export import OPSET, graph_ops, trt_supported_ops  # noqa: E402
from edgefusion.export.precision import to_half  # noqa: E402

NAMES = ("range", "mic")
TESTS = Path(__file__).parent
# Until the runtime's loader reads manifest format 2 (its branch merged), write_bundle refuses these bundles.


@pytest.fixture(scope="module")
def args():
    return user.bundle_args()


@pytest.fixture(scope="module")
def bundle(args, tmp_path_factory):
    return load_bundle(export_bundle(out=tmp_path_factory.mktemp("b") / "mine", **args))


@pytest.fixture(scope="module")
def contents(args, tmp_path_factory):
    """The files and manifest body export_bundle writes (read while the temp folder lives)."""
    with bundle_contents(out=tmp_path_factory.mktemp("b") / "mine", **args) as (files, body):
        copy = tmp_path_factory.mktemp("files")
        kept = {}
        for rel, path in files.items():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            (copy / rel).write_bytes(path.read_bytes())
            kept[rel] = copy / rel
        yield kept, json.loads(json.dumps(body))


def test_the_bundle_loads_in_the_runtime(bundle):
    assert bundle.manifest["format_version"] == 2 and bundle.labels == tuple(user.LABELS)
    assert bundle.names == NAMES and bundle.precisions == ("fp32", "fp16", "int8")
    streams = [(m.sensor, m.shape, m.rate_hz) for m in bundle.modalities]
    assert streams == [("depth", (1, 96, 128), 30), ("audio", (8000,), 10)]
    assert bundle.stream("audio").sample_rate == 16000 and bundle.stream("rgb") is None
    assert not list(bundle.root.parent.glob(".*")), "no temp folder left beside the bundle"


def _graph(contents, precision, graph):
    files, body = contents
    return files[body["variants"][precision]["graphs"][graph]]


def test_the_manifest_body_is_format_2(contents):
    files, body = contents
    assert body["labels"] == user.LABELS and body["name"] == "mine"
    mods = body["modalities"]
    assert [m["name"] for m in mods] == list(NAMES) and [m["sensor"] for m in mods] == ["depth", "audio"]
    assert mods[0]["input"] == {"name": "range", "shape": ["batch", 1, 96, 128], "dtype": "float32"}
    assert mods[1]["input"] == {"name": "mic", "shape": ["batch", 8000], "dtype": "float32"}
    assert mods[1]["sample_rate"] == 16000 and mods[1]["window_s"] == 0.5 and 8000 == round(16000 * 0.5)
    assert mods[0]["rate_hz"] == 30 and mods[1]["rate_hz"] == 10 and "sample_rate" not in mods[0]
    for m in mods:
        assert m["output"] == {"name": f"p_{m['name']}", "shape": ["batch", 3, 8], "dtype": "float32"}
    assert body["head"]["inputs"] == ["p_range", "p_mic"]
    assert body["monolithic"]["inputs"] == ["range", "mic", "present"]
    assert set(body["variants"]) == {"fp32", "fp16", "int8"}
    assert set(body["variants"]["fp32"]["graphs"]) == {*NAMES, "head", "monolithic"}
    for precision, variant in body["variants"].items():
        assert {*NAMES, "head"} <= set(variant["graphs"]), precision
        assert set(variant["graphs"].values()) | {variant["absent"]} <= set(files)
        with np.load(files[variant["absent"]]) as z:
            assert sorted(z.files) == sorted(NAMES) and all(z[m].shape == (3, 8) for m in NAMES)
    assert body["variants"]["int8"]["graphs"]["head"] == body["variants"]["fp32"]["graphs"]["head"]
    assert body["calibration"]["samples"] == 48 and body["calibration"]["patterns"] == 3


def test_every_graph_is_opset_17_checker_clean_tensorrt_parsable_with_a_dynamic_batch(contents):
    files, _ = contents
    allowed = trt_supported_ops()
    for rel, path in files.items():
        if rel.endswith(".onnx"):
            proto = onnx.load(str(path))
            onnx.checker.check_model(proto, full_check=True)
            assert all(o.version <= OPSET for o in proto.opset_import if o.domain in ("", "ai.onnx"))
            assert graph_ops(proto) <= allowed, f"{rel}: {graph_ops(proto) - allowed}"
            assert all(i.type.tensor_type.shape.dim[0].dim_param == "batch" for i in proto.graph.input), rel
            assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in proto.graph.input), rel
    # GELU in opset 17 is Erf arithmetic, which TensorRT parses.
    assert "Erf" in graph_ops(onnx.load(str(_graph(contents, "fp32", "mic"))))


def _absent(contents, precision):
    files, body = contents
    with np.load(files[body["variants"][precision]["absent"]]) as z:
        return {m: z[m] for m in NAMES}


def _split(contents, precision):
    files, body = contents
    graphs = {g: files[rel] for g, rel in body["variants"][precision]["graphs"].items()}
    return SplitRunner(graphs, _absent(contents, precision), NAMES)


def test_split_graphs_equal_the_monolithic_graph_and_pytorch(args, contents):
    x, _ = user.data(10, 11)
    data = {m: v.numpy() for m, v in x.items()}
    split = _split(contents, "fp32").logits_by_pattern(data)
    mono = monolithic_logits(_graph(contents, "fp32", "monolithic"), data, names=NAMES)
    model = args["model"]
    for present in all_patterns(2):
        key = pattern_name(NAMES, present)
        with torch.no_grad():
            ref = model(x, torch.tensor([present] * 10, dtype=torch.float32)).numpy()
        scale = np.abs(ref).max()
        assert np.abs(split[key] - mono[key]).max() <= 1e-5 * scale, key
        assert np.abs(split[key] - ref).max() <= 1e-4 * scale, key
    assert contents[1]["accuracy"]["checks"]["split_vs_monolithic_rel_err"] <= 1e-5


def _weight_types(path) -> dict[str, int]:
    proto = onnx.load(str(path))
    inits = {i.name: i.data_type for i in proto.graph.initializer}
    return {
        n.name: inits[n.input[1]] for n in proto.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in inits
    }


def test_fp16_needs_no_casts_in_the_users_code_and_keeps_the_front_end_fp32(args, contents):
    """The user's encoders never cast: the fp16 graphs still take and give float32, run their
    weights in fp16 except the module kept fp32, and match the same half model run in PyTorch."""
    types = _weight_types(_graph(contents, "fp16", "mic"))
    front = [t for n, t in types.items() if "/frontend/" in n]
    rest = [t for n, t in types.items() if "/frontend/" not in n]
    assert front == [onnx.TensorProto.FLOAT] and rest and set(rest) == {onnx.TensorProto.FLOAT16}
    assert set(_weight_types(_graph(contents, "fp16", "range")).values()) == {onnx.TensorProto.FLOAT16}
    x, _ = user.data(6, 12)
    half = to_half(args["model"], ("frontend",))
    for m in NAMES:
        got = session(_graph(contents, "fp16", m)).run(None, {m: x[m].numpy()})[0]
        with torch.no_grad():
            ref = half.project(m, half.encoders[m](x[m])).float().numpy()
        assert got.dtype == np.float32 and np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max(), m


def test_int8_quantizes_the_encoders_only(contents):
    proto = onnx.load(str(_graph(contents, "int8", "mic")))
    producers = {o: n for n in proto.graph.node for o in n.output}
    quantized = {
        n.name: all(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input[:2])
        for n in proto.graph.node
        if n.op_type in ("Conv", "Gemm", "MatMul")
    }
    assert not any(q for n, q in quantized.items() if "/frontend/" in n or "proj" in n), quantized
    assert [n for n, q in quantized.items() if q], "the encoder body must be quantized"
    assert graph_ops(proto) <= trt_supported_ops()


def test_accuracy_and_agreement_are_reported_per_precision_and_pattern(contents):
    acc = contents[1]["accuracy"]
    patterns = {pattern_name(NAMES, p) for p in all_patterns(2)}
    assert acc["measured_on"] == {"heldout_samples": 48}
    assert set(acc["by_precision"]) == {"fp32", "fp16", "int8"}
    assert all(set(t) == patterns for t in acc["by_precision"].values())
    assert set(acc["agreement_with_fp32"]) == {"fp16", "int8"}
    assert acc["by_precision"]["fp32"]["range+mic"] >= 0.9, "the trained model learned the task"
    assert acc["agreement_with_fp32"]["fp16"]["range+mic"] >= 0.9
    assert acc["agreement_with_fp32"]["int8"]["range+mic"] >= 0.8
    assert acc["warnings"] == []


def test_without_heldout_only_agreement_on_the_calibration_batches_is_reported(args, tmp_path):
    kw = {k: v for k, v in args.items() if k != "heldout"}
    with bundle_contents(out=tmp_path / "b", precisions=("fp32", "int8"), **kw) as (files, body):
        assert body["accuracy"]["measured_on"] == {"calibration_samples": 48}
        assert body["accuracy"]["by_precision"] == {} and set(body["accuracy"]["agreement_with_fp32"]) == {"int8"}
        assert set(body["variants"]) == {"fp32", "int8"} and not any(r.startswith("fp16/") for r in files)


def _refusal(tmp_path, **changes) -> str:
    args = {
        "model": user.make_model(),
        "labels": user.LABELS,
        "modalities": user.MODALITIES,
        "calibration": [user.data(7, 3)[0]],
        **changes,
    }
    with pytest.raises(EdgefusionError) as err:
        export_bundle(out=tmp_path / "b", **args)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    assert not (tmp_path / "b").exists()
    return message


class _SevenWide(torch.nn.Module):
    def forward(self, x):
        return x[:, :7]


class _FixedBatch(torch.nn.Module):
    """Traces at batch 2 and bakes the 2 in: fine in PyTorch, broken on the robot."""

    def __init__(self):
        super().__init__()
        self.out = torch.nn.Linear(8000, 16)

    def forward(self, x):
        return self.out(x.reshape(2, 8000))


def test_refusals_are_one_line(tmp_path):
    hard = user.make_model(user.DepthNet(act=torch.nn.Hardswish()))
    msg = _refusal(tmp_path, model=hard)
    assert "HardSwish" in msg and "encoders.range.stem.2 (Hardswish)" in msg and "TensorRT" in msg, msg
    wrong = user.make_model()
    wrong.encoders["mic"] = _SevenWide()
    msg = _refusal(tmp_path, model=wrong)
    assert "encoder 'mic' gives (2, 7)" in msg and "(N, dims['mic']) = (2, 16)" in msg, msg
    fixed = user.make_model()
    fixed.encoders["mic"] = _FixedBatch()
    assert "encoder 'mic' exported for one batch size only (batch 1 fails" in _refusal(tmp_path, model=fixed)
    flat = user.make_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(96 * 128, 24)))
    msg = _refusal(tmp_path, model=flat, modalities={**user.MODALITIES, "range": Modality.depth(height=48, width=64)})
    assert "encoder 'range' fails on its declared input (float32 of shape (2, 1, 48, 64)): mat1 and mat2" in msg, msg
    assert "for a model of 4 classes" in _refusal(tmp_path, labels=["yes", "no"])
    assert "the model's modalities are ['range', 'mic']" in _refusal(
        tmp_path, modalities={"range": user.MODALITIES["range"]}
    )
    assert "int8 needs calibration" in _refusal(tmp_path, calibration=None)
    assert "keep_fp32 names 'frontnd'" in _refusal(tmp_path, keep_fp32=("frontnd",))
    bad_batch = {"range": torch.zeros(3, 1, 96, 128), "mic": torch.zeros(3, 4000)}
    assert "calibration batch 0: 'mic' is of shape (3, 4000)" in _refusal(tmp_path, calibration=[bad_batch])


class _LoudFront(torch.nn.Module):
    """A conv on raw int16 counts (2e5 on full-scale DC, past fp16's 65504), then log-compressed."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 8, 64, stride=32)
        torch.nn.init.constant_(self.conv.weight, 0.1)

    def forward(self, pcm):
        return torch.log1p(self.conv(pcm.unsqueeze(1)).abs())


class _LoudAudioNet(user.AudioNet):
    def __init__(self):
        super().__init__()
        self.frontend = _LoudFront()

    def forward(self, pcm):
        return self.out(self.body(self.frontend(pcm)).mean(dim=2))


def test_a_front_end_that_overflows_fp16_is_refused_unless_kept_fp32(tmp_path):
    model = user.make_model()
    model.encoders["mic"] = _LoudAudioNet()
    msg = _refusal(tmp_path, model=model, precisions=("fp32", "fp16"))
    assert "encoder 'mic' overflows fp16 (inf or NaN) on full-scale audio input" in msg and "keep_fp32" in msg, msg
    kw = {"model": model, "labels": user.LABELS, "modalities": user.MODALITIES, "precisions": ("fp32", "fp16")}
    with bundle_contents(out=tmp_path / "kept", keep_fp32=(_LoudFront,), **kw) as (_, body):
        assert body["accuracy"]["checks"]["fp16_full_scale_finite"] is True


@pytest.mark.parametrize("name", ["Range", "present", "head", "monolithic", "9lives", "a" * 33, "with-dash"])
def test_a_name_the_manifest_does_not_allow_is_refused(name):
    with pytest.raises(EdgefusionError, match="is not allowed"):
        LowRankFusion({name: user.AudioNet()}, dims={name: 16}, n_classes=4)


def test_two_modalities_on_one_stream_are_refused(tmp_path):
    twice = {"range": Modality.depth(96, 128), "mic": Modality.depth(96, 128)}
    assert "two modalities are fed by the depth stream" in _refusal(tmp_path, modalities=twice)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Modality.depth(height=4, width=128), "depth height 4 is not an integer from 8 to 4096"),
        (lambda: Modality.audio(seconds=0.5, rate=500), "audio rate 500"),
        (lambda: Modality.audio(seconds=11), "audio seconds 11"),
        (lambda: Modality.rgb(48, 64, rate_hz=0), "rate_hz 0"),
    ],
)
def test_a_modality_out_of_range_is_refused(make, message):
    with pytest.raises(EdgefusionError, match=message):
        make()


def test_random_presence_draws_every_non_empty_pattern():
    g = torch.Generator().manual_seed(0)
    mask = random_presence(3000, 3, g)
    assert mask.dtype == torch.bool and mask.shape == (3000, 3) and mask.any(1).all()
    seen = {tuple(r) for r in mask.tolist()}
    assert seen == set(all_patterns(3))
    full = mask.all(1).float().mean().item()
    assert 0.25 < full < 0.35, "the full pattern is drawn with its default probability 0.3"
    only_full = random_presence(50, 2, g, probs=(1.0, 0.0))
    assert only_full.all()


def test_importing_the_package_does_not_load_torch():
    code = "import sys, edgefusion.export; assert 'torch' not in sys.modules; print(edgefusion.export.FUSION_KINDS)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _cli(*args, cwd=TESTS, module="edgefusion.export.cli"):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_the_runtime_describes_and_benches_the_bundle(bundle):
    info = _cli("info", "--bundle", str(bundle.root), module="edgefusion.cli")
    assert info.returncode == 0 and "format 2" in info.stdout and "range+mic" in info.stdout, info.stdout + info.stderr
    for precision in ("fp32", "int8"):
        args = ("--precision", precision, "--ticks", "100", "--alloc-ticks", "100", "--json")
        bench = _cli("bench", "--bundle", str(bundle.root), *args, module="edgefusion.cli")
        assert bench.returncode == 0, bench.stderr[-2000:]
        assert json.loads(bench.stdout)


def test_the_cli_exports_a_model_from_a_factory(tmp_path):
    r = _cli("bundle", "--model", "export_user_model:bundle_args", "--out", str(tmp_path / "cli"), "--name", "from cli")
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = load_bundle(tmp_path / "cli")
    assert loaded.manifest["name"] == "from cli" and loaded.names == NAMES


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_such_module:f", "no module named 'no_such_module'"),
        ("export_user_model:nothing", "has no function 'nothing'"),
        ("export_user_model:make_model", "returned a LowRankFusion; return a dict"),
        ("export_user_model", "give MODULE:FACTORY"),
    ],
)
def test_a_bad_model_factory_is_one_line(tmp_path, spec, message):
    r = _cli("bundle", "--model", spec, "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "b").exists()
