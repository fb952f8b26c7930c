"""The Zenoh sink: each result, the health and the service's status on the robot's bus.

It is one of the ``SinkWriter``'s sinks, so it publishes from its own writer thread with its own
bounded queue (``[output.zenoh] queue``): a slow network, a slow subscriber (Zenoh's congestion
control blocks a reliable put rather than drop it) or a router that is down holds back only this
sink, never a tick. What the queue cannot hold is dropped oldest first, counted per sink, said on
stderr and published in the health.

A client whose router is unreachable (at boot, or after it died) raises from ``write``: the
writer keeps the lines and retries, so a router restarted within the queue's span loses nothing.
The session is (re)opened at most every ``OPEN_EVERY_S``. A peer has no one to wait for: what it
publishes goes to whoever listens.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import orjson

from edgefusion.bus import keys
from edgefusion.bus.config import ZenohSection, robot_name
from edgefusion.bus.session import import_zenoh, open_session
from edgefusion.sinks import Sink

OPEN_EVERY_S = 2.0


class ZenohSink(Sink):
    def __init__(self, section: ZenohSection):
        self.zenoh = import_zenoh()  # missing: one line at start, not a failure every tick
        self.section = section
        self.robot = robot_name(section)
        self.queue = section.queue  # the writer sizes this sink's queue by it
        self._lock = threading.Lock()  # write (writer thread), health (health thread), close
        self._session = None
        self._pubs: dict = {}
        self._entities: list = []  # the token, the queryable, ROS 2's: kept alive with the session
        self._ros2 = None
        self._next_open = 0.0
        self._latest: dict[str, bytes] = {}  # kind -> payload, for the queryable
        self._status: dict = {}
        try:
            self._open()
        except OSError:
            pass  # the first write says it, and the writer retries

    @property
    def name(self) -> str:
        return f"zenoh {keys.PREFIX}/{self.robot}"

    def write(self, line: str) -> None:
        payload = line.encode()
        with self._lock:
            self._ready()
            self._pubs[keys.RESULT].put(payload)
            if self._ros2 is not None:
                self._ros2.put(keys.RESULT, payload)
            self._latest[keys.RESULT] = payload

    def health(self, snapshot: dict) -> None:
        """The health is periodic: one that finds no session is skipped, the next one goes."""
        self._publish(keys.HEALTH, {"robot": self.robot, **snapshot})

    def status(self, status: dict) -> None:
        """The service's state (called when it runs, and by ``close`` when it stops)."""
        self._status = {"robot": self.robot, "host": socket.gethostname(), "pid": os.getpid(), **status}
        self._publish(keys.STATUS, self._status)

    def _publish(self, kind: str, data: dict) -> None:
        payload = orjson.dumps(data)
        with self._lock:
            self._latest[kind] = payload
            try:
                self._ready()
            except OSError:
                return
            self._pubs[kind].put(payload)
            if self._ros2 is not None:
                self._ros2.put(kind, payload)

    def _ready(self) -> None:
        """An open session that can reach someone, or OSError (the writer keeps the line)."""
        if self._session is None:
            self._open()
        if self.section.mode == "client" and not list(self._session.info.routers_zid()):
            raise OSError(f"no Zenoh router reachable at {', '.join(self.section.connect)}; results wait")

    def _open(self) -> None:
        now = time.monotonic()
        if now < self._next_open:
            raise OSError(f"no Zenoh session yet (tried again every {OPEN_EVERY_S:g} s); results wait")
        self._next_open = now + OPEN_EVERY_S
        session = open_session(self.section, "results")
        zenoh = self.zenoh
        json_, flow = zenoh.Encoding.APPLICATION_JSON, zenoh.CongestionControl
        self._pubs = {
            kind: session.declare_publisher(
                keys.key(self.robot, kind),
                encoding=json_,
                # Results are each a tick's answer: never dropped by Zenoh (our queue counts
                # what is); health and status are superseded by the next one.
                congestion_control=flow.BLOCK if kind == keys.RESULT else flow.DROP,
            )
            for kind in keys.KINDS
        }
        self._entities = [
            session.liveliness().declare_token(keys.key(self.robot, keys.ALIVE)),
            session.declare_queryable(f"{keys.PREFIX}/{self.robot}/*", self._reply),
        ]
        if self.section.ros2:
            from edgefusion.bus.ros2 import Ros2Publishers

            self._ros2 = Ros2Publishers(session, self.robot, self.section.ros2_domain)
        self._session = session
        if self._status:  # a session opened late still says what runs
            self._pubs[keys.STATUS].put(orjson.dumps(self._status))

    def _reply(self, query) -> None:
        """A get on ``edgefusion/<robot>/result`` (or health, status, ``*``): the latest of each."""
        for kind, payload in list(self._latest.items()):
            key = keys.key(self.robot, kind)
            if query.key_expr.intersects(self.zenoh.KeyExpr(key)):
                query.reply(key, payload, encoding=self.zenoh.Encoding.APPLICATION_JSON)

    def close(self) -> None:
        if self._status:
            self.status({**self._status, "state": "stopped", "t": time.time()})
        with self._lock:
            session, self._session = self._session, None
            if session is not None:
                if self._ros2 is not None:
                    self._ros2.close()
                for entity in self._entities:
                    entity.undeclare()  # the token first: a listener sees the robot leave now
                session.close()
