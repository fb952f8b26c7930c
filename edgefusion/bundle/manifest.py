"""The bundle's manifest.json: its format and the checks every reader and writer applies to it.

Writer and loader share ``validate_manifest`` so that a writer can never produce a manifest the
loader refuses. Every error names the bundle folder and the offending key or file in one line.
"""

from __future__ import annotations

import re
from typing import Any

from edgefusion.errors import BundleError
from edgefusion.modalities import MODALITIES

FORMAT = "edgefusion-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GRAPHS = (*MODALITIES, "head", "monolithic")
# What every variant must carry: the split graphs the runtime runs. The monolithic graph (a
# comparison baseline and the split == monolithic check) is required in fp32 only.
SPLIT_GRAPHS = (*MODALITIES, "head")

_REEXPORT = "export the bundle again with edgefusion-export"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def validate_manifest(doc: dict, where: str) -> None:
    """Raise BundleError unless ``doc`` is a complete manifest of this format version.

    ``where`` is the bundle folder, named in every message. Only the structure the runtime relies
    on is checked; provenance ("training", "calibration", "accuracy") is free-form.
    """
    found = doc.get("format") if isinstance(doc, dict) else None
    if found != FORMAT:
        raise BundleError(
            f"{where}: {MANIFEST} is not an {FORMAT} manifest (format is {found!r}); "
            "point at a folder written by edgefusion-export"
        )
    version = doc.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise BundleError(
            f"{where}: {MANIFEST} format version {version!r} is not supported by this edgefusion "
            f"(it reads version {FORMAT_VERSION}); export the bundle again with a matching edgefusion-export"
        )

    labels = doc.get("labels")
    _need(where, "labels", _strings(labels) and len(labels) > 0, "a non-empty list of strings")
    modalities = doc.get("modalities")
    _need(
        where,
        "modalities",
        isinstance(modalities, dict) and set(modalities) == set(MODALITIES),
        f"an object with exactly the keys {', '.join(MODALITIES)}",
    )
    for m in MODALITIES:
        for side in ("input", "output"):
            _need(
                where,
                f"modalities.{m}.{side}",
                _tensor_spec(_at(modalities, m, side)),
                "an object with name (string), shape (list of sizes and axis names) and dtype (string)",
            )
    head = doc.get("head")
    _need(
        where,
        "head",
        isinstance(head, dict) and _strings(head.get("inputs")) and _strings(head.get("outputs")),
        "an object with inputs and outputs (lists of strings)",
    )
    for key in ("training", "calibration", "accuracy"):
        _need(where, key, isinstance(doc.get(key, {}), dict), "an object")

    files = doc.get("files")
    _need(where, "files", isinstance(files, dict), "an object mapping each bundle file to its sha256 and bytes")
    for rel, entry in files.items():
        if rel == MANIFEST or not _inside(rel):
            raise BundleError(
                f"{where}: {MANIFEST} files lists {rel!r}, which is not a file inside the bundle "
                f"beside {MANIFEST}; {_REEXPORT}"
            )
        _need(
            where,
            f"files[{rel!r}]",
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and _SHA256.fullmatch(entry["sha256"]) is not None
            and type(entry.get("bytes")) is int
            and entry["bytes"] >= 0,
            "an object with sha256 (64 lowercase hex digits) and bytes (a size)",
        )

    variants = doc.get("variants")
    _need(
        where,
        "variants",
        isinstance(variants, dict) and "fp32" in variants,
        'an object of precisions that includes "fp32"',
    )
    for precision in variants:
        needed = GRAPHS if precision == "fp32" else (*SPLIT_GRAPHS, *_present(variants, precision, "monolithic"))
        paths = {f"variants.{precision}.graphs.{g}": _at(variants, precision, "graphs", g) for g in needed}
        paths[f"variants.{precision}.absent"] = _at(variants, precision, "absent")
        for key, rel in paths.items():
            _need(where, key, isinstance(rel, str), "a bundle-relative file path")
            if not _inside(rel):
                raise BundleError(
                    f"{where}: {MANIFEST} {key} is {rel!r}, which points outside the bundle folder "
                    f"(absolute or '..'); {_REEXPORT}"
                )
            if rel not in files:
                raise BundleError(
                    f"{where}: {MANIFEST} {key} names {rel!r}, which is not listed in files "
                    f"and so cannot be verified; {_REEXPORT}"
                )


def _need(where: str, key: str, ok: Any, what: str) -> None:
    if not ok:
        raise BundleError(f"{where}: {MANIFEST} {key} is missing or is not {what}; {_REEXPORT}")


def _present(variants: dict, precision: str, graph: str) -> tuple[str, ...]:
    return (graph,) if _at(variants, precision, "graphs", graph) is not None else ()


def _at(doc: Any, *keys: str) -> Any:
    """``doc[k1][k2]...``, or None where a level is missing or not an object."""
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _tensor_spec(spec: Any) -> bool:
    return (
        isinstance(spec, dict)
        and isinstance(spec.get("name"), str)
        and isinstance(spec.get("dtype"), str)
        and isinstance(spec.get("shape"), list)
        and len(spec["shape"]) > 0
        and all((type(d) is int and d > 0) or (isinstance(d, str) and d) for d in spec["shape"])
    )


def _inside(rel: str) -> bool:
    """A plain relative POSIX path ("fp16/rgb.onnx"): not absolute, no "..", ".", or empty parts."""
    return all(part not in ("", ".", "..") for part in rel.split("/"))
