"""Any LowRankFusion model → a verified bundle (manifest format 2): the one path every bundle takes.

``export_bundle`` exports one graph per modality (raw input → encoder → projection ``p_<name>``)
and the head, in fp32, fp16 and INT8, plus the fp32 monolithic graph (every input + ``present``,
the split == monolithic check and the no-caching baseline) and its INT8 copy (calibrated on every
presence pattern). INT8 shares the fp32 head and absent projections: only the encoders' Conv,
Gemm and MatMul are quantized, never the fusion layers or the modules kept fp32. Every graph is
opset 17, dynamic batch, checker-clean and within TensorRT 8.6's operators, and the exported
graphs are measured in ONNX Runtime the way the robot runs them (split, absent projections for
missing sensors) before ``write_bundle`` writes the folder atomically.

The built-in demo model is one user of it (``build_bundle``): its encoders and LMF layer, its
audio front end kept fp32, its held-out and calibration sets.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from edgefusion.calibration.int8_set import CalibrationSet
from edgefusion.export.api import LowRankFusion, Modality, check_name
from edgefusion.export.graph_eval import SplitRunner, monolithic_logits, rel_err
from edgefusion.export.onnx_export import OPSET, export_split, module_path
from edgefusion.export.precision import KeepSpec, kept_paths, to_half, under
from edgefusion.export.quantize import QUANTIZED_OPS, quantize_graph
from edgefusion.export.train import logits_by_pattern

import edgefusion
from edgefusion.backends.base import first_line
from edgefusion.bundle import write_bundle
from edgefusion.errors import EdgefusionError
from edgefusion.modalities import pattern_name

PRECISIONS = ("fp32", "fp16", "int8")
NEAR_CHANCE_POINTS = 0.05  # held-out accuracy this close to 1/n_classes: a model that learned nothing
SPLIT_TOLERANCE = 1e-4  # split vs monolithic fp32 logits, relative to the largest logit
_CHECK_BATCHES = (1, 3)  # the branch graphs must run at batch sizes other than the traced one (2)

Inputs = Mapping[str, Any]  # modality name → (N, ...) tensor or array, as the runtime delivers it


def near_chance_warning(complete: float, n_classes: int) -> str | None:
    """A sentence when fp32 accuracy with every sensor present is within a few points of chance:
    such a bundle loads and runs, and every result it gives is a guess."""
    chance = 1 / n_classes
    if complete >= chance + NEAR_CHANCE_POINTS:
        return None
    return (
        f"held-out accuracy {complete:.3f} with every sensor present is near chance (1/{n_classes} = {chance:.3f}): "
        "the model learned next to nothing; train longer or on more data"
    )


def _check_request(model, labels, modalities, precisions, calibration, name) -> None:
    if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 100 or not name.isprintable()):
        raise EdgefusionError(f"name {name!r}: give a bundle name of 1 to 100 printable characters")
    if not isinstance(model, LowRankFusion):
        raise EdgefusionError(f"model is a {type(model).__name__}; export a edgefusion.export.LowRankFusion")
    if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
        raise EdgefusionError("labels must be a list of strings, one per class")
    if len(labels) != model.n_classes:
        raise EdgefusionError(
            f"{len(labels)} labels for a model of {model.n_classes} classes; give one label per class"
        )
    if not isinstance(modalities, Mapping) or set(modalities) != set(model.names):
        given = sorted(modalities) if isinstance(modalities, Mapping) else modalities
        raise EdgefusionError(
            f"modalities names {given}, but the model's modalities are {list(model.names)}; describe each one"
        )
    for name in model.names:
        check_name(name)
        if not isinstance(modalities[name], Modality):
            raise EdgefusionError(f"modalities[{name!r}] is not a Modality (use Modality.rgb/depth/audio)")
    sensors = [modalities[m].sensor for m in model.names]
    twice = sorted({s for s in sensors if sensors.count(s) > 1})
    if twice:
        raise EdgefusionError(f"two modalities are fed by the {twice[0]} stream; each stream feeds at most one")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or "fp32" not in precisions or len(set(precisions)) != len(precisions):
        raise EdgefusionError(f"precisions {tuple(precisions)!r}: choose from {', '.join(PRECISIONS)}, fp32 included")
    if "int8" in precisions and calibration is None:
        raise EdgefusionError(
            "int8 needs calibration batches (calibration=...); pass them or leave int8 out of precisions"
        )


def _check_encoders(model: LowRankFusion, modalities: Mapping[str, Modality]) -> dict[str, torch.Tensor]:
    """Each encoder on its declared input must give (N, dims[name]): the example inputs traced."""
    g = torch.Generator().manual_seed(0)
    examples = {m: modalities[m].example(2, g) for m in model.names}
    for m, x in examples.items():
        try:
            with torch.no_grad():
                h = model.encoders[m](x)
        except Exception as err:  # the user's own code: whatever it raises is the message
            raise EdgefusionError(
                f"encoder {m!r} fails on its declared input (float32 of shape {tuple(x.shape)}): {first_line(err)}; "
                f"make it take what modalities[{m!r}] describes"
            ) from None
        want = (len(x), model.dims[m])
        got = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
        if got != want:
            raise EdgefusionError(
                f"encoder {m!r} gives {got} for its declared input of shape {tuple(x.shape)}; "
                f"it must give (N, dims[{m!r}]) = {want}"
            )
    return examples


def _array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().float().numpy()
    return np.ascontiguousarray(value, dtype=np.float32)


def _stack(batches: Iterable[Inputs], modalities: Mapping[str, Modality], what: str) -> dict[str, np.ndarray]:
    """Input dicts → one (N, ...) float32 array per modality, each batch checked against its Modality."""
    columns: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
    for i, batch in enumerate(batches):
        if not isinstance(batch, Mapping) or set(batch) != set(columns):
            keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise EdgefusionError(f"{what} batch {i}: {keys}, not a dict of {sorted(columns)}")
        sizes = set()
        for m, spec in modalities.items():
            x = _array(batch[m])
            if x.ndim != len(spec.shape) + 1 or x.shape[1:] != spec.shape or not np.isfinite(x).all():
                raise EdgefusionError(
                    f"{what} batch {i}: {m!r} is of shape {x.shape}, but the runtime delivers finite "
                    f"(N, {', '.join(map(str, spec.shape))})"
                )
            sizes.add(len(x))
            columns[m].append(x)
        if len(sizes) != 1:
            raise EdgefusionError(f"{what} batch {i}: the modalities have different batch sizes {sorted(sizes)}")
    if not next(iter(columns.values())):
        raise EdgefusionError(f"{what} has no batches")
    return {m: np.concatenate(v) for m, v in columns.items()}


def _heldout(pairs: Iterable, modalities: Mapping[str, Modality], n_classes: int) -> tuple[dict, np.ndarray]:
    """(inputs, labels) pairs → stacked inputs and integer labels in 0..n_classes-1."""
    inputs, labels = [], []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise EdgefusionError(f"heldout item {i} is not an (inputs dict, labels) pair")
        inputs.append(pair[0])
        y = np.asarray(pair[1].detach().cpu() if isinstance(pair[1], torch.Tensor) else pair[1])
        if y.ndim != 1 or y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() >= n_classes)):
            raise EdgefusionError(f"heldout item {i}: labels must be a 1-D array of class indices 0..{n_classes - 1}")
        labels.append(y.astype(np.int64))
    stacked = _stack(inputs, modalities, "heldout")
    y = np.concatenate(labels)
    if len(y) != len(next(iter(stacked.values()))):
        raise EdgefusionError("heldout: as many labels as samples are needed in every pair")
    return stacked, y


def _check_dynamic_batch(paths: Mapping[str, Path], modalities: Mapping[str, Modality]) -> None:
    """An encoder that fixes the batch size (``x.view(2, -1)``) traces fine and fails on the robot."""
    from edgefusion.export.graph_eval import session

    for m, spec in modalities.items():
        sess = session(paths[m])
        for n in _CHECK_BATCHES:
            try:
                sess.run(None, {m: np.zeros((n, *spec.shape), np.float32)})
            except Exception as err:  # onnxruntime's own exception types
                raise EdgefusionError(
                    f"encoder {m!r} exported for one batch size only (batch {n} fails: {first_line(err)}); "
                    "use x.flatten(1) or x.shape[0], not a fixed batch size"
                ) from None


def _check_fp16_finite(half: LowRankFusion, path: Mapping[str, Path], specs: Mapping[str, Modality]) -> None:
    """Full-scale input must stay finite in true fp16 arithmetic (PyTorch) and in the fp16 graph
    (ONNX Runtime's CPU kernels may compute in fp32 and hide an overflow the Jetson would hit)."""
    from edgefusion.export.graph_eval import session

    for m, spec in specs.items():
        x = spec.extremes()
        with torch.no_grad():
            true_fp16 = half.project(m, half.encoders[m](torch.from_numpy(x))).float().numpy()
        graph = session(path[m]).run(None, {m: x})[0]
        if not (np.isfinite(true_fp16).all() and np.isfinite(graph).all()):
            raise EdgefusionError(
                f"encoder {m!r} overflows fp16 (inf or NaN) on full-scale {spec.sensor} input; keep the layers "
                "before its first normalisation in fp32 (keep_fp32=...) or leave fp16 out of precisions"
            )


def _measure(graphs: dict, names: tuple[str, ...], data: dict, labels: np.ndarray | None, model) -> dict:
    """Accuracy (with labels) and agreement with fp32 per precision and presence pattern, run split
    in ONNX Runtime as the robot runs it; the fp32 checks against the monolithic graph and PyTorch."""
    logits = {}
    for prec, g in graphs.items():
        with np.load(g["absent"]) as z:
            absent = {m: z[m] for m in names}
        logits[prec] = SplitRunner(g, absent, names).logits_by_pattern(data)
    mono = monolithic_logits(graphs["fp32"]["monolithic"], data, names=names)
    split_err = max(rel_err(logits["fp32"][p], mono[p]) for p in mono)
    if split_err > SPLIT_TOLERANCE:
        raise EdgefusionError(
            f"the split graphs disagree with the monolithic graph (relative error {split_err:.2e}); "
            "an encoder must not depend on anything but its own input (no state kept between calls)"
        )
    torch32 = logits_by_pattern(model, data)
    result: dict[str, Any] = {
        "checks": {
            "split_vs_monolithic_rel_err": split_err,
            **({"fp16_full_scale_finite": True} if "fp16" in graphs else {}),
            "ort_vs_torch_rel_err": max(rel_err(logits["fp32"][p], torch32[p]) for p in torch32),
        },
        "agreement_with_fp32": {},
    }
    ref = logits["fp32"]
    for prec, lg in logits.items():
        if prec != "fp32":
            result["agreement_with_fp32"][prec] = {p: float((lg[p].argmax(1) == ref[p].argmax(1)).mean()) for p in ref}
    if labels is not None:
        result["by_precision"] = {
            prec: {p: float((lg[p].argmax(1) == labels).mean()) for p in lg} for prec, lg in logits.items()
        }
    return result


def _export_graphs(
    fp32: LowRankFusion,
    tmp: Path,
    examples: Mapping[str, torch.Tensor],
    specs: Mapping[str, Modality],
    precisions: tuple[str, ...],
    kept: tuple[str, ...],
    calib: CalibrationSet | None,
) -> dict[str, dict[str, Path]]:
    """precision → graph (a modality, "head", "monolithic") or "absent" → its file under ``tmp``."""
    graphs = {"fp32": export_split(fp32, tmp / "fp32", examples, monolithic=True)}
    _check_dynamic_batch(graphs["fp32"], specs)
    if "fp16" in precisions:
        half = to_half(fp32, kept)
        graphs["fp16"] = export_split(half, tmp / "fp16", examples, monolithic=False)
        _check_fp16_finite(half, graphs["fp16"], specs)
    if "int8" in precisions and calib is not None:
        (tmp / "int8").mkdir()

        def keep_float(node: str) -> bool:
            return under(module_path(fp32, node), ("fusion", *kept))

        int8 = {
            g: quantize_graph(graphs["fp32"][g], tmp / "int8" / f"{g}.onnx", calib, keep_float)
            for g in (*fp32.names, "monolithic")
        }
        graphs["int8"] = {**int8, "head": graphs["fp32"]["head"], "absent": graphs["fp32"]["absent"]}
    return graphs


def _accuracy(measured: dict, held, calib: CalibrationSet | None, names: tuple[str, ...], n_classes: int) -> dict:
    accuracy: dict[str, Any] = {
        "measured_on": (
            {"heldout_samples": len(held[1])}
            if held
            else {"calibration_samples": len(calib)}
            if calib
            else {"random_samples": 2}
        ),
        "measured_by": "the bundle's own graphs in ONNX Runtime (CPU), split as the robot runs them",
        "by_precision": measured.get("by_precision", {}),
        "agreement_with_fp32": measured["agreement_with_fp32"],
        "checks": measured["checks"],
        "warnings": [],
    }
    if held:
        near = near_chance_warning(
            accuracy["by_precision"]["fp32"][pattern_name(names, (True,) * len(names))], n_classes
        )
        accuracy["warnings"] += [near] if near else []
    return accuracy


def _body(fp32: LowRankFusion, name: str, labels, specs, variants: dict, calib, kept, accuracy: dict) -> dict:
    """The manifest (format 2) without "format", "format_version" and "files", which write_bundle adds."""
    names = fp32.names
    rank, d_out = fp32.projection_shape
    return {
        "name": name,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "edgefusion_version": edgefusion.__version__,
        "labels": list(labels),
        "modalities": [specs[m].manifest_entry(m, (rank, d_out)) for m in names],
        "head": {"inputs": [f"p_{m}" for m in names], "outputs": ["logits", "probs"]},
        "monolithic": {"inputs": [*names, "present"], "outputs": ["logits", "probs"]},
        "variants": variants,
        "fusion": {
            "kind": "lmf",
            "rank": rank,
            "d_out": d_out,
            "hidden": fp32.fusion.classifier[0].out_features,
            "embedding_dims": fp32.dims,
        },
        "training": {"torch": str(torch.__version__), "onnxruntime": onnxruntime.__version__, "opset": OPSET},
        "calibration": (
            {
                **calib.describe(),
                "method": "MinMax, symmetric int8, per-channel weights, explicit QDQ",
                "quantized_ops": list(QUANTIZED_OPS),
                "kept_float": ["fusion", *kept],
            }
            if "int8" in variants
            else {}
        ),
        "accuracy": accuracy,
    }


def _merged(base: Mapping, own: Mapping) -> dict:
    """``base`` with ``own`` on top, objects merged key by key: provenance never hides a measurement."""
    out = dict(base)
    for k, v in own.items():
        out[k] = _merged(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


@contextmanager
def bundle_contents(
    model: LowRankFusion,
    out: str | Path,
    labels: list[str],
    modalities: Mapping[str, Modality],
    calibration: Iterable[Inputs] | None = None,
    heldout: Iterable[tuple[Inputs, Any]] | None = None,
    precisions: tuple[str, ...] = PRECISIONS,
    name: str | None = None,
    keep_fp32: Iterable[KeepSpec] = (),
    calibration_source: str = "calibration batches given to export_bundle",
    provenance: Mapping[str, Mapping] | None = None,
    warn=None,
) -> Iterator[tuple[dict[str, Path], dict]]:
    """What ``export_bundle`` writes: (bundle-relative path → file, manifest body without "format",
    "format_version" and "files"), in a temp folder that lives while the context is open."""
    _check_request(model, labels, modalities, precisions, calibration, name)
    out = Path(out)
    fp32 = copy.deepcopy(model).float().eval()
    specs = {m: modalities[m] for m in fp32.names}
    examples = _check_encoders(fp32, specs)
    kept = kept_paths(fp32, keep_fp32)
    calib = None
    if calibration is not None:
        calib = CalibrationSet.from_inputs(_stack(calibration, specs, "calibration"), calibration_source)
    held = _heldout(heldout, specs, fp32.n_classes) if heldout is not None else None
    data = held[0] if held else calib.inputs if calib else {m: x.numpy() for m, x in examples.items()}

    with tempfile.TemporaryDirectory(prefix="edgefusion-export-") as tmp_name:
        tmp = Path(tmp_name)
        graphs = _export_graphs(fp32, tmp, examples, specs, tuple(precisions), kept, calib)
        measured = _measure(graphs, fp32.names, data, held[1] if held else None, fp32)
        accuracy = _accuracy(measured, held, calib, fp32.names, fp32.n_classes)
        for line in accuracy["warnings"]:
            if warn is not None:
                warn(f"WARNING: {out}: {line}")
        variants = {}
        for prec, g in graphs.items():
            rel = {k: p.relative_to(tmp).as_posix() for k, p in g.items()}
            variants[prec] = {"graphs": {k: v for k, v in rel.items() if k != "absent"}, "absent": rel["absent"]}
        body = _body(fp32, name or out.resolve().name, labels, specs, variants, calib, kept, accuracy)
        for key, extra in (provenance or {}).items():
            body[key] = _merged(extra, body.get(key, {}))
        yield {p.relative_to(tmp).as_posix(): p for g in graphs.values() for p in g.values()}, body


def export_bundle(
    model: LowRankFusion,
    out: str | Path,
    labels: list[str],
    modalities: Mapping[str, Modality],
    calibration: Iterable[Inputs] | None = None,
    heldout: Iterable[tuple[Inputs, Any]] | None = None,
    precisions: tuple[str, ...] = PRECISIONS,
    name: str | None = None,
    keep_fp32: Iterable[KeepSpec] = (),
    calibration_source: str = "calibration batches given to export_bundle",
    provenance: Mapping[str, Mapping] | None = None,
    warn=None,
) -> Path:
    """Export ``model`` to a bundle folder ``out`` (replaced whole, atomically); returns ``out``.

    ``calibration``: input dicts (name → (N, ...) raw input as the runtime delivers it), needed for
    int8. ``heldout``: (input dict, labels) pairs; with it the manifest's accuracy table holds
    accuracy per precision and presence pattern, without it only agreement with fp32 (measured on
    the calibration batches, else on random inputs). ``keep_fp32``: submodule names or types left
    fp32 in the fp16 variant and float in int8 (an audio front end). ``provenance``: extra entries
    under the manifest's "training", "accuracy", "calibration" or "fusion" (what export_bundle measures
    itself wins). ``warn`` is told
    (one line) when held-out accuracy is near chance.
    """
    with bundle_contents(
        model,
        out,
        labels,
        modalities,
        calibration,
        heldout,
        precisions,
        name,
        keep_fp32,
        calibration_source,
        provenance,
        warn,
    ) as (files, body):
        return write_bundle(out, files, body)
