"""Write a model bundle folder: the files, their digests, and a manifest the loader will accept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgefusion.atomic import atomic_directory
from edgefusion.bundle.loader import read_absent, sha256_file
from edgefusion.bundle.manifest import FORMAT, FORMAT_VERSION, MANIFEST, validate_manifest


def write_bundle(dest: str | Path, files: dict[str, Path], body: dict) -> Path:
    """Copy ``files`` (bundle-relative path → source file) into ``dest`` with a manifest made from ``body``.

    ``body`` is the manifest without "format", "format_version" and "files", which are filled in here.
    Everything the loader checks (manifest, absent.npz) is checked before anything is written, so a
    writer cannot produce a bundle the loader refuses; the folder is then built aside and swapped in
    for ``dest``, so on any error ``dest`` is left as it was and no temp folder remains.
    """
    dest = Path(dest)
    table = {rel: {"sha256": sha256_file(src), "bytes": Path(src).stat().st_size} for rel, src in files.items()}
    # Round-trip through JSON so what is validated is exactly what the loader will read (tuples become lists).
    text = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **body, "files": table}, indent=1)
    doc = json.loads(text)
    validate_manifest(doc, str(dest))
    for rel in dict.fromkeys(variant["absent"] for variant in doc["variants"].values()):
        read_absent(Path(files[rel]), rel, doc, str(dest))

    with atomic_directory(dest) as tmp:
        for rel, src in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / rel)
        (tmp / MANIFEST).write_text(text + "\n", encoding="utf-8")
    return dest
