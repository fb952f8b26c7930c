"""The key space, documented in the README ("Results on the robot's bus"): one robot's keys sit
under ``edgefusion/<robot>/``, so ``edgefusion/*/result`` is the fleet's results and
``edgefusion/<robot>/**`` everything of one robot."""

from __future__ import annotations

PREFIX = "edgefusion"
RESULT = "result"  # each result line, as JSON (application/json)
HEALTH = "health"  # every [output] health_s: sensor states, backend, counters, sinks (JSON)
STATUS = "status"  # the service's state: running (which bundle, backend) or stopped (JSON)
ALIVE = "alive"  # a liveliness token: present while the robot's session lives
KINDS = (RESULT, HEALTH, STATUS)


def key(robot: str, kind: str) -> str:
    return f"{PREFIX}/{robot}/{kind}"


def robot_of(key_expr: str) -> str | None:
    """The robot a key names (``edgefusion/<robot>/...``), None for a key outside the space."""
    parts = str(key_expr).split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == PREFIX else None
