"""Running the CLI as a user does, and what a refusal must look like: one line on stderr saying
what is wrong, exit status 2, no traceback, and no file left half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli(*args: str, env: dict | None = None, timeout: float = 90, cwd: str | Path | None = None, stdin=None):
    """``edgefusion ARGS`` in a fresh interpreter (as ``python -m edgefusion.cli``)."""
    return subprocess.run(
        [sys.executable, "-m", "edgefusion.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL if stdin is None else stdin,
    )


def export_cli(*args: str, env: dict | None = None, timeout: float = 300):
    """``edgefusion-export ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "edgefusion.export.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def refused(r: subprocess.CompletedProcess, *words: str) -> str:
    """Assert a one-line refusal (exit 2, no traceback) naming every one of ``words``; its line."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr
    return lines[0]


def snapshot(folder: str | Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: compare before and after a refused command
    to prove it wrote nothing (no temp file left behind, nothing half-changed)."""
    root = Path(folder)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def env_without(*names: str) -> dict:
    """This process's environment less ``names``."""
    return {k: v for k, v in os.environ.items() if k not in names}
