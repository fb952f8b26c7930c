"""Results and health as ROS 2 messages that a node on ``rmw_zenoh_cpp`` reads directly.

rmw_zenoh maps a ROS 2 topic onto the Zenoh key ``<domain>/<topic>/<type>/<type hash>`` with a
CDR payload, and builds its graph (``ros2 topic list``, ``ros2 node list``) from liveliness tokens
under ``@ros2_lv``. Publishing in that shape needs no bridge and no ROS 2 on the robot: the
message is ``std_msgs/msg/String`` holding the same JSON line as ``edgefusion/<robot>/result``, so
a node subscribes to ``/edgefusion/<robot>/result`` and parses ``msg.data``.

Followed: rmw_zenoh's design document (docs/design.md, the Jazzy/Rolling layout): the key, the
token layout ``@ros2_lv/<domain>/<zid>/<nid>/<eid>/<kind>/<enclave>/<namespace>/<node>/...``
with '/' written '%', and the attachment (sequence number, source timestamp, publisher GID, in
zenoh-ext's serialization). Older rmw_zenoh releases used other attachments; no ROS 2 runs on
the machines this was built on, so the test checks each piece against rosbags' CDR and type
hash, and zenoh-ext's deserializer (README: ROS 2).
"""

from __future__ import annotations

import hashlib
import struct
import time

NODE = "edgefusion"
STRING_TYPE = "std_msgs::msg::dds_::String_"
# rosbags' hash_rihs01("std_msgs/msg/String"): the type's REP-2016 hash (the test recomputes it).
STRING_HASH = "RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18"
# Reliable, volatile, keep-last 10 (the default QoS of rclcpp's publisher), in rmw_zenoh's form:
# reliability:durability:history,depth:deadline:lifespan:liveliness,lease (empty: the default).
QOS = "::,10:,:,:,,"
CDR_LE = b"\x00\x01\x00\x00"  # encapsulation: plain CDR, little endian
TOPICS = ("result", "health")


def cdr_string(text: bytes) -> bytes:
    """``std_msgs/msg/String`` in CDR: the header, then the string's length with its NUL, the
    bytes, the NUL."""
    return CDR_LE + struct.pack("<I", len(text) + 1) + text + b"\x00"


def attachment(seq: int, stamp_ns: int, gid: bytes) -> bytes:
    """rmw_zenoh's per-message attachment, in zenoh-ext's serialization: int64 sequence number,
    int64 source timestamp, the publisher's 16-byte GID (a sequence: its length first)."""
    return struct.pack("<qqB", seq, stamp_ns, len(gid)) + gid


def mangle(name: str) -> str:
    """A ROS name inside a token: '/' becomes '%' (an empty one is '%')."""
    return name.replace("/", "%") or "%"


class Ros2Publishers:
    """The node ``/edgefusion/<robot>/edgefusion`` and its publishers ``/edgefusion/<robot>/result``
    and ``/edgefusion/<robot>/health`` on the session the Zenoh sink opened."""

    def __init__(self, session, robot: str, domain: int):
        import zenoh

        self.namespace = f"/{NODE}/{robot}"
        self.topics = {kind: f"{self.namespace}/{kind}" for kind in TOPICS}
        zid = str(session.info.zid())
        node = f"{mangle('')}/{mangle(self.namespace)}/{NODE}"  # enclave / namespace / name
        self.tokens = [session.liveliness().declare_token(f"@ros2_lv/{domain}/{zid}/0/0/NN/{node}")]
        self._pubs, self._gids, self._seq = {}, {}, dict.fromkeys(TOPICS, 0)
        for eid, (kind, topic) in enumerate(self.topics.items(), start=1):
            self._pubs[kind] = session.declare_publisher(self.key(domain, topic), encoding=zenoh.Encoding.ZENOH_BYTES)
            self._gids[kind] = hashlib.sha256(f"{zid}/{eid}".encode()).digest()[:16]
            self.tokens.append(
                session.liveliness().declare_token(
                    f"@ros2_lv/{domain}/{zid}/0/{eid}/MP/{node}/{mangle(topic)}/{STRING_TYPE}/{STRING_HASH}/{QOS}"
                )
            )

    @staticmethod
    def key(domain: int, topic: str) -> str:
        return f"{domain}/{topic.strip('/')}/{STRING_TYPE}/{STRING_HASH}"

    def put(self, kind: str, payload: bytes) -> None:
        if kind not in self._pubs:
            return
        self._seq[kind] += 1
        stamp = time.time_ns()
        self._pubs[kind].put(cdr_string(payload), attachment=attachment(self._seq[kind], stamp, self._gids[kind]))

    def close(self) -> None:
        for token in self.tokens:
            token.undeclare()
