"""Command-line parsing shared by ``edgefusion`` and ``edgefusion-export``: a bad flag is one line.

argparse's own refusal is the whole usage block and then the error (five lines and more, most of
it not about what went wrong); here it is the error alone, with where to read the usage. The
``type=`` validators refuse what argparse's ``float``/``int`` let through: NaN, inf, 1e-300 where
a rate goes, a negative count, a number too big to mean anything, a folder where a file goes.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2 (as user errors
    are everywhere else); its subparsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def number(lo: float, hi: float, *, integer: bool = False):
    """A ``type=`` for a finite number in [lo, hi]: whole when ``integer``."""
    kind = "a whole number" if integer else "a number"

    def parse(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be {kind} from {lo:g} to {hi:g}, got {text!r}")
        return value

    return parse


def existing_file(text: str) -> Path:
    """A ``type=`` for a file to read: there, and not a folder."""
    path = Path(text)
    if not path.is_file():
        why = "is a folder" if path.is_dir() else "no such file"
        raise argparse.ArgumentTypeError(f"{text}: {why}; give an existing file")
    return path


def new_file(text: str) -> Path:
    """A ``type=`` for a file to write: its folder exists, and it is not itself a folder."""
    path = Path(text)
    if path.is_dir() or not text or text.endswith("/"):
        raise argparse.ArgumentTypeError(f"{text}: a folder, not a file name; give a file name such as out.png")
    if not path.resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: its folder {path.parent} does not exist; create it first")
    if not os.access(path.resolve().parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text}: {path.parent} is not writable by this user; choose another place")
    return path


def new_folder(text: str) -> Path:
    """A ``type=`` for a folder to write into: its parent is a writable folder, and no file is
    there (whether an existing folder may be used is the command's own rule)."""
    path = Path(text)
    if not text:
        raise argparse.ArgumentTypeError("an empty path; give a new folder")
    parent = path.resolve().parent
    if not parent.is_dir():
        why = "is a file" if parent.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text}: its parent {path.parent} {why}; give a folder inside a folder")
    if not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text}: {path.parent} is not writable by this user; choose another place")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: a file is there, not an empty folder; give a new folder")
    return path


def unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot be written into, or None: it is there and writable, or it is not
    there yet and will be created (its nearest existing ancestor is a writable folder), which
    is not the same as "not writable"."""
    existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return None
