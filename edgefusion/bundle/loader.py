"""Open a model bundle only after proving it is whole and untouched.

A robot must never run a partial copy or a modified graph, so every file is checked against the
sizes and sha256 digests in manifest.json before anything is handed to a runtime.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from importlib.resources import files as package_files
from pathlib import Path

import numpy as np

from edgefusion.bundle.manifest import GRAPHS, MANIFEST, validate_manifest
from edgefusion.errors import BundleError
from edgefusion.modalities import MODALITIES

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Bundle:
    """A verified bundle folder and its manifest; paths it hands out point into ``root``."""

    root: Path
    manifest: dict
    _absent: dict[str, dict[str, np.ndarray]] = field(repr=False, compare=False)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.manifest["labels"])

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(self.manifest["variants"])

    @property
    def accuracy(self) -> dict:
        return self.manifest.get("accuracy", {})

    def graph_path(self, precision: str, graph: str) -> Path:
        """The ONNX file of ``graph`` (a modality, "head" or "monolithic") in the ``precision`` variant."""
        graphs = self._variant(precision)["graphs"]
        if graph not in GRAPHS or graph not in graphs:
            raise BundleError(
                f"{self.root}: no graph {graph!r} in the {precision} variant; choose one of {', '.join(graphs)}"
            )
        return self.root / graphs[graph]

    def absent(self, precision: str) -> dict[str, np.ndarray]:
        """Per modality, the (read-only) projection an absent modality contributes to the head."""
        return dict(self._absent[self._variant(precision)["absent"]])

    def input_spec(self, modality: str) -> dict:
        """The graph input of ``modality``: its name, shape (with a "batch" axis) and dtype."""
        if modality not in MODALITIES:
            raise BundleError(f"{self.root}: no modality {modality!r}; choose one of {', '.join(MODALITIES)}")
        return self.manifest["modalities"][modality]["input"]

    def _variant(self, precision: str) -> dict:
        if precision not in self.manifest["variants"]:
            raise BundleError(
                f"{self.root}: the bundle has no {precision!r} variant; choose one of {', '.join(self.precisions)}"
            )
        return self.manifest["variants"][precision]


def default_bundle_path() -> Path:
    """The demo bundle shipped inside the package, so the robot side runs without an export step."""
    return Path(str(package_files("edgefusion") / "demo_bundle"))


def load_bundle(path: str | Path) -> Bundle:
    """Read and verify the bundle folder at ``path``; BundleError (one line) if it must not be used."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(
            f"{root}: not a bundle folder (missing or not a directory); pass the folder holding {MANIFEST}"
        )
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(
            f"{root}: {MANIFEST} is missing: not a bundle, or a partial copy; copy the whole folder again"
        )
    try:
        doc = json.loads(manifest_path.read_bytes())
    except json.JSONDecodeError as e:
        raise BundleError(
            f"{root}: {MANIFEST} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
            "copy the bundle again or export it again"
        ) from None
    except UnicodeDecodeError:
        raise BundleError(f"{root}: {MANIFEST} is not UTF-8 text; copy the bundle again or export it again") from None
    validate_manifest(doc, str(root))

    # Sizes first: a partial copy is reported at once, before hashing gigabytes.
    for rel, entry in doc["files"].items():
        file = root / rel
        if not file.is_file():
            raise BundleError(f"{root}: {rel} is missing: the bundle is partial; copy the whole folder again")
        size = file.stat().st_size
        if size != entry["bytes"]:
            raise BundleError(
                f"{root}: {rel} is {size} bytes but {MANIFEST} says {entry['bytes']}: "
                "it was truncated or grown in transfer; copy the whole folder again"
            )
    for rel, entry in doc["files"].items():
        if sha256_file(root / rel) != entry["sha256"]:
            raise BundleError(
                f"{root}: {rel} does not match its sha256 in {MANIFEST}: the file is corrupted or was tampered with; "
                "copy the bundle again from a trusted source"
            )

    absent_files = dict.fromkeys(variant["absent"] for variant in doc["variants"].values())
    return Bundle(root, doc, {rel: read_absent(root / rel, rel, doc, str(root)) for rel in absent_files})


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so large graphs never sit whole in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_absent(path: Path, rel: str, manifest: dict, where: str) -> dict[str, np.ndarray]:
    """The absent-modality projections in ``path``, checked against the manifest's output shapes.

    Arrays come back read-only: they are shared by every caller of ``Bundle.absent``.
    """
    arrays = _read_npz(path)
    if arrays is None:
        raise BundleError(f"{where}: {rel} is not a readable .npz of plain arrays; export the bundle again")
    if set(arrays) != set(MODALITIES):
        raise BundleError(
            f"{where}: {rel} holds arrays {sorted(arrays)}, not exactly {list(MODALITIES)}; export the bundle again"
        )
    for m in MODALITIES:
        array = arrays[m]
        want = tuple(manifest["modalities"][m]["output"]["shape"][1:])
        if array.dtype != np.float32 or array.shape != want:
            raise BundleError(
                f"{where}: {rel} array {m!r} is {array.dtype} of shape {array.shape}, not float32 of shape {want} "
                f"(the {m} output without its batch axis); export the bundle again"
            )
        if not np.isfinite(array).all():
            raise BundleError(f"{where}: {rel} array {m!r} holds NaN or infinite values; export the bundle again")
        array.flags.writeable = False
    return arrays


def _read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of an .npz file, or None if it is not one (np.load also takes .npy files, refuses pickles)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return None
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
