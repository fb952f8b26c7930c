"""SIGHUP on a running `edgefusion run`: a broken bundle never stops the service.

The bundle folder is replaced by each kind of damaged bundle of test_bundle_contract (plus an
unreadable file; a bundle whose graphs each run but whose chain gives NaN, which only the new
backend's warm-up tick sees; and one with other labels), then SIGHUP: the process keeps producing
result lines, and one line says why the reload was refused. A good new bundle is then swapped in.
The process runs as a user who cannot read other users' files, as the service does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from test_bundle_contract import (
    CASES,
    DEMO,
    UNREADABLE,
    _edit,
    _rehash,
    make_unreadable,
    nan_on_real_projections,
    unprivileged,
)
from waiting import wait_for

RENAMED = ["go", "halt", "come", "give", "look", "leave", "pause"]
KINDS = [
    *CASES,
    *(
        (f"unreadable-{rel}", lambda r, rel=rel: make_unreadable(r, rel), [rel, "permission denied"])
        for rel in UNREADABLE
    ),
    ("warm-tick-fails", nan_on_real_projections, ["warm-up tick"]),
    ("other-labels", lambda r: _edit(r, lambda doc: doc.update(labels=RENAMED)), ["labels differ", "restart"]),
]


class Service:
    """`edgefusion run` on the simulated rig, results to a file, its stderr collected line by line."""

    def __init__(self, tmp_path: Path, bundle: Path):
        self.results = tmp_path / "results.jsonl"
        cfg = tmp_path / "robot.toml"
        cfg.write_text(f'[runtime]\nbundle = "{bundle}"\n[output]\nstdout = false\nfile = "{self.results}"\n')
        self.proc = subprocess.Popen(
            [*unprivileged(), sys.executable, "-m", "edgefusion.cli", "run", "--config", str(cfg)],
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    def lines(self) -> int:
        return len(self.results.read_text().splitlines()) if self.results.exists() else 0

    def keeps_producing(self, more: int = 10) -> None:
        n = self.lines()
        assert wait_for(lambda: self.lines() >= n + more, timeout=30), "".join(self.stderr)

    def reload(self) -> str:
        """SIGHUP, and the one line it brings (other lines, such as a tick over its deadline on
        this busy machine, are not about the reload)."""
        mark = len(self.stderr)

        def about_it() -> list[str]:
            return [line for line in self.stderr[mark:] if "reload" in line]

        self.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: about_it(), timeout=60), "no word on the reload"
        self.keeps_producing()
        assert len(about_it()) == 1, about_it()
        return about_it()[0]

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)
        return "".join(self.stderr)


def _swap_in(live: Path, new: Path, trash: Path) -> None:
    """Replace the folder at ``live`` by ``new`` (two renames, as a deploy would)."""
    os.rename(live, trash)
    os.rename(new, live)


def test_a_broken_bundle_at_sighup_is_refused_in_one_line_and_the_model_runs_on(tmp_path: Path):
    live = tmp_path / "bundle"
    shutil.copytree(DEMO, live)
    service = Service(tmp_path, live)
    try:
        service.keeps_producing(30)
        for i, (kind, damage, words) in enumerate(KINDS):
            new = tmp_path / f"next-{i}"
            shutil.copytree(DEMO, new)
            damage(new)
            _rehash(new)
            _swap_in(live, new, tmp_path / f"old-{i}")
            line = service.reload()
            assert "reload refused" in line and "the loaded model keeps running" in line, (kind, line)
            for word in words:
                assert word in line, (kind, line)
        good = tmp_path / "good"
        shutil.copytree(DEMO, good)
        _swap_in(live, good, tmp_path / "old-last")
        assert "reloaded" in service.reload()
    finally:
        err = service.stop()
    assert service.proc.returncode == 0, err
    assert "Traceback" not in err, err
    ticks = [json.loads(line)["tick"] for line in service.results.read_text().splitlines()]
    assert ticks == list(range(1, len(ticks) + 1)), "no tick lost across the reloads"
