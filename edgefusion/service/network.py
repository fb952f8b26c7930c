"""The unit's network, made from ``[output.zenoh]``: a systemd drop-in that opens exactly what the sink needs.

The unit itself denies every IP address (``IPAddressDeny=any``) and every Internet socket. With the
Zenoh sink on, the drop-in adds IPv4/IPv6 sockets and an ``IPAddressAllow=`` list: systemd's filter
looks at the far end of each packet (the destination going out, the source coming in), so the list
names the peers, never this robot's own addresses. With the sink off there is no drop-in at all.

``IPAddressAllow=`` takes addresses and prefixes only. A host name in ``connect`` is refused rather
than resolved here: its address may change after the drop-in is written, and the sink would need a
DNS server the unit does not let it reach.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path

from edgefusion.atomic import atomic_write
from edgefusion.bus.config import ZenohSection
from edgefusion.errors import EdgefusionError

UNIT_DIR = Path("/etc/systemd/system")
DROPIN = Path("edgefusion.service.d") / "zenoh.conf"
# Zenoh's multicast scouting group: its default scouting.multicast.address, udp/224.0.0.224:7446
# (checked against eclipse-zenoh 1.10.2: a peer session binds 224.0.0.224:7446 and joins the group).
SCOUTING_GROUP = "224.0.0.224"
FAMILIES = "AF_UNIX AF_NETLINK AF_INET AF_INET6"


def _address(endpoint: str, at: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str | None:
    """The IP address an endpoint names: None for a Unix socket, "localhost" for that name.

    A Zenoh endpoint is PROTOCOL/ADDRESS[?metadata][#config]; ADDRESS is HOST:PORT, [IPv6]:PORT."""
    protocol, _, rest = endpoint.partition("/")
    if protocol == "unixsock-stream":
        return None
    address = rest.split("?")[0].split("#")[0]
    host, _, port = address.rpartition(":")
    if not port.isdigit() or int(port) > 65535 or not host:
        raise EdgefusionError(f"{at}: {endpoint!r} has no HOST:PORT; write e.g. tcp/10.0.0.2:7447")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host == "localhost":
        return host
    try:
        return ipaddress.ip_address(host.split("%")[0])  # an IPv6 zone (fe80::1%eth0) is not part of it
    except ValueError:
        raise EdgefusionError(
            f"{at}: {endpoint!r} names a host, not an address: the unit's IPAddressAllow= takes addresses only "
            "(and the service reaches no DNS server); write its address, e.g. tcp/10.0.0.2:7447"
        ) from None


def subnets_from_ip_json(interfaces: list[dict]) -> list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """The subnet of each global address on an interface that is up, from ``ip -j addr show``.

    Loopback and link-scope addresses are left out (localhost is allowed by name; Zenoh's locators
    on the LAN are its global addresses)."""
    out = []
    for interface in interfaces:
        if "UP" not in interface.get("flags", ()) or "LOOPBACK" in interface.get("flags", ()):
            continue
        for a in interface.get("addr_info", ()):
            if a.get("scope") != "global" or a.get("family") not in ("inet", "inet6"):
                continue
            net = ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
            if (interface["ifname"], net) not in out:
                out.append((interface["ifname"], net))
    return out


def lan_subnets() -> list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """This host's LAN subnets now (``ip``, iproute2: the stdlib has no netmasks)."""
    ip = shutil.which("ip") or "/usr/sbin/ip"
    try:
        r = subprocess.run([ip, "-j", "addr", "show"], capture_output=True, text=True, timeout=10, check=True)
        return subnets_from_ip_json(json.loads(r.stdout))
    except (OSError, subprocess.SubprocessError, ValueError) as err:
        raise EdgefusionError(
            f"peer mode allows this host's LAN subnets, read with `ip -j addr show`, which failed ({err}); "
            "apt-get install iproute2, or use client mode"
        ) from None


def _needs_lan(section: ZenohSection) -> bool:
    """Peer mode takes peers from the LAN: those its multicast scouting finds, and those that
    connect to its listen endpoints (Zenoh's default listen when none are given)."""
    return section.mode == "peer" and (section.scouting or not section.connect or bool(section.listen))


def dropin(section: ZenohSection, at: str = "[output.zenoh]", subnets=None) -> str | None:
    """The drop-in's text for this section, None when the sink is off (the unit's deny-all stands).

    ``subnets``: the LAN's, as ``lan_subnets()`` returns them (read from this host when None and peer
    mode needs them). A bad endpoint raises EdgefusionError, one line."""
    if not section.enabled:
        return None
    for endpoint in section.listen:  # bind addresses: checked, but a peer's address is what is filtered
        _address(endpoint, f"{at}: listen")
    routers = [(e, _address(e, f"{at}: connect")) for e in section.connect]
    lines = [
        "# Written by `edgefusion service-network` (install.sh runs it) from the config's [output.zenoh]:",
        "# the network the Zenoh sink needs and no more. Made again on every install: edits here are lost.",
        "# The unit's IPAddressDeny=any stands; systemd filters on the far end of each packet, so only",
        "# the addresses allowed below can be reached or heard from.",
        "[Service]",
        "# The unit's families (sd_notify, PulseAudio, udev hotplug) and IPv4/IPv6 for Zenoh's links.",
        "RestrictAddressFamilies=",
        f"RestrictAddressFamilies={FAMILIES}",
        "# localhost: a Zenoh router or rmw_zenoh's (ROS 2) on this robot, and the sink's own loopback.",
        "IPAddressAllow=localhost",
    ]
    allowed = {"localhost"}

    def allow(value, why: str) -> None:
        if str(value) not in allowed:
            allowed.add(str(value))
            lines.extend([f"# {why}", f"IPAddressAllow={value}"])

    for endpoint, address in routers:
        if address is not None:
            allow(address, f"connect = {endpoint!r}: {'a router' if section.mode == 'client' else 'a peer'} to reach")
    if section.mode == "peer" and section.scouting:
        allow(SCOUTING_GROUP, "Zenoh's multicast scouting group (UDP 7446; systemd cannot filter ports)")
    if _needs_lan(section):
        found = lan_subnets() if subnets is None else subnets
        if not found:
            lines.append("# No LAN address on this host when written: run `edgefusion service-network` again once up.")
        for name, net in found:
            allow(net, f"{name}'s subnet: the LAN peers that scouting finds or that connect to this one")
    return "\n".join(lines) + "\n"


def directives(text: str | None) -> list[str]:
    """What a drop-in does, without its comments: two drop-ins that do the same compare equal."""
    return [line.strip() for line in (text or "").splitlines() if line.strip() and not line.lstrip().startswith("#")]


def install(section: ZenohSection, unit_dir: Path = UNIT_DIR, at: str = "[output.zenoh]") -> tuple[Path, str | None]:
    """Write the drop-in into ``unit_dir`` atomically, or remove it when the sink is off.

    Returns its path and its text (None: removed, or never there)."""
    text = dropin(section, at)  # a bad config is refused before anything is changed
    path = unit_dir / DROPIN
    try:
        if text is None:
            path.unlink(missing_ok=True)
            if path.parent.is_dir() and not any(path.parent.iterdir()):
                path.parent.rmdir()
            return path, None
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(text.encode())
    except OSError as err:
        hint = "; run as root (sudo)" if isinstance(err, PermissionError) else ""
        raise EdgefusionError(
            f"{path}: cannot {'remove' if text is None else 'write'} it ({err.strerror}){hint}"
        ) from None
    return path, text
