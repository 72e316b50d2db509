# SPDX-License-Identifier: Apache-2.0
"""Which interfaces the XDP fast path may redirect to (lb_fp_ifaces; bpf/lb_fastpath.h).

The fast path sends a DNATed packet out of the interface bpf_fib_lookup names only when that interface
is in lb_fp_ifaces; anything else takes the kernel's forwarding (counted as fast_path_unmanaged). The
set is the interfaces lbtui attaches to plus those the routes to the IPv4 backends leave through,
looked up when a backend is set (a later route change makes the lookup name another interface:
unmanaged until the backend is set again, never a wrong redirect).

Native XDP can redirect only into a device that can transmit XDP frames (ndo_xdp_xmit; a veth only
when its peer runs XDP or has GRO on: docs/datapath.md#fast-path). lbtui cannot tell that yet, so
while any attachment runs in native mode the set stays empty and every packet falls back.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable

from lbtui.dataplane.netlink import off_loop

log = logging.getLogger(__name__)


@off_loop
def route_interface(ip: str) -> int | None:
    """The ifindex the kernel's route to the IPv4 address `ip` leaves through (None: no route, or
    not one interface)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    if ipaddress.ip_address(ip).version != 4:
        return None
    with IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=ip, family=socket.AF_INET)
        except NetlinkError:
            return None
        for route in routes:
            oif = route.get_attr("RTA_OIF")
            if oif is not None:
                return int(oif)
    return None


@off_loop
def interface_indexes(names: Iterable[str]) -> set[int]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return {i for name in names for i in ipr.link_lookup(ifname=name)}


class FastPathInterfaces:
    """The wanted content of lb_fp_ifaces, from the attachments and the backends' routes."""

    def __init__(self) -> None:
        self._backend_routes: dict[str, int | None] = {}

    def note_backend(self, ip: str) -> bool:
        """Look up the route to a backend the first time it is seen; True if the set may change."""
        if ip in self._backend_routes:
            return False
        self._backend_routes[ip] = route_interface(ip)
        return True

    def wanted(self, attached: Iterable[str], any_native: bool) -> set[int]:
        if any_native:
            return set()
        egress = {i for i in self._backend_routes.values() if i is not None}
        return interface_indexes(attached) | egress
