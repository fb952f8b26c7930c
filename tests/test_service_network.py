"""The unit's network drop-in made from [output.zenoh]: what it allows for each mode, none when off, bad endpoints."""

import ipaddress
import subprocess
import sys

import pytest

from edgefusion.bus.config import ZenohSection
from edgefusion.errors import EdgefusionError
from edgefusion.service.network import DROPIN, directives, dropin, install, subnets_from_ip_json

LAN = [("eth0", ipaddress.ip_network("192.168.1.0/24")), ("eth0", ipaddress.ip_network("fd00::/64"))]
FAMILIES = ["RestrictAddressFamilies=", "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6"]


def _allowed(text: str) -> list[str]:
    return [line.split("=", 1)[1] for line in directives(text) if line.startswith("IPAddressAllow=")]


def test_client_mode_allows_its_routers_and_localhost_only():
    text = dropin(ZenohSection(enabled=True, mode="client", connect=("tcp/10.0.0.2:7447", "quic/[fd00::9]:7447")))
    assert directives(text) == [
        "[Service]",
        *FAMILIES,
        "IPAddressAllow=localhost",
        "IPAddressAllow=10.0.0.2",
        "IPAddressAllow=fd00::9",
    ]
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(("IPAddressAllow=", "RestrictAddressFamilies=AF")):
            assert lines[i - 1].startswith("#") or lines[i - 2].startswith("#"), f"{line}: no reason given"


def test_peer_mode_allows_the_scouting_group_and_the_lans_subnets():
    text = dropin(ZenohSection(enabled=True, mode="peer"), subnets=LAN)
    assert _allowed(text) == ["localhost", "224.0.0.224", "192.168.1.0/24", "fd00::/64"]
    assert "# eth0's subnet" in text and "scouting group (UDP 7446" in text


def test_peer_mode_without_scouting_reaches_only_the_peers_it_names():
    section = ZenohSection(enabled=True, mode="peer", scouting=False, connect=("tcp/192.168.1.7:7447",))
    assert _allowed(dropin(section, subnets=LAN)) == ["localhost", "192.168.1.7"]
    listening = ZenohSection(enabled=True, scouting=False, connect=("tcp/10.1.0.1:7447",), listen=("tcp/0.0.0.0:7447",))
    assert _allowed(dropin(listening, subnets=LAN)) == ["localhost", "10.1.0.1", "192.168.1.0/24", "fd00::/64"]


def test_a_unix_socket_or_localhost_adds_nothing():
    section = ZenohSection(
        enabled=True, mode="client", connect=("unixsock-stream//run/zenoh.sock", "tcp/localhost:7447")
    )
    assert _allowed(dropin(section)) == ["localhost"]


def test_no_drop_in_when_the_sink_is_off_and_install_removes_one(tmp_path):
    assert dropin(ZenohSection(enabled=False, mode="client", connect=("tcp/10.0.0.2:7447",))) is None
    path, text = install(ZenohSection(enabled=True, mode="client", connect=("tcp/10.0.0.2:7447",)), tmp_path)
    assert path == tmp_path / DROPIN and path.read_text() == text
    path, text = install(ZenohSection(), tmp_path)
    assert text is None and not path.exists() and not path.parent.exists()
    assert list(tmp_path.iterdir()) == [], "nothing left behind"


@pytest.mark.parametrize(
    "endpoint, said",
    [
        ("tcp/router.lan:7447", "names a host, not an address"),
        ("tcp/10.0.0.2", "has no HOST:PORT"),
        ("tcp/10.0.0.2:99999", "has no HOST:PORT"),
        ("udp/[fd00::1:7447", "names a host"),
    ],
)
def test_a_bad_endpoint_is_refused_in_one_line(endpoint, said):
    with pytest.raises(EdgefusionError, match=said) as err:
        dropin(ZenohSection(enabled=True, mode="client", connect=(endpoint,)))
    assert "\n" not in str(err.value)


def test_the_lans_subnets_are_the_global_addresses_of_interfaces_up():
    def addr(family, local, prefixlen, scope="global"):
        return {"family": family, "local": local, "prefixlen": prefixlen, "scope": scope}

    interfaces = [
        {"ifname": "lo", "flags": ["LOOPBACK", "UP"], "addr_info": [addr("inet", "127.0.0.1", 8, "host")]},
        {"ifname": "wlan0", "flags": ["BROADCAST"], "addr_info": [addr("inet", "10.9.0.5", 16)]},  # down
        {
            "ifname": "eth0",
            "flags": ["BROADCAST", "MULTICAST", "UP"],
            "addr_info": [
                addr("inet", "192.168.1.20", 24),
                addr("inet6", "fd00::2", 64),
                addr("inet6", "fd00::3", 64),
                addr("inet6", "fe80::1", 64, "link"),
            ],
        },
    ]
    assert subnets_from_ip_json(interfaces) == LAN


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "edgefusion.cli", "service-network", *args], capture_output=True, text=True, timeout=60
    )


def test_the_command_writes_then_removes_the_drop_in(tmp_path):
    config = tmp_path / "robot.toml"
    config.write_text('[output.zenoh]\nenabled = true\nmode = "client"\nconnect = ["tcp/10.0.0.2:7447"]\n')
    r = _cli("--config", str(config), "--out", str(tmp_path / "units"))
    assert r.returncode == 0, r.stderr
    assert "IPAddressAllow localhost, 10.0.0.2" in r.stdout and "daemon-reload" in r.stdout
    assert _allowed((tmp_path / "units" / DROPIN).read_text()) == ["localhost", "10.0.0.2"]
    printed = _cli("--config", str(config), "--print")
    assert printed.stdout.strip() == (tmp_path / "units" / DROPIN).read_text().strip()
    config.write_text("[output.zenoh]\nenabled = false\n")
    r = _cli("--config", str(config), "--out", str(tmp_path / "units"))
    assert r.returncode == 0 and "IPAddressDeny=any stands" in r.stdout, r.stderr
    assert not (tmp_path / "units" / DROPIN).exists()


def test_the_command_refuses_a_host_name_in_one_line_and_writes_nothing(tmp_path):
    config = tmp_path / "robot.toml"
    config.write_text('[output.zenoh]\nenabled = true\nmode = "client"\nconnect = ["tcp/router.lan:7447"]\n')
    r = _cli("--config", str(config), "--out", str(tmp_path / "units"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"{config}: [output.zenoh]: connect: 'tcp/router.lan:7447' names a host" in r.stderr
    assert not (tmp_path / "units").exists()


def test_zenoh_is_imported_by_none_of_this():
    code = (
        "import sys, edgefusion, edgefusion.cli, edgefusion.doctor, edgefusion.service.network;"
        "assert 'zenoh' not in sys.modules, 'zenoh imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
