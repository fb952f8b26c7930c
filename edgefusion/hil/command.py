"""``edgefusion hil``: run the HIL suite with pytest and write the report a robot team files.

pytest runs in a child process, its output on this terminal as it goes: a test that hangs a camera
or kills an audio server cannot take the report with it, and the report is written whatever pytest
ended with (failed tests, a crash, Ctrl-C), saying how it ended. The exit status is pytest's verdict:
0 when every test passed or skipped, 1 when any failed, 2 for a user error.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from edgefusion.errors import EdgefusionError

# What the suite leaves in the report folder; a previous run's copies are removed first, so that
# a run that dies early never shows the last one's verdicts as its own.
JUNIT, FIGURES = "junit.xml", "figures.json"


def suite_folder(given: Path | None) -> Path:
    """``--suite``, or the hw_tests/ of the source checkout this edgefusion runs from."""
    if given is not None:
        if not given.is_dir():
            raise EdgefusionError(f"--suite {given}: no such folder; give the folder of the HIL tests (hw_tests/)")
        return given
    import edgefusion

    suite = Path(edgefusion.__file__).resolve().parents[1] / "hw_tests"
    if not suite.is_dir():
        raise EdgefusionError(
            "the HIL suite is in the repository's hw_tests/, which this installation does not have: "
            "run from a clone (pip install -e .) or pass --suite DIR"
        )
    return suite


def _check(args) -> None:
    from edgefusion.args import unwritable

    why = unwritable(args.report)  # before the minutes of tests, not after them
    if why:
        raise EdgefusionError(f"--report {args.report}: {why}; choose another folder")
    if importlib.util.find_spec("pytest") is None:
        raise EdgefusionError("edgefusion hil runs the suite with pytest: pip install 'edgefusion[hil]'")
    if args.bundle is not None and not args.bundle.is_dir():
        raise EdgefusionError(f"--bundle {args.bundle}: no such folder; give a model bundle folder")
    if args.backend:
        from edgefusion.hil.backends import selected

        selected(args.backend)  # an unknown id is refused here, not by every test at once


def pytest_argv(args, suite: Path, out: Path) -> list[str]:
    # rootdir pinned to the suite: test ids are the same whichever pytest and working folder
    argv = [sys.executable, "-m", "pytest", str(suite), "--rootdir", str(suite), "-p", "no:cacheprovider"]
    argv += ["--junitxml", str(out / JUNIT), "-o", "junit_suite_name=edgefusion-hil"]
    argv += ["--hil-figures", str(out / FIGURES), "--rig", args.rig, "--precision", args.precision]
    for option, value in (("--backend", args.backend), ("--bundle", args.bundle), ("--data", args.data)):
        if value:
            argv += [option, str(Path(value).resolve()) if isinstance(value, Path) else value]
    if args.k:
        argv += ["-k", args.k]
    return argv


def _pytest(argv: list[str]) -> int:
    """pytest's exit status. Ctrl-C reaches pytest too (one process group): it ends its session,
    writing what it has, and the report is made from that."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return proc.wait()


def run(args) -> int:
    from edgefusion.hil.report import PYTEST_EXITS, verdict_line, write_report

    _check(args)
    suite = suite_folder(args.suite)
    out = args.report
    out.mkdir(parents=True, exist_ok=True)
    for name in (JUNIT, FIGURES):
        (out / name).unlink(missing_ok=True)
    code = _pytest(pytest_argv(args, suite, out))
    counts = write_report(out, out / FIGURES, out / JUNIT, code)
    ended = "" if code in (0, 1) else f"; pytest ended with code {code} ({PYTEST_EXITS.get(code, 'unknown')})"
    print(f"edgefusion hil: report in {out / 'report.md'} and report.html: {verdict_line(counts)}{ended}")
    return 0 if code == 0 else 2 if code == 4 else 1
