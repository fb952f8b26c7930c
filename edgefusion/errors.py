"""Errors a user can fix, kept apart from bugs so the CLI can show them without a traceback."""

from __future__ import annotations


class EdgefusionError(Exception):
    """Something the user can fix: its str is one line saying what is wrong and what to do.

    The CLI prints it alone and exits with status 2; any other exception is a bug and keeps its traceback.
    """


class BundleError(EdgefusionError):
    """A model bundle that must not be run: missing, partial, tampered, or of another format version."""


class SessionError(EdgefusionError):
    """A recorded session (or recording) that cannot be replayed as it is."""


def run_cli(main, argv: list[str] | None, prog: str) -> int:
    """Run a CLI entry point: a user error is one line on stderr and exit status 2."""
    import sys

    try:
        return main(argv) or 0
    except EdgefusionError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
