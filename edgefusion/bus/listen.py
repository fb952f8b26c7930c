"""``edgefusion listen``: the fleet as the bus shows it, one line per robot, or the raw results.

It subscribes to ``edgefusion/<robot>/{result,health,status}`` and to the robots' liveliness
tokens (with their history, so robots already up are seen at once), and keeps only each robot's
latest of each. On a terminal the lines are redrawn every ``REDRAW_S``; into a pipe or a log the
fleet is printed every ``LOG_EVERY_S``. ``--json`` prints each result line as it comes instead.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field

import orjson

from edgefusion.bus import keys
from edgefusion.bus.config import ROBOT_NAME, ZenohSection
from edgefusion.bus.session import open_session
from edgefusion.errors import EdgefusionError

REDRAW_S = 0.5
LOG_EVERY_S = 5.0


@dataclass
class RobotView:
    alive: bool = False
    result: dict | None = None
    health: dict | None = None
    status: dict | None = None
    seen: float = field(default_factory=time.monotonic)  # when its last result came, here

    def line(self, name: str, now: float) -> str:
        state = "ALIVE" if self.alive else "GONE "
        service = (self.status or {}).get("state", "?")
        parts = [f"{name:<16} {state} {service:<8}"]
        if self.health is not None:
            sensors = self.health.get("sensors", {})
            parts.append(" ".join(f"{m} {s.get('state', '?')}" for m, s in sensors.items()))
            backend = self.health.get("backend", {})
            parts.append(f"{backend.get('name', '?')} {backend.get('precision', '')}".strip())
            if backend.get("degraded"):
                parts.append("DEGRADED")
        r = self.result
        if r is None:
            parts.append("no result yet")
        else:
            intent = f"{r['label']} {r['confidence']:.0%}" if r.get("label") is not None else f"- ({r.get('reason')})"
            parts += [f"intent {intent}", f"latency {r.get('latency_ms', 0):.2f} ms", f"age {now - self.seen:.1f} s"]
        if self.health and self.health.get("results_lost"):
            parts.append(f"lost {self.health['results_lost']}")
        return "  ".join(parts)


class Fleet:
    """Each robot's latest, filled by Zenoh's callback threads and read by the printer."""

    def __init__(self):
        self.robots: dict[str, RobotView] = {}
        self._lock = threading.Lock()

    def sample(self, key_expr: str, payload: bytes) -> None:
        robot, kind = keys.robot_of(key_expr), str(key_expr).rsplit("/", 1)[-1]
        if robot is None or kind not in keys.KINDS:
            return
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return  # not ours: another program under the same prefix
        with self._lock:
            view = self.robots.setdefault(robot, RobotView())
            setattr(view, kind, data)
            if kind == keys.RESULT:
                view.seen = time.monotonic()

    def liveliness(self, key_expr: str, alive: bool) -> None:
        robot = keys.robot_of(key_expr)
        if robot is not None:
            with self._lock:
                self.robots.setdefault(robot, RobotView()).alive = alive

    def lines(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            return [view.line(name, now) for name, view in sorted(self.robots.items())]


def listen(section: ZenohSection, robot: str, raw: bool, seconds: float | None, stop: threading.Event) -> int:
    if robot != "*" and not ROBOT_NAME.fullmatch(robot):
        raise EdgefusionError(f"--robot {robot!r}: a robot's name (letters, digits, '_') or '*' for the fleet")
    try:
        session = open_session(section, "edgefusion listen")
    except OSError as err:
        raise EdgefusionError(f"{err}; check [output.zenoh] or --connect") from None
    import zenoh

    out = sys.stdout
    fleet = Fleet()
    entities = []
    closed = threading.Event()
    try:
        if raw:

            def on_result(sample) -> None:
                try:
                    out.write(sample.payload.to_bytes().decode(errors="replace") + "\n")
                    out.flush()
                except BrokenPipeError:  # `| head`: Zenoh's thread cannot end us, the main one does
                    closed.set()
                    stop.set()

            entities.append(session.declare_subscriber(keys.key(robot, keys.RESULT), on_result))
        else:
            entities.append(
                session.declare_subscriber(
                    f"{keys.PREFIX}/{robot}/*", lambda s: fleet.sample(str(s.key_expr), s.payload.to_bytes())
                )
            )
            entities.append(
                session.liveliness().declare_subscriber(
                    keys.key(robot, keys.ALIVE),
                    lambda s: fleet.liveliness(str(s.key_expr), s.kind == zenoh.SampleKind.PUT),
                    history=True,
                )
            )
            # What the robots already up said before we came (their status is said once): the latest
            # of each, from their queryables.
            for reply in session.get(f"{keys.PREFIX}/{robot}/*", timeout=2.0):
                if reply.ok is not None:
                    fleet.sample(str(reply.ok.key_expr), reply.ok.payload.to_bytes())
        _print_until(fleet, raw, seconds, stop, out)
    finally:
        for entity in entities:
            entity.undeclare()
        session.close()
    if closed.is_set():
        raise BrokenPipeError  # the CLI's exit for a reader gone: status 141, no traceback
    return 0


def _print_until(fleet: Fleet, raw: bool, seconds: float | None, stop: threading.Event, out) -> None:
    """Until ``stop`` or ``seconds``: the fleet redrawn (a terminal) or printed (a log) each period,
    and once more as it ends."""
    end = None if seconds is None else time.monotonic() + seconds
    tty = not raw and out.isatty()
    every = REDRAW_S if tty else LOG_EVERY_S
    drawn, done = 0, False
    while not done:
        wait = every if end is None else max(0.0, min(every, end - time.monotonic()))
        done = stop.wait(wait) or (end is not None and time.monotonic() >= end)
        if not raw:
            drawn = _draw(fleet, out, tty, drawn)


def _draw(fleet: Fleet, out, tty: bool, drawn: int) -> int:
    lines = fleet.lines() or ["no robot seen yet (is one running with [output.zenoh] enabled, reachable from here?)"]
    if tty:  # over the previous drawing
        out.write(f"\x1b[{drawn}F\x1b[J" if drawn else "")
    else:
        out.write(time.strftime("-- %H:%M:%S --") + os.linesep)
    out.write("\n".join(lines) + "\n")
    out.flush()
    return len(lines)
