"""The bundle's manifest.json: its format and the checks every reader and writer applies to it.

Writer and loader share ``validate_manifest`` so that a writer can never produce a manifest the
loader refuses. Every error names the bundle folder and the offending key or file in one line.

Format 2 makes the manifest the runtime's whole contract: which modalities there are (1 to 3, in
the order of the head's inputs, the presence mask's columns and the monolithic graph's inputs),
which sensor stream feeds each, and the raw shapes, sample rate and window each stream must deliver.
"""

from __future__ import annotations

import math
import re
from typing import Any

from edgefusion.errors import BundleError
from edgefusion.modalities import STREAMS, ModalitySpec

FORMAT = "edgefusion-bundle"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
# Graph keys of a variant beside its modalities' names (which the manifest chooses). The
# monolithic graph (a comparison baseline and the split == monolithic check) is required in fp32 only.
HEAD, MONOLITHIC = "head", "monolithic"
# A modality's name keys its graph in every variant, and the monolithic graph takes "present": these are taken.
RESERVED_NAMES = (HEAD, MONOLITHIC, "present")
_MODALITY_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
MAX_MODALITIES = len(STREAMS)  # each stream feeds at most one modality
# What a stream can deliver: image sides, audio sample rates and windows, data rates.
MIN_SIDE, MAX_SIDE = 8, 4096
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384_000
MAX_WINDOW_S = 10.0
MAX_RATE_HZ = 1000.0
_CHANNELS = {"rgb": 3, "depth": 1}  # the image streams' channel axis

# Bounds, so that a damaged or hostile manifest is refused in one line before anything is allocated:
# far above any model this runtime is for, far below what would exhaust a Jetson's memory.
MAX_ELEMENTS = 1 << 22  # per tensor, batch axis left out (16 MiB of float32)
MAX_DIMS = 6
MAX_LABELS = 1000
MAX_NAME_CHARS = 100  # labels, tensor and axis names
MAX_FILES = 64  # files listed, and entries (files and folders) in the bundle folder
MAX_FILE_BYTES = (1 << 31) - 1  # protobuf's limit for one ONNX graph
MAX_VARIANTS = 8
MAX_MANIFEST_BYTES = 1 << 20
MAX_JSON_DEPTH = 32  # json.loads itself gives up near 1000 levels, with a RecursionError

REEXPORT = "export the bundle again with edgefusion-export"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PRECISION = re.compile(r"[a-z0-9_]{1,16}")


def validate_manifest(doc: Any, where: str) -> None:
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
    _need(
        where,
        "labels",
        _names(labels) and 0 < len(labels) <= MAX_LABELS,
        f"a list of 1 to {MAX_LABELS} labels (printable strings of up to {MAX_NAME_CHARS} characters)",
    )
    if len(set(labels)) != len(labels):
        twice = sorted({label for label in labels if labels.count(label) > 1})
        raise BundleError(f"{where}: {MANIFEST} labels names {', '.join(map(repr, twice))} more than once; {REEXPORT}")
    names = _validate_modalities(doc.get("modalities"), where)
    for key, inputs in (("head", len(names)), ("monolithic", len(names) + 1)):
        _need(
            where,
            key,
            _io_names(doc.get(key), inputs, 2),
            f"an object with inputs ({inputs} distinct tensor names: one per modality"
            + (", then the presence mask" if key == "monolithic" else "")
            + ") and outputs (2 distinct tensor names)",
        )
    for key in ("training", "calibration", "accuracy"):
        _need(where, key, isinstance(doc.get(key, {}), dict), "an object")
    _need(
        where,
        "accuracy.by_precision",
        _score_tables(doc.get("accuracy", {}).get("by_precision", {})),
        "an object of precisions, each an object of finite numbers",
    )

    files = doc.get("files")
    _need(
        where,
        "files",
        isinstance(files, dict) and len(files) <= MAX_FILES,
        f"an object mapping each bundle file (at most {MAX_FILES}) to its sha256 and bytes",
    )
    for rel, entry in files.items():
        if rel == MANIFEST or not _inside(rel):
            raise BundleError(
                f"{where}: {MANIFEST} files lists {rel!r}, which is not a file inside the bundle "
                f"beside {MANIFEST}; {REEXPORT}"
            )
        _need(
            where,
            f"files[{rel!r}]",
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and _SHA256.fullmatch(entry["sha256"]) is not None
            and type(entry.get("bytes")) is int
            and 0 <= entry["bytes"] <= MAX_FILE_BYTES,
            f"an object with sha256 (64 lowercase hex digits) and bytes (a size of at most {MAX_FILE_BYTES})",
        )

    variants = doc.get("variants")
    _need(
        where,
        "variants",
        isinstance(variants, dict)
        and "fp32" in variants
        and len(variants) <= MAX_VARIANTS
        and all(_PRECISION.fullmatch(p) for p in variants),
        f'an object of at most {MAX_VARIANTS} precisions (like "fp16") that includes "fp32"',
    )
    split = (*names, HEAD)
    for precision in variants:
        graphs = _at(variants, precision, "graphs")
        unknown = sorted(set(graphs) - {*split, MONOLITHIC}) if isinstance(graphs, dict) else []
        if unknown:
            raise BundleError(
                f"{where}: {MANIFEST} variants.{precision}.graphs has {unknown[0]!r}, which is neither a modality "
                f"of this bundle nor {HEAD} or {MONOLITHIC} ({', '.join((*split, MONOLITHIC))}); {REEXPORT}"
            )
        monolithic = precision == "fp32" or _at(variants, precision, "graphs", MONOLITHIC) is not None
        needed = (*split, MONOLITHIC) if monolithic else split
        paths = {f"variants.{precision}.graphs.{g}": _at(variants, precision, "graphs", g) for g in needed}
        paths[f"variants.{precision}.absent"] = _at(variants, precision, "absent")
        for key, rel in paths.items():
            _need(where, key, isinstance(rel, str), "a bundle-relative file path")
            if not _inside(rel):
                raise BundleError(
                    f"{where}: {MANIFEST} {key} is {rel!r}, which points outside the bundle folder "
                    f"(absolute or '..'); {REEXPORT}"
                )
            if rel not in files:
                raise BundleError(
                    f"{where}: {MANIFEST} {key} names {rel!r}, which is not listed in files "
                    f"and so cannot be verified; {REEXPORT}"
                )


def _validate_modalities(modalities: Any, where: str) -> tuple[str, ...]:
    """The modalities' names, in manifest order, once every entry is one the runtime can feed."""
    _need(
        where,
        "modalities",
        isinstance(modalities, list) and 0 < len(modalities) <= MAX_MODALITIES,
        f"a list of 1 to {MAX_MODALITIES} modalities",
    )
    names: list[str] = []
    sensors: list[str] = []
    for i, entry in enumerate(modalities):
        key = f"modalities[{i}]"
        _need(where, key, isinstance(entry, dict), "an object")
        name = entry.get("name")
        _need(
            where,
            f"{key}.name",
            isinstance(name, str) and _MODALITY_NAME.fullmatch(name) and name not in RESERVED_NAMES,
            f"a name of 1 to 32 lowercase letters, digits and _ (starting with a letter), "
            f"other than {', '.join(RESERVED_NAMES)}",
        )
        if name in names:
            raise BundleError(f"{where}: {MANIFEST} {key}.name {name!r} names two modalities; {REEXPORT}")
        sensor = entry.get("sensor")
        _need(where, f"{key}.sensor", sensor in STREAMS, f"one of the sensor streams {', '.join(STREAMS)}")
        if sensor in sensors:
            raise BundleError(
                f"{where}: {MANIFEST} {key}.sensor {sensor!r} feeds both {names[sensors.index(sensor)]!r} and "
                f"{name!r}: a stream feeds at most one modality; {REEXPORT}"
            )
        names.append(name)
        sensors.append(sensor)
        for side in ("input", "output"):
            _need(where, f"{key}.{side}", _tensor_spec(entry.get(side)), _TENSOR_SPEC)
        rate = entry.get("rate_hz")
        _need(
            where,
            f"{key}.rate_hz",
            _number(rate) and 0 < rate <= MAX_RATE_HZ,
            f"a number of new samples per second in (0, {MAX_RATE_HZ:g}]",
        )
        _check_input_shape(entry, key, where)
    return tuple(names)


def _check_input_shape(entry: dict, key: str, where: str) -> None:
    """The input is what the entry's stream delivers: an image [C, H, W] of the stream's channels,
    or an audio window of sample_rate × window_s samples."""
    sensor, shape = entry["sensor"], tuple(entry["input"]["shape"][1:])
    if sensor == "audio":
        rate: Any = entry.get("sample_rate")
        window: Any = entry.get("window_s")
        _need(
            where,
            f"{key}.sample_rate",
            type(rate) is int and MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE,
            f"an integer sample rate of {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz",
        )
        _need(
            where,
            f"{key}.window_s",
            _number(window) and 0 < window <= MAX_WINDOW_S,
            f"a window length in seconds in (0, {MAX_WINDOW_S:g}]",
        )
        samples = round(rate * window)
        if shape != (samples,):
            raise BundleError(
                f"{where}: {MANIFEST} {key}.input.shape is {list(shape)} after the batch axis, but an audio window "
                f"of {window:g} s at {rate} Hz is [{samples}] (sample_rate × window_s); {REEXPORT}"
            )
        return
    for extra in ("sample_rate", "window_s"):
        if extra in entry:
            raise BundleError(
                f"{where}: {MANIFEST} {key}.{extra} is set, but only an audio modality has one; {REEXPORT}"
            )
    channels = _CHANNELS[sensor]
    if not (len(shape) == 3 and shape[0] == channels and all(MIN_SIDE <= side <= MAX_SIDE for side in shape[1:])):
        raise BundleError(
            f"{where}: {MANIFEST} {key}.input.shape is {list(shape)} after the batch axis, but the {sensor} stream "
            f"delivers [{channels}, height, width] with sides of {MIN_SIDE} to {MAX_SIDE}; {REEXPORT}"
        )


def modality_specs(doc: dict) -> tuple[ModalitySpec, ...]:
    """The modalities of a validated manifest, typed, in manifest order."""
    return tuple(
        ModalitySpec(
            name=entry["name"],
            sensor=entry["sensor"],
            shape=tuple(entry["input"]["shape"][1:]),
            input_name=entry["input"]["name"],
            output_name=entry["output"]["name"],
            projection=tuple(entry["output"]["shape"][1:]),
            rate_hz=float(entry["rate_hz"]),
            sample_rate=entry.get("sample_rate"),
            window_s=None if entry.get("window_s") is None else float(entry["window_s"]),
        )
        for entry in doc["modalities"]
    )


def _number(value: Any) -> bool:
    """A finite JSON number (bool is not one)."""
    return type(value) in (int, float) and math.isfinite(value)


def _need(where: str, key: str, ok: Any, what: str) -> None:
    if not ok:
        raise BundleError(f"{where}: {MANIFEST} {key} is missing or is not {what}; {REEXPORT}")


def _at(doc: Any, *keys: str) -> Any:
    """``doc[k1][k2]...``, or None where a level is missing or not an object."""
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def _name(value: Any) -> bool:
    """A string that fits on one line of a message: printable, 1 to MAX_NAME_CHARS characters."""
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS and value.isprintable()


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(_name(v) for v in value)


def _io_names(spec: Any, n_inputs: int, n_outputs: int) -> bool:
    """A graph's declared inputs and outputs: that many names, all distinct."""
    if not isinstance(spec, dict):
        return False
    inputs: Any = spec.get("inputs")
    outputs: Any = spec.get("outputs")
    return (
        _names(inputs)
        and _names(outputs)
        and (len(inputs), len(outputs)) == (n_inputs, n_outputs)
        and len(set(inputs + outputs)) == n_inputs + n_outputs
    )


_TENSOR_SPEC = (
    f"an object with name (a string), dtype float32 and shape (a batch axis name, then up to {MAX_DIMS - 1} sizes "
    f"of at most {MAX_ELEMENTS} elements in all)"
)


def _tensor_spec(spec: Any) -> bool:
    """name, dtype float32 (every buffer the backends bind is float32), and a shape the runtime can
    allocate: a batch axis (a name, or 1) followed by positive sizes whose product is bounded."""
    if not (isinstance(spec, dict) and _name(spec.get("name")) and spec.get("dtype") == "float32"):
        return False
    shape = spec.get("shape")
    if not (isinstance(shape, list) and 1 < len(shape) <= MAX_DIMS and (_name(shape[0]) or _size(shape[0]))):
        return False
    elements = 1
    for d in shape[1:]:
        if not _size(d):
            return False
        elements *= d
    return elements <= MAX_ELEMENTS


def _size(d: Any) -> bool:
    return type(d) is int and 0 < d <= MAX_ELEMENTS


def _score_tables(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(table, dict) and all(type(v) in (int, float) and math.isfinite(v) for v in table.values())
        for table in value.values()
    )


def _inside(rel: str) -> bool:
    """A plain relative POSIX path ("fp16/rgb.onnx"): not absolute, no "..", ".", or empty parts, printable."""
    return rel.isprintable() and all(part not in ("", ".", "..") for part in rel.split("/"))
