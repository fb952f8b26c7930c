"""A session's files as the service user meets them: missing, a folder in a file's place, or
readable only by root (a session copied with ``sudo cp``): each said in one line with the fix."""

from __future__ import annotations

from pathlib import Path

from edgefusion.errors import SessionError


def is_present(path: Path) -> bool:
    """True for a regular file, False when nothing is there; anything else in its place is damage."""
    try:
        if not path.exists():
            return False
    except PermissionError:
        raise SessionError(
            f"{path.parent}: this user may not enter the folder (permission denied); chmod a+rx it "
            "(or chown it to the user that runs edgefusion)"
        ) from None
    except OSError as err:
        raise _unreadable(path, err) from None
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file"
        raise SessionError(f"{path}: {what} where a file should be; put the file back or record the session again")
    return True


def read_bytes(path: Path) -> bytes:
    """The whole file; FileNotFoundError is left to the caller, which knows what its absence means."""
    is_present(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as err:
        raise _unreadable(path, err) from None


def check_readable(path: Path) -> None:
    """Fail now, in one line, for a file a library would open later with a worse message."""
    if is_present(path):
        try:
            path.open("rb").close()
        except OSError as err:
            raise _unreadable(path, err) from None


def _unreadable(path: Path, err: OSError) -> SessionError:
    if isinstance(err, PermissionError):
        return SessionError(
            f"{path}: not readable by this user (permission denied); "
            f"chmod a+r it (or chown it to the user that runs edgefusion)"
        )
    return SessionError(f"{path}: cannot be read ({err.strerror or err}); copy the session again")
