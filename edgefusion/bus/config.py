"""``[output.zenoh]``: where the robot's results go on the Zenoh bus, checked before anything starts.

A plain dataclass with no import of zenoh, so a config naming the bus is checked (and refused in
one line) on a machine without the library; ``doctor`` says whether it is installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgefusion.errors import EdgefusionError

MODES = ("peer", "client")
# A key segment Zenoh and ROS 2 both take: no '/', '*', '$', '#', '?' (Zenoh's reserved), and the
# characters a ROS 2 namespace allows, so one name serves both.
ROBOT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
ENDPOINT = re.compile(r"(tcp|udp|tls|quic|ws|unixsock-stream)/\S+")


@dataclass
class ZenohSection:
    enabled: bool = False
    robot: str = ""  # this robot's key segment; empty: the host name, made a valid segment
    mode: str = "peer"  # "peer": finds others on the LAN; "client": through the routers in connect
    connect: tuple = ()  # endpoints to reach, e.g. ["tcp/10.0.0.2:7447"] (a fleet's router)
    listen: tuple = ()  # endpoints to accept on (peer mode); empty: Zenoh's default
    scouting: bool = True  # multicast discovery of peers on the LAN (peer mode)
    queue: int = 256  # results waiting for the network; a full queue drops its oldest
    ros2: bool = False  # also publish as std_msgs/String for rmw_zenoh nodes (README: ROS 2)
    ros2_domain: int = 0  # ROS_DOMAIN_ID of the rmw_zenoh graph

    def check(self, at: str) -> None:
        if self.mode not in MODES:
            raise EdgefusionError(f"{at}: mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.robot and not ROBOT_NAME.fullmatch(self.robot):
            raise EdgefusionError(
                f"{at}: robot must be a letter then letters, digits or '_' (at most 63), got {self.robot!r}"
            )
        for key in ("connect", "listen"):
            bad = [e for e in getattr(self, key) if not ENDPOINT.fullmatch(e)]
            if bad:
                raise EdgefusionError(
                    f"{at}: {key}: {bad[0]!r} is not a Zenoh endpoint; write PROTOCOL/HOST:PORT, e.g. tcp/10.0.0.2:7447"
                )
        if self.enabled and self.mode == "client" and not self.connect:
            raise EdgefusionError(f'{at}: mode "client" needs connect = ["tcp/ROUTER:7447"], the router(s) to use')


def robot_name(section: ZenohSection) -> str:
    """The configured name, or the host's made into a valid segment (``jetson-07.lab`` → ``jetson_07_lab``)."""
    import socket

    if section.robot:
        return section.robot
    name = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:63] or "robot"
    return name if name[0].isalpha() else f"r{name}"[:63]
