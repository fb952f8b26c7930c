"""A bundle that `info` calls verified is one that runs: every kind of damage is refused at load.

Each case damages a copy of the demo bundle (its hashes made to agree again, so the refusal is not
the sha256 check's) and must be refused by ``load_bundle`` with one line naming the bundle, and by
``edgefusion info`` and ``edgefusion demo``: exit 2, one line, no traceback. The graphs are small
real ONNX graphs built here, so onnxruntime loads and runs each.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_check import cli, refused, snapshot

from edgefusion.bundle import default_bundle_path, load_bundle
from edgefusion.errors import BundleError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, external_data_helper, helper, numpy_helper  # noqa: E402

DEMO = default_bundle_path()
MANIFEST = json.loads((DEMO / "manifest.json").read_text())
P_SHAPE = ["batch", 4, 32]
RGB = ("rgb", ["batch", 3, 48, 64])


def _graph(
    path: Path,
    inputs: list,
    outputs: list,
    value: float = 0.0,
    input_type: int = TensorProto.FLOAT,
    gather_out_of_range: bool = False,
    external: str | None = None,
    unary: tuple[str, ...] = (),
) -> None:
    """A graph with these (name, shape) inputs and outputs: each output is ``value`` everywhere
    (plus 0 × the mean of the first input, so the input is read; ``unary`` ops applied to that
    mean first). ``gather_out_of_range`` makes it fail when run; ``external`` stores its one
    weight in that external data file beside it."""
    first = inputs[0][0]
    nodes = [helper.make_node("Cast", [first], ["x"], to=TensorProto.FLOAT)]
    if gather_out_of_range:
        nodes.append(helper.make_node("Gather", ["x", "far"], ["xg"], axis=1))
        nodes.append(helper.make_node("ReduceMean", ["xg"], ["m"], keepdims=0))
    else:
        nodes.append(helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0))
    for i, op in enumerate(unary):
        nodes.append(helper.make_node(op, [f"m{i}" if i else "m"], [f"m{i + 1}"]))
    nodes.append(helper.make_node("Mul", [f"m{len(unary)}" if unary else "m", "zero"], ["z"]))
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    inits.append(numpy_helper.from_array(np.array([10**6], np.int64), "far"))
    for name, shape in outputs:
        inits.append(numpy_helper.from_array(np.array([1, *shape[1:]], np.int64), f"{name}_shape"))
        fill = helper.make_tensor("fill", TensorProto.FLOAT, [1], [value])
        nodes.append(helper.make_node("ConstantOfShape", [f"{name}_shape"], [f"{name}_c"], value=fill))
        nodes.append(helper.make_node("Add", [f"{name}_c", "z"], [name]))
    graph = helper.make_graph(
        nodes,
        "damaged",
        [helper.make_tensor_value_info(n, input_type if n == first else TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if external:  # the weight no shape depends on: onnxruntime would load it where it finds the file
        external_data_helper.set_external_data(model.graph.initializer[0], external)
        model.graph.initializer[0].data_location = TensorProto.EXTERNAL
    onnx.save_model(model, path)


def _encoder(root: Path, rel: str = "fp32/rgb.onnx", inputs=None, outputs=None, **kw) -> None:
    _graph(root / rel, inputs or [RGB], outputs or [("p_rgb", P_SHAPE)], **kw)


def _head(root: Path, outputs, **kw) -> None:
    _graph(root / "fp32/head.onnx", [(f"p_{m}", P_SHAPE) for m in ("rgb", "depth", "audio")], outputs, **kw)


def _edit(root: Path, change, indent: int | None = None) -> None:
    """Change the manifest; written with ``indent=2``, _rehash leaves it as it is."""
    doc = json.loads((root / "manifest.json").read_text())
    change(doc)
    (root / "manifest.json").write_text(json.dumps(doc, indent=indent))


def _rehash(root: Path) -> None:
    """Record every listed file's present size and digest: a bundle whose hashes agree with its damage.

    A manifest whose text was crafted (it would not come back the same from the json module) is left alone."""
    try:
        text = (root / "manifest.json").read_text().strip()
        doc = json.loads(text)
    except (OSError, ValueError, RecursionError):
        return
    if text not in (json.dumps(doc), json.dumps(doc, indent=1)) or not isinstance(_at(doc, "files"), dict):
        return

    def update(doc):
        for rel, entry in doc["files"].items():
            f = root / rel
            if f.is_file() and not f.is_symlink():
                entry.update(sha256=hashlib.sha256(f.read_bytes()).hexdigest(), bytes=f.stat().st_size)

    _edit(root, update)


def _at(doc, key: str):
    return doc.get(key) if isinstance(doc, dict) else None


def _list(root: Path, rel: str) -> None:
    _edit(root, lambda doc: doc["files"].update({rel: {"sha256": "0" * 64, "bytes": 0}}))


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _text(root: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    (root / "manifest.json").write_bytes(data)


def _manifest_with(key: str, raw_json: str):
    """The manifest's text with ``key`` set to ``raw_json`` (JSON the json module would not write)."""

    def damage(root: Path) -> None:
        doc = json.loads((root / "manifest.json").read_text())
        doc[key] = "@@"
        _text(root, json.dumps(doc).replace('"@@"', raw_json))

    return damage


def _replace_with_link(root: Path, rel: str, target: Path) -> None:
    (root / rel).unlink()
    (root / rel).symlink_to(target)


def _labels(labels):
    return lambda root: _edit(root, lambda doc: doc.update(labels=labels))


def _set(path: str, value):
    """Set the manifest entry at dotted ``path`` to ``value``; in a list (the modalities), a key
    names the entry of that name."""

    def change(doc):
        *parents, last = path.split(".")
        for key in parents:
            doc = next(e for e in doc if e["name"] == key) if isinstance(doc, list) else doc[key]
        doc[last] = value

    return lambda root: _edit(root, change)


def _fifo(root: Path) -> None:
    (root / "fp32/rgb.onnx").unlink()
    os.mkfifo(root / "fp32/rgb.onnx")


def _folder_for_file(root: Path) -> None:
    (root / "fp32/head.onnx").unlink()
    (root / "fp32/head.onnx").mkdir()


def _manifest_folder(root: Path) -> None:
    (root / "manifest.json").unlink()
    (root / "manifest.json").mkdir()


def _linked_folder(root: Path) -> None:
    outside = root.parent / "int8-elsewhere"
    shutil.move(root / "int8", outside)
    (root / "int8").symlink_to(outside)


def _external_listed(root: Path) -> None:
    _encoder(root, external="rgb.weights")
    _list(root, "fp32/rgb.weights")


def _many_files(root: Path) -> None:
    for i in range(70):
        (root / f"extra{i}.txt").write_text("x")


def nan_on_real_projections(root) -> None:
    """A head that is finite on zero projections (the loader's run of each graph alone) but NaN on
    what the encoders give (sqrt of -|mean p_rgb|): only a tick through the whole chain sees it."""
    _head(root, [("logits", ["batch", 7]), ("probs", ["batch", 7])], unary=("Abs", "Neg", "Sqrt"))
    _rehash(root)


# (id, damage applied to a copy of the demo bundle, words the one-line refusal must hold)
CASES = [
    # A graph that disagrees with the manifest (hashes updated).
    ("graph-input-shape", lambda r: _encoder(r, inputs=[("rgb", ["batch", 3, 24, 32])]), ["fp32/rgb.onnx", "'rgb'"]),
    ("graph-output-shape", lambda r: _encoder(r, outputs=[("p_rgb", ["batch", 4, 16])]), ["fp32/rgb.onnx", "'p_rgb'"]),
    ("graph-input-name", lambda r: _encoder(r, inputs=[("image", RGB[1])]), ["fp32/rgb.onnx", "inputs", "image"]),
    ("graph-extra-output", lambda r: _encoder(r, outputs=[("p_rgb", P_SHAPE), ("h", P_SHAPE)]), ["outputs"]),
    ("graph-input-float16", lambda r: _encoder(r, input_type=TensorProto.FLOAT16), ["float16"]),
    ("graph-non-finite", lambda r: _encoder(r, value=float("inf")), ["fp32/rgb.onnx", "infinite"]),
    ("graph-fails-to-run", lambda r: _encoder(r, gather_out_of_range=True), ["fp32/rgb.onnx", "fails to run"]),
    ("graph-not-onnx", lambda r: (r / "fp32/depth.onnx").write_bytes(b"not a graph" * 100), ["fp32/depth.onnx"]),
    ("graph-empty", lambda r: (r / "fp16/audio.onnx").write_bytes(b""), ["fp16/audio.onnx"]),
    ("head-one-output", lambda r: _head(r, [("logits", ["batch", 7])]), ["fp32/head.onnx", "outputs"]),
    ("head-width-5", lambda r: _head(r, [("logits", ["batch", 5]), ("probs", ["batch", 5])]), ["'logits'", "7"]),
    ("head-is-an-encoder", _set("variants.int8.graphs.head", "fp32/rgb.onnx"), ["fp32/rgb.onnx", "int8 head"]),
    ("monolithic-other-io", lambda r: _encoder(r, "fp32/monolithic.onnx"), ["fp32/monolithic.onnx", "inputs"]),
    # The manifest edited against its graphs.
    ("labels-cut-to-3", _labels(["fetch", "stop", "follow"]), ["'logits'", "3"]),
    ("labels-duplicate", _labels(["fetch", "stop", "stop", "a", "b", "c", "d"]), ["'stop'", "more than once"]),
    ("labels-empty", _labels([]), ["labels"]),
    ("labels-not-strings", _labels([1, 2, 3, 4, 5, 6, 7]), ["labels"]),
    ("label-with-newline", _labels(["a\nb", "c", "d", "e", "f", "g", "h"]), ["labels"]),
    ("labels-5000", _labels([f"l{i}" for i in range(5000)]), ["labels"]),
    ("input-shape-edited", _set("modalities.rgb.input.shape", ["batch", 3, 96, 128]), ["rgb.onnx", "3, 96, 128"]),
    ("input-100000x100000", _set("modalities.depth.input.shape", ["batch", 100000, 100000]), ["modalities[1]"]),
    ("input-shape-named-axis", _set("modalities.rgb.input.shape", ["batch", 3, "h", 64]), ["modalities[0].input"]),
    ("input-shape-zero", _set("modalities.audio.input.shape", ["batch", 0]), ["modalities[2].input"]),
    ("input-dtype-float16", _set("modalities.rgb.input.dtype", "float16"), ["modalities[0].input"]),
    ("input-name-edited", _set("modalities.audio.input.name", "wave"), ["fp32/audio.onnx", "wave"]),
    ("output-shape-edited", _set("modalities.rgb.output.shape", ["batch", 4, 33]), ["absent.npz", "33"]),
    ("output-1e10", _set("modalities.rgb.output.shape", ["batch", 100000, 100000]), ["modalities[0].output"]),
    ("head-inputs-two", _set("head.inputs", ["p_rgb", "p_depth"]), ["head"]),
    ("head-outputs-same", _set("head.outputs", ["logits", "logits"]), ["head"]),
    ("head-output-renamed", _set("head.outputs", ["scores", "probs"]), ["fp32/head.onnx", "scores"]),
    ("monolithic-missing", lambda r: _edit(r, lambda d: d.pop("monolithic")), ["monolithic"]),
    (
        "variant-name-odd",
        lambda r: _edit(r, lambda d: d["variants"].update({"fp 8": d["variants"]["int8"]})),
        ["variants"],
    ),
    ("graph-unknown", _set("variants.fp16.graphs.extra", 5), ["variants.fp16.graphs", "'extra'"]),
    ("graphs-a-list", _set("variants.fp16.graphs", [["fp16/rgb.onnx"]]), ["variants.fp16.graphs"]),
    ("absent-is-a-graph", _set("variants.fp16.absent", "fp16/rgb.onnx"), ["fp16/rgb.onnx", ".npz"]),
    ("graph-is-absent-npz", _set("variants.fp16.graphs.rgb", "fp16/absent.npz"), ["fp16/absent.npz", "fp16 rgb"]),
    ("accuracy-strings", _set("accuracy.by_precision", {"fp32": {"all": "high"}}), ["accuracy.by_precision"]),
    (
        "file-bytes-huge",
        lambda r: _edit(r, lambda d: d["files"]["fp32/head.onnx"].update(bytes=10**12), indent=2),
        ["files"],
    ),
    # manifest.json that is not plain JSON of a sane size and depth.
    ("nested-200000", lambda r: _text(r, _nested(200000)), ["manifest.json", "nests deeper"]),
    ("nested-in-training", _manifest_with("training", _nested(60)), ["manifest.json", "nests deeper"]),
    ("nan-in-accuracy", _manifest_with("accuracy", '{"by_precision": {"fp32": {"all": NaN}}}'), ["NaN"]),
    ("duplicate-key", _manifest_with("labels", '["a"], "labels": ["b"]'), ["'labels'", "twice"]),
    ("integer-5000-digits", _manifest_with("format_version", "9" * 5000), ["manifest.json"]),
    ("manifest-a-list", lambda r: _text(r, "[1, 2]"), ["not an edgefusion-bundle manifest"]),
    ("manifest-not-utf8", lambda r: _text(r, b'{"format": "\xff\xfe"}'), ["manifest.json"]),
    ("manifest-2-mib", lambda r: _text(r, " " * (2 << 20) + "{}"), ["manifest.json", "more than"]),
    ("manifest-empty", lambda r: _text(r, ""), ["manifest.json", "not valid JSON"]),
    # Odd files: links, FIFOs, folders, unlisted or external data.
    ("graph-symlink-out", lambda r: _replace_with_link(r, "fp32/rgb.onnx", DEMO / "fp32/rgb.onnx"), ["symbolic link"]),
    ("manifest-symlink", lambda r: _replace_with_link(r, "manifest.json", DEMO / "manifest.json"), ["symbolic link"]),
    ("folder-symlink-out", _linked_folder, ["int8", "symbolic link"]),
    ("graph-fifo", _fifo, ["fp32/rgb.onnx", "FIFO"]),
    ("graph-is-a-folder", _folder_for_file, ["fp32/head.onnx", "folder"]),
    ("manifest-is-a-folder", _manifest_folder, ["manifest.json", "folder"]),
    ("unlisted-file", lambda r: (r / "fp32/notes.txt").write_text("hi"), ["fp32/notes.txt", "not listed"]),
    ("external-data-unlisted", lambda r: _encoder(r, external="rgb.weights"), ["fp32/rgb.weights", "not listed"]),
    ("external-data-listed", _external_listed, ["fp32/rgb.onnx", "external data"]),
    ("too-many-files", _many_files, ["more than 64"]),
]


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(DEMO, dest)
    return dest


def test_an_intact_copy_is_accepted_and_its_cli_runs(copy: Path):
    """The control: the copy the cases damage loads, and info says verified."""
    _rehash(copy)
    assert load_bundle(copy).labels == tuple(MANIFEST["labels"])
    r = cli("info", "--bundle", str(copy))
    assert r.returncode == 0 and "verified" in r.stdout, r.stderr


@pytest.mark.parametrize("damage, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_damaged_bundle_is_refused_in_one_line(copy: Path, damage, words):
    damage(copy)
    _rehash(copy)
    with pytest.raises(BundleError) as err:
        load_bundle(copy)
    message = str(err.value)
    assert "\n" not in message and str(copy) in message, message
    for word in words:
        assert word in message, message
    before = snapshot(copy)
    for command in (("info",), ("demo", "--seconds", "1")):
        refused(cli(*command, "--bundle", str(copy)), str(copy), *words)
    assert snapshot(copy) == before  # nothing written into the bundle


def unprivileged() -> list[str]:
    """A command prefix for a user who cannot read other users' files: as root, root without the
    capabilities that bypass file permissions (root reads everything otherwise)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot drop the file-permission override")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


# What a copy as root leaves the service user: files 0600 and folders 0700 owned by someone else,
# or a folder that can be listed but not entered (0644).
UNREADABLE = {"manifest.json": 0o600, "fp32/head.onnx": 0o600, "fp16/absent.npz": 0o600, "int8": 0o700, "fp16": 0o644}


def make_unreadable(root: Path, rel: str) -> None:
    os.chmod(root / rel, UNREADABLE[rel])
    os.chown(root / rel, 65534, 65534)


@pytest.mark.parametrize("rel", UNREADABLE)
def test_an_unreadable_file_names_itself_and_the_fix(copy: Path, rel: str):
    """One line naming the file or folder that cannot be read, and the fix (chmod or chown)."""
    make_unreadable(copy, rel)
    for command in (("info",), ("demo", "--seconds", "1")):
        r = subprocess.run(
            [*unprivileged(), sys.executable, "-m", "edgefusion.cli", *command, "--bundle", str(copy)],
            capture_output=True,
            text=True,
            timeout=90,
            stdin=subprocess.DEVNULL,
        )
        line = refused(r, str(copy), rel, "permission denied")
        assert "chmod" in line and "chown" in line, line


def test_external_data_is_refused_even_beside_the_current_directory(copy: Path):
    """A graph opened from bytes would find its external data relative to the current directory:
    run from the folder that holds the (listed, hashed) weights file, it is still refused."""
    _external_listed(copy)
    _rehash(copy)
    refused(cli("info", "--bundle", str(copy), cwd=copy / "fp32"), "fp32/rgb.onnx", "external data")
