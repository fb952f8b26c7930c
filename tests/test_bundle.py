"""The bundle refuses anything partial, tampered, or of another format, with a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgefusion
from edgefusion.bundle import FORMAT_VERSION, Bundle, default_bundle_path, load_bundle, write_bundle
from edgefusion.bundle.loader import sha256_file
from edgefusion.errors import BundleError, EdgefusionError
from edgefusion.modalities import MODALITIES, ModalitySpec

DEMO = default_bundle_path()
DEMO_MANIFEST = json.loads((DEMO / "manifest.json").read_text())
RANK, D_OUT = 4, 32


def _absent_arrays(shape=(RANK, D_OUT)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {m: rng.standard_normal(shape).astype(np.float32) for m in MODALITIES}


def _body() -> dict:
    """The demo bundle's manifest less what write_bundle fills in, with every variant on fp32/absent.npz."""
    body = {k: v for k, v in json.loads(json.dumps(DEMO_MANIFEST)).items() if k not in ("format", "format_version")}
    del body["files"]
    body["name"] = "test-bundle"
    body["accuracy"] = {"by_precision": {"fp32": {"all": 0.97}}}
    for variant in body["variants"].values():
        variant["absent"] = "fp32/absent.npz"
    return body


def _sources(tmp_path: Path, absent: dict[str, np.ndarray] | None = None) -> dict[str, Path]:
    """The demo bundle's real graphs (the loader runs each) and an absent.npz of our own."""
    files = {rel: DEMO / rel for rel in DEMO_MANIFEST["files"] if not rel.endswith("absent.npz")}
    files["fp32/absent.npz"] = tmp_path / "absent.npz"
    np.savez(files["fp32/absent.npz"], **(_absent_arrays() if absent is None else absent))
    return files


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "out" / "bundle", _sources(tmp_path), _body())


def _refused(path: Path) -> str:
    with pytest.raises(BundleError) as err:
        load_bundle(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def _edit_manifest(root: Path, edit) -> None:
    doc = json.loads((root / "manifest.json").read_text())
    edit(doc)
    (root / "manifest.json").write_text(json.dumps(doc))


def _replace_consistently(root: Path, rel: str, write) -> None:
    """Replace a file and record its new digest: a bundle whose hashes agree but whose content is wrong."""
    write(root / rel)
    entry = {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size}
    _edit_manifest(root, lambda doc: doc["files"].update({rel: entry}))


def test_clean_bundle_loads(bundle_dir: Path):
    bundle = load_bundle(bundle_dir)
    assert isinstance(bundle, Bundle)
    assert bundle.labels == tuple(DEMO_MANIFEST["labels"])
    assert bundle.precisions == ("fp32", "fp16", "int8")
    assert bundle.graph_path("fp16", "rgb") == bundle_dir / "fp16" / "rgb.onnx"
    assert bundle.graph_path("int8", "head") == bundle_dir / "fp32" / "head.onnx"
    assert bundle.graph_bytes("fp32", "monolithic") == (DEMO / "fp32" / "monolithic.onnx").read_bytes()
    assert bundle.names == ("rgb", "depth", "audio") == tuple(spec.sensor for spec in bundle.modalities)
    assert bundle.modality("rgb") == ModalitySpec("rgb", "rgb", (3, 48, 64), "rgb", "p_rgb", (RANK, D_OUT), 30.0)
    assert bundle.stream("audio") == ModalitySpec(
        "audio", "audio", (16000,), "audio", "p_audio", (RANK, D_OUT), 10.0, sample_rate=16000, window_s=1.0
    )
    assert bundle.stream("audio").samples == 16000 and bundle.modality("depth").height == 48
    assert bundle.accuracy == {"by_precision": {"fp32": {"all": 0.97}}}
    absent = bundle.absent("int8")
    assert list(absent) == list(MODALITIES)
    for m, expected in _absent_arrays().items():
        np.testing.assert_array_equal(absent[m], expected)
    with pytest.raises(ValueError):
        absent["rgb"][0, 0] = 1.0  # shared by every caller, so read-only
    doc = json.loads((bundle_dir / "manifest.json").read_text())
    assert doc["format"] == "edgefusion-bundle" and doc["format_version"] == FORMAT_VERSION == 2
    assert set(doc["files"]) == {p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*.*")} - {
        "manifest.json"
    }


def test_tampered_byte_is_refused(bundle_dir: Path):
    graph = bundle_dir / "fp16" / "rgb.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0x01
    graph.write_bytes(bytes(data))
    message = _refused(bundle_dir)
    assert "fp16/rgb.onnx" in message and "sha256" in message


def test_truncated_file_is_refused(bundle_dir: Path):
    graph = bundle_dir / "fp32" / "head.onnx"
    graph.write_bytes(graph.read_bytes()[:-10])
    message = _refused(bundle_dir)
    assert "fp32/head.onnx" in message and "truncated" in message and "bytes" in message


def test_missing_file_is_refused(bundle_dir: Path):
    (bundle_dir / "fp16" / "audio.onnx").unlink()
    message = _refused(bundle_dir)
    assert "fp16/audio.onnx is missing" in message


def test_missing_manifest_is_refused(bundle_dir: Path):
    (bundle_dir / "manifest.json").unlink()
    assert "manifest.json is missing" in _refused(bundle_dir)


def test_not_a_folder_is_refused(tmp_path: Path):
    assert "not a bundle folder" in _refused(tmp_path / "nowhere")


def test_format_version_1_is_refused(bundle_dir: Path):
    _edit_manifest(bundle_dir, lambda doc: doc.update(format_version=1))
    message = _refused(bundle_dir)
    assert "format version 1 is not supported" in message and "reads version 2" in message
    assert "export the bundle again" in message


def test_invalid_json_is_refused(bundle_dir: Path):
    (bundle_dir / "manifest.json").write_text('{"format": "edgefusion-bundle",\n  "labels": [}\n')
    message = _refused(bundle_dir)
    assert "not valid JSON" in message and "line 2" in message


def test_variant_path_not_in_files_is_refused(bundle_dir: Path):
    (bundle_dir / "fp16" / "extra.onnx").write_bytes((bundle_dir / "fp16" / "depth.onnx").read_bytes())
    _edit_manifest(bundle_dir, lambda doc: doc["variants"]["fp16"]["graphs"].update(depth="fp16/extra.onnx"))
    message = _refused(bundle_dir)
    assert "variants.fp16.graphs.depth" in message and "fp16/extra.onnx" in message and "not listed in files" in message


def test_path_leaving_the_bundle_is_refused(bundle_dir: Path):
    _edit_manifest(bundle_dir, lambda doc: doc["variants"]["fp32"]["graphs"].update(rgb="../src/fp32_rgb.onnx"))
    message = _refused(bundle_dir)
    assert "variants.fp32.graphs.rgb" in message and "outside the bundle" in message


def test_absent_with_wrong_shape_is_refused(bundle_dir: Path):
    _replace_consistently(bundle_dir, "fp32/absent.npz", lambda p: np.savez(p, **_absent_arrays((RANK, D_OUT - 1))))
    message = _refused(bundle_dir)
    assert "fp32/absent.npz" in message and "(4, 31)" in message and "(4, 32)" in message


def test_absent_with_non_finite_values_is_refused(bundle_dir: Path):
    arrays = _absent_arrays()
    arrays["depth"][1, 2] = np.nan
    _replace_consistently(bundle_dir, "fp32/absent.npz", lambda p: np.savez(p, **arrays))
    assert "NaN" in _refused(bundle_dir)


def test_unknown_precision_lists_the_available_ones(bundle_dir: Path):
    bundle = load_bundle(bundle_dir)
    with pytest.raises(BundleError, match=r"no 'int4' variant; choose one of fp32, fp16, int8$"):
        bundle.graph_path("int4", "rgb")
    with pytest.raises(BundleError, match="no 'int4' variant"):
        bundle.absent("int4")


def test_rewrite_replaces_the_folder_completely(tmp_path: Path, bundle_dir: Path):
    (bundle_dir / "stale.txt").write_text("from an older export")
    body = _body()
    body["name"] = "rewritten"
    assert write_bundle(bundle_dir, _sources(tmp_path), body) == bundle_dir
    assert not (bundle_dir / "stale.txt").exists()
    assert load_bundle(bundle_dir).manifest["name"] == "rewritten"
    assert [p.name for p in bundle_dir.parent.iterdir()] == ["bundle"]


@pytest.mark.parametrize(
    "breaks",
    [
        lambda body: body.pop("labels"),
        lambda body: body["modalities"].pop(1),
        lambda body: body["variants"].pop("fp32"),
        lambda body: body["variants"]["fp32"]["graphs"].pop("monolithic"),
        lambda body: body["variants"]["fp16"]["graphs"].pop("head"),
    ],
    ids=["no-labels", "no-depth", "no-fp32", "no-fp32-monolithic", "no-fp16-head"],
)
def test_invalid_body_writes_nothing(tmp_path: Path, breaks):
    body = _body()
    breaks(body)
    dest = tmp_path / "out" / "bundle"
    with pytest.raises(BundleError) as err:
        write_bundle(dest, _sources(tmp_path), body)
    assert "\n" not in str(err.value) and str(dest) in str(err.value)
    assert not dest.exists()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_writer_refuses_a_file_outside_the_bundle(tmp_path: Path):
    files = _sources(tmp_path)
    files["../escape.onnx"] = files["fp32/rgb.onnx"]
    with pytest.raises(BundleError, match="'../escape.onnx'"):
        write_bundle(tmp_path / "out" / "bundle", files, _body())
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "escape.onnx").exists()


def test_writer_refuses_an_absent_file_the_loader_would_refuse(tmp_path: Path):
    dest = tmp_path / "out" / "bundle"
    with pytest.raises(BundleError, match="absent.npz"):
        write_bundle(dest, _sources(tmp_path, absent=_absent_arrays((D_OUT, RANK))), _body())
    assert not dest.exists()


def test_default_bundle_is_inside_the_package():
    assert default_bundle_path() == Path(edgefusion.__file__).parent / "demo_bundle"


def test_bundle_error_is_a_user_error():
    assert issubclass(BundleError, EdgefusionError)
