"""Write a model bundle folder: the files, their digests, and a manifest the loader will accept."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgefusion.atomic import atomic_directory
from edgefusion.bundle.loader import parse_manifest, verify_contents
from edgefusion.bundle.manifest import FORMAT, FORMAT_VERSION, MANIFEST, validate_manifest


def write_bundle(dest: str | Path, files: dict[str, Path], body: dict) -> Path:
    """Copy ``files`` (bundle-relative path → source file) into ``dest`` with a manifest made from ``body``.

    ``body`` is the manifest without "format", "format_version" and "files", which are filled in here.
    Everything the loader checks (manifest, absent.npz, every graph's inputs and outputs and one run)
    is checked on the very bytes written before anything is written, so a writer cannot produce a
    bundle the loader refuses; the folder is then built aside and swapped in
    for ``dest``, so on any error ``dest`` is left as it was and no temp folder remains.
    """
    dest = Path(dest)
    data = {rel: Path(src).read_bytes() for rel, src in files.items()}
    table = {rel: {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)} for rel, raw in data.items()}
    # Round-trip through JSON so what is validated is exactly what the loader will read (tuples become lists).
    text = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **body, "files": table}, indent=1)
    doc = parse_manifest(text.encode(), str(dest))
    validate_manifest(doc, str(dest))
    verify_contents(doc, data, str(dest))

    with atomic_directory(dest) as tmp:
        for rel, raw in data.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(raw)
        (tmp / MANIFEST).write_text(text + "\n", encoding="utf-8")
    return dest
