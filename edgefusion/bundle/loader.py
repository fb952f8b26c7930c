"""Open a model bundle only after proving it is whole, untouched, and runs.

A robot must never run a partial copy or a modified graph, so every file is checked against the
sizes and sha256 digests in manifest.json before anything is handed to a runtime. "Verified" also
means "runs": every graph's inputs and outputs must be the ones the manifest declares, the labels
must match the head's width, and each graph is run once on zeros (finite outputs of the declared
shape). The rule for files: the folder holds manifest.json and exactly the files it lists, all
regular files (no links, no devices or FIFOs), and a graph carries its weights inside itself (no
ONNX external data), so every byte a bundle runs is listed and hashed and nothing outside the
folder is read. What runs is the very bytes that were hashed: the graphs stay in memory.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
import zipfile
from dataclasses import dataclass, field
from importlib.resources import files as package_files
from pathlib import Path

import numpy as np

from edgefusion.bundle.graphs import check_graph, graph_io
from edgefusion.bundle.manifest import (
    MANIFEST,
    MAX_ELEMENTS,
    MAX_FILES,
    MAX_JSON_DEPTH,
    MAX_MANIFEST_BYTES,
    MAX_MODALITIES,
    REEXPORT,
    modality_specs,
    validate_manifest,
)
from edgefusion.errors import BundleError
from edgefusion.modalities import STREAMS, ModalitySpec

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Bundle:
    """A verified bundle folder and its manifest; paths it hands out point into ``root``.

    ``modalities`` are the manifest's, in its order: the order of the head's inputs, the presence
    mask's columns and every per-modality tuple the runtime hands around."""

    root: Path
    manifest: dict
    modalities: tuple[ModalitySpec, ...]
    _absent: dict[str, dict[str, np.ndarray]] = field(repr=False, compare=False)
    _graphs: dict[str, bytes] = field(repr=False, compare=False)

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
        return self.root / self._graph_rel(precision, graph)

    def graph_bytes(self, precision: str, graph: str) -> bytes:
        """The verified bytes of that graph: open sessions from these, not from the file, so what
        runs is exactly what was hashed and checked, whatever happens to the folder since."""
        return self._graphs[self._graph_rel(precision, graph)]

    def absent(self, precision: str) -> dict[str, np.ndarray]:
        """Per modality, the (read-only) projection an absent modality contributes to the head."""
        return dict(self._absent[self._variant(precision)["absent"]])

    @property
    def names(self) -> tuple[str, ...]:
        """The modalities' names, in manifest order."""
        return tuple(spec.name for spec in self.modalities)

    def modality(self, name: str) -> ModalitySpec:
        """The modality called ``name``: its input, projection, stream and rates."""
        for spec in self.modalities:
            if spec.name == name:
                return spec
        raise BundleError(f"{self.root}: no modality {name!r}; choose one of {', '.join(self.names)}")

    def stream(self, sensor: str) -> ModalitySpec | None:
        """The modality that ``sensor`` (a stream: rgb, depth or audio) feeds, or None if it feeds none."""
        if sensor not in STREAMS:
            raise BundleError(f"no sensor stream {sensor!r}; choose one of {', '.join(STREAMS)}")
        return next((spec for spec in self.modalities if spec.sensor == sensor), None)

    def _graph_rel(self, precision: str, graph: str) -> str:
        graphs = self._variant(precision)["graphs"]
        if graph not in graphs:
            raise BundleError(
                f"{self.root}: no graph {graph!r} in the {precision} variant; choose one of {', '.join(graphs)}"
            )
        return graphs[graph]

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
    if not _exists(root, root, ".", follow=True) or not root.is_dir():
        raise BundleError(
            f"{root}: not a bundle folder (missing or not a directory); pass the folder holding {MANIFEST}"
        )
    where = str(root)
    if not _exists(root, root / MANIFEST, MANIFEST):
        raise BundleError(
            f"{root}: {MANIFEST} is missing: not a bundle, or a partial copy; copy the whole folder again"
        )
    found = _regular_files(root)
    doc = parse_manifest(_read(root, MANIFEST, found, limit=MAX_MANIFEST_BYTES), where)
    validate_manifest(doc, where)

    # Sizes first: a partial copy is reported at once, before hashing gigabytes.
    for rel, entry in doc["files"].items():
        _need_file(root, rel, found)
        if found[rel] != entry["bytes"]:
            raise BundleError(
                f"{root}: {rel} is {found[rel]} bytes but {MANIFEST} says {entry['bytes']}: "
                "it was truncated or grown in transfer; copy the whole folder again"
            )
    unlisted = sorted(set(found) - set(doc["files"]) - {MANIFEST})
    if unlisted:
        raise BundleError(
            f"{root}: {unlisted[0]} is not listed in {MANIFEST}: every file of a bundle must be listed and hashed; "
            "remove it, or copy the bundle again from its export"
        )
    data = {}
    for rel, entry in doc["files"].items():
        data[rel] = _read(root, rel, found, limit=entry["bytes"])
        if hashlib.sha256(data[rel]).hexdigest() != entry["sha256"]:
            raise BundleError(
                f"{root}: {rel} does not match its sha256 in {MANIFEST}: the file is corrupted or was tampered with; "
                "copy the bundle again from a trusted source"
            )
    absent, graphs = verify_contents(doc, data, where)
    return Bundle(root, doc, modality_specs(doc), absent, graphs)


def parse_manifest(text: bytes, where: str) -> dict:
    """manifest.json as a document of bounded depth; BundleError for anything that is not plain JSON.

    Duplicate keys (which one counts?) and NaN/Infinity (not JSON) are refused too."""

    def unique_keys(pairs: list) -> dict:
        doc = dict(pairs)
        if len(doc) != len(pairs):
            twice = sorted({k for k, _ in pairs if [p[0] for p in pairs].count(k) > 1})
            raise BundleError(f"{where}: {MANIFEST} has the key {twice[0]!r} twice in one object; {REEXPORT}")
        return doc

    def not_a_number(name: str):
        raise BundleError(f"{where}: {MANIFEST} holds {name}, which is not JSON; {REEXPORT}")

    try:
        doc = json.loads(text, object_pairs_hook=unique_keys, parse_constant=not_a_number)
    except json.JSONDecodeError as e:
        raise BundleError(
            f"{where}: {MANIFEST} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
            "copy the bundle again or export it again"
        ) from None
    except UnicodeDecodeError:
        raise BundleError(f"{where}: {MANIFEST} is not UTF-8 text; copy the bundle again or export it again") from None
    except RecursionError:
        raise BundleError(f"{where}: {MANIFEST} nests deeper than {MAX_JSON_DEPTH} levels; {REEXPORT}") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise BundleError(f"{where}: {MANIFEST} cannot be read as JSON ({e}); {REEXPORT}") from None
    if _depth(doc) > MAX_JSON_DEPTH:
        raise BundleError(f"{where}: {MANIFEST} nests deeper than {MAX_JSON_DEPTH} levels; {REEXPORT}")
    return doc


def verify_contents(doc: dict, data: dict[str, bytes], where: str) -> tuple[dict, dict[str, bytes]]:
    """(absent arrays by file, graph bytes by file) of a validated manifest whose files' bytes are
    ``data``: every absent.npz and every graph checked against the manifest and run once.

    The writer calls this on the files it is about to write, so it cannot write a bundle the loader refuses."""
    absent_files = dict.fromkeys(variant["absent"] for variant in doc["variants"].values())
    absent = {rel: read_absent(data[rel], rel, doc, where) for rel in absent_files}
    graphs = {rel: data[rel] for variant in doc["variants"].values() for rel in variant["graphs"].values()}
    checked: set[tuple[str, str]] = set()
    for precision, variant in doc["variants"].items():
        for graph, rel in variant["graphs"].items():
            if (rel, graph) not in checked:
                check_graph(data[rel], rel, f"{precision} {graph}", graph_io(doc, graph), where)
                checked.add((rel, graph))
    return absent, graphs


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so large graphs never sit whole in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_absent(data: bytes, rel: str, manifest: dict, where: str) -> dict[str, np.ndarray]:
    """The absent-modality projections in ``data`` (an .npz), checked against the manifest's output shapes.

    Arrays come back read-only: they are shared by every caller of ``Bundle.absent``.
    """
    arrays = _read_npz(data)
    if arrays is None:
        raise BundleError(f"{where}: {rel} is not a readable .npz of plain arrays; export the bundle again")
    specs = modality_specs(manifest)
    names = [spec.name for spec in specs]
    if set(arrays) != set(names):
        raise BundleError(
            f"{where}: {rel} holds arrays {sorted(arrays)}, not exactly the modalities {names}; export the bundle again"
        )
    for spec in specs:
        array = arrays[spec.name]
        if array.dtype != np.float32 or array.shape != spec.projection:
            raise BundleError(
                f"{where}: {rel} array {spec.name!r} is {array.dtype} of shape {array.shape}, not float32 of shape "
                f"{spec.projection} (the {spec.name} output without its batch axis); export the bundle again"
            )
        if not np.isfinite(array).all():
            raise BundleError(
                f"{where}: {rel} array {spec.name!r} holds NaN or infinite values; export the bundle again"
            )
        array.flags.writeable = False
    return arrays


def _read_npz(data: bytes) -> dict[str, np.ndarray] | None:
    """The arrays of .npz bytes, or None if they are not a small archive of plain arrays.

    Each member's declared size is bounded first: np.load would allocate whatever a header says."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
        if len(members) > MAX_MODALITIES or any(m.file_size > 4 * MAX_ELEMENTS + 4096 for m in members):
            return None
        with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
            arrays = {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None
    return arrays if all(isinstance(a, np.ndarray) for a in arrays.values()) else None


# -- the folder ---------------------------------------------------------------------------------------


def _regular_files(root: Path) -> dict[str, int]:
    """Every regular file under ``root`` (bundle-relative POSIX path → size), links not followed.

    A symbolic link, FIFO, socket or device anywhere in the folder is refused: a link could pull a
    file from outside the bundle (install.sh copies the folder as root), a FIFO would block a read."""
    found: dict[str, int] = {}
    entries = 0
    folders = [""]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(root / folder) as it:
                listing = sorted(it, key=lambda e: e.name)
        except OSError as err:
            raise _unreadable(root, folder or ".", err) from None
        for entry in listing:
            rel = f"{folder}/{entry.name}" if folder else entry.name
            entries += 1
            if entries > MAX_FILES:
                raise BundleError(
                    f"{root}: holds more than {MAX_FILES} files and folders: not a bundle folder; "
                    f"pass the folder holding {MANIFEST}"
                )
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as err:  # a folder listed but not searchable (mode r without x)
                raise _unreadable(root, rel, err) from None
            if stat.S_ISDIR(st.st_mode):
                folders.append(rel)
            elif stat.S_ISREG(st.st_mode):
                found[rel] = st.st_size
            else:
                fix = "replace it by the file itself" if stat.S_ISLNK(st.st_mode) else "remove it"
                raise BundleError(
                    f"{root}: {rel} is {_kind(st.st_mode)}: a bundle holds only plain files and folders, "
                    f"so that nothing outside it is read; {fix}, or copy the bundle again from its export"
                )
    return found


def _exists(root: Path, path: Path, rel: str, follow: bool = False) -> bool:
    """Whether ``path`` exists (a link counts, unless ``follow``); a folder on the way that cannot
    be searched is said as such, not taken for a missing file."""
    try:
        os.stat(path, follow_symlinks=follow)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as err:
        raise _unreadable(root, rel, err) from None
    return True


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device file"


def _need_file(root: Path, rel: str, found: dict[str, int]) -> None:
    if rel not in found:
        if (root / rel).is_dir():
            raise BundleError(f"{root}: {rel} is a folder where a file should be; copy the whole folder again")
        raise BundleError(f"{root}: {rel} is missing: the bundle is partial; copy the whole folder again")


def _read(root: Path, rel: str, found: dict[str, int], limit: int) -> bytes:
    """The bytes of a regular file found in the folder, at most ``limit`` of them (then BundleError).

    Opened without following a link and checked to be the regular file the listing saw, so a file
    swapped for a link or FIFO since is refused rather than followed or blocked on."""
    _need_file(root, rel, found)
    try:
        fd = os.open(root / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise _unreadable(root, rel, err) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{root}: {rel} is {_kind(st.st_mode)}, not a regular file; copy the bundle again")
        if st.st_size > limit:
            raise BundleError(
                f"{root}: {rel} is {st.st_size} bytes, more than the {limit} allowed; copy the bundle again"
            )
        try:
            data = f.read(limit + 1)
        except OSError as err:
            raise _unreadable(root, rel, err) from None
    if len(data) > limit:
        raise BundleError(f"{root}: {rel} grew while it was read; copy the bundle again and do not change it")
    return data


def _unreadable(root: Path, rel: str, err: OSError) -> BundleError:
    """One line for a file or folder that cannot be opened: by whom, and the fix."""
    if err.errno in (errno.EACCES, errno.EPERM):
        import pwd

        try:
            user = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            user = f"uid {os.geteuid()}"
        return BundleError(
            f"{root}: cannot read {rel}: permission denied for user {user}; make the bundle readable by that user, "
            f"e.g. chmod -R a+rX {root} (or chown -R {user} {root})"
        )
    if err.errno == errno.ELOOP:
        return BundleError(f"{root}: {rel} is a symbolic link: a bundle holds only plain files; copy it again")
    return BundleError(f"{root}: cannot read {rel}: {err.strerror}; copy the bundle again")


def _depth(doc) -> int:
    """How deeply ``doc`` nests lists and objects, counted without recursion."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                break
            stack.extend((child, depth + 1) for child in children)
    return deepest
