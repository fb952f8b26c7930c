"""Errors a user can fix, kept apart from bugs so the CLI can show them without a traceback."""

from __future__ import annotations


class EdgefusionError(Exception):
    """Something the user can fix: its str is one line saying what is wrong and what to do.

    The CLI prints it alone and exits with status 2; any other exception is a bug and keeps its traceback.
    """


class BundleError(EdgefusionError):
    """A model bundle that must not be run: missing, partial, tampered, or of another format version."""


class ConfigError(EdgefusionError):
    """A config file (or a driver's config table) with a wrong key, type or value."""


class SessionError(EdgefusionError):
    """A recorded session (or recording) that cannot be replayed as it is."""


SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what a C tool killed by a closed pipe reports to its shell


def run_cli(main, argv: list[str] | None, prog: str) -> int:
    """Run a CLI entry point: a user error is one line on stderr and exit status 2.

    A reader that goes away early (``edgefusion info | head -1``) is not an error: the rest of
    the output goes nowhere and the exit status is 141, as for any tool a closed pipe stops."""
    import sys

    try:
        status = main(argv) or 0
        sys.stdout.flush()  # here, not at interpreter exit: a closed pipe is then caught below
        return status
    except EdgefusionError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _discard_stdout()
        return SIGPIPE_EXIT


def _discard_stdout() -> None:
    """The Python docs' recipe for SIGPIPE: point stdout at /dev/null so that the interpreter's
    own flush at exit does not fail again on the closed pipe."""
    import os
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout was not a file descriptor (a test's StringIO)
        pass
    finally:
        os.close(devnull)
