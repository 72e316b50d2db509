# SPDX-License-Identifier: Apache-2.0
"""The host's network settings that DSR backends need: addresses on the loopback device, sysctls,
the interface that carries the default route, the interface's own addresses.

Everything acts on the network namespace of the calling process. Sysctls are read and written
through /proc/sys/net, which shows the caller's namespace.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from lbtui.dataplane.netlink import off_loop
from lbtui.dataplane.port import DataplaneError

LOOPBACK = "lo"
PROC_SYS = Path("/proc/sys")
_SO_NETNS_COOKIE = 71  # Linux 5.14+: a 64-bit id of the network namespace, never reused
_EEXIST, _EADDRNOTAVAIL = 17, 99


def netns_cookie() -> int:
    """A number naming the caller's network namespace for as long as the host runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, _SO_NETNS_COOKIE, 8), "little")


def read_sysctl(key: str) -> str:
    """`key` as in /proc/sys: "net/ipv4/conf/eth0/arp_ignore" (dots in interface names stay dots)."""
    try:
        return (PROC_SYS / key).read_text().strip()
    except OSError as exc:
        raise DataplaneError(f"cannot read sysctl {key}: {exc.strerror}") from exc


def write_sysctl(key: str, value: str) -> None:
    try:
        (PROC_SYS / key).write_text(value + "\n")
    except OSError as exc:
        raise DataplaneError(f"cannot set sysctl {key} = {value}: {exc.strerror}") from exc


@off_loop
def interface_exists(ifname: str) -> bool:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=ifname))


@off_loop
def default_route_interface() -> str | None:
    """The interface of the main table's IPv4 default route (the first one), None without one."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for route in ipr.get_default_routes(family=socket.AF_INET, table=254):
            oif = route.get_attr("RTA_OIF")
            if oif is None:
                multipath = route.get_attr("RTA_MULTIPATH") or []
                oif = multipath[0]["oif"] if multipath else None
            if oif is not None:
                links = ipr.get_links(oif)
                if links:
                    return str(links[0].get_attr("IFLA_IFNAME"))
    return None


@off_loop
def interface_addresses(ifname: str, version: int = 4) -> list[str]:
    """The interface's addresses of one IP version, without prefix length."""
    from pyroute2 import IPRoute

    family = socket.AF_INET if version == 4 else socket.AF_INET6
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise DataplaneError(f"no interface named {ifname!r} in this network namespace")
        return [str(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr(index=found[0], family=family)]


def host_prefix(addr: str) -> str:
    """ "10.0.0.1" -> "10.0.0.1/32", "fd00::1" -> "fd00::1/128"."""
    ip = ipaddress.ip_address(addr)
    return f"{ip}/{ip.max_prefixlen}"


@off_loop
def loopback_addresses() -> set[str]:
    """Addresses on the loopback device as "address/prefixlen"."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=LOOPBACK)[0]
        return {f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=idx)}


@off_loop
def set_loopback_address(prefix: str, present: bool) -> bool:
    """Put "address/prefixlen" on the loopback device (present) or take it off; False if it
    already was (or was not) there."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    net = ipaddress.ip_interface(prefix)
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=LOOPBACK)[0]
        try:
            ipr.addr(
                "add" if present else "del", index=idx, address=str(net.ip), prefixlen=net.network.prefixlen
            )
        except NetlinkError as exc:
            if exc.code == (_EEXIST if present else _EADDRNOTAVAIL):
                return False
            verb = "add" if present else "remove"
            raise DataplaneError(f"cannot {verb} {prefix} on {LOOPBACK}: {exc}") from exc
    return True
