# SPDX-License-Identifier: Apache-2.0
"""Which interfaces the XDP fast path may redirect to (lb_fp_ifaces; bpf/lb_fastpath.h and, for
IPv6, bpf/lb_fastpath6.h).

The fast path sends a DNATed packet out of the interface bpf_fib_lookup names only when that interface
is in lb_fp_ifaces; anything else takes the kernel's forwarding (counted as fast_path_unmanaged). The
set is the interfaces lbtui attaches to plus those the routes to the backends (IPv4 and IPv6) leave
through, looked up when a backend is set (a later route change makes the lookup name another interface:
unmanaged until the backend is set again, never a wrong redirect).

Each interface comes with its MAC, read when the set is written: the forward fast path takes only
frames addressed to the ingress interface's MAC, as the kernel's forwarding does (fast_path_other_host,
bpf/lb_nexthop.h). A MAC changed later is read again at the next rewrite of the set (interfaces set,
a new backend seen); until then frames to the new MAC fall back and frames to the old one still go
fast (docs/datapath.md#fast-path, "Destination MAC").

Native XDP can redirect only into a device that can transmit XDP frames (ndo_xdp_xmit; a veth only
when its peer runs XDP or has GRO on: docs/datapath.md#fast-path). lbtui cannot tell that yet, so
while any attachment runs in native mode the set stays empty and every packet falls back.

The fast path remembers bpf_fib_lookup's answers (lb_fp_nexthops forward, lb_fp_reply_nexthops for
replies, each with an IPv6 twin: bpf/lb_nexthop.h) for at most a second; `NextHopWatch` makes it forget them
at once when the kernel announces a neighbour, route, address, forwarding or link change
(docs/datapath.md#next-hop-cache).

Replies: `ReplyPrograms` attaches lbtui_tc_reply at TC ingress of the backend-facing interfaces, those
the routes to the backends leave through that are not client-facing (bpf/lb_fastpath_reply.h).
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from lbtui.dataplane import tcfilter
from lbtui.dataplane.netlink import off_loop
from lbtui.dataplane.port import DataplaneError

log = logging.getLogger(__name__)

REPLY_PREF = 0xC002  # lbtui_tc_reply's TC ingress preference (egress: 0xC000, the decapsulator: 0xC001)


@off_loop
def route_interface(ip: str) -> int | None:
    """The ifindex the kernel's route to the address `ip` (IPv4 or IPv6) leaves through (None: no
    route, or not one interface)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    family = socket.AF_INET if ipaddress.ip_address(ip).version == 4 else socket.AF_INET6
    with IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=ip, family=family)
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


@off_loop
def interface_macs(ifindexes: Iterable[int]) -> dict[int, str]:
    """ifindex -> MAC ("02:00:5e:00:53:01") of each interface that has an Ethernet address (one gone,
    or of another kind, is left out: the fast path then never uses it)."""
    from pyroute2 import IPRoute

    wanted = set(ifindexes)
    if not wanted:
        return {}
    out = {}
    with IPRoute() as ipr:
        for link in ipr.get_links():
            mac = link.get_attr("IFLA_ADDRESS")
            if link["index"] in wanted and isinstance(mac, str) and len(mac) == 17:
                out[int(link["index"])] = mac
    return out


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

    def backend_side(self) -> set[int]:
        return {i for i in self._backend_routes.values() if i is not None}

    def wanted(self, attached: Iterable[str], any_native: bool) -> dict[int, str]:
        """ifindex -> MAC of every interface the fast path may use (Maps.set_fast_path_interfaces)."""
        if any_native:
            return {}
        return interface_macs(interface_indexes(attached) | self.backend_side())


@off_loop
def interface_name(ifindex: int) -> str | None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.get_links(ifindex)
        return str(links[0].get_attr("IFLA_IFNAME")) if links else None


class ReplyPrograms:
    """lbtui_tc_reply at TC ingress (clsact) of the backend-facing interfaces, attached and detached by
    name. The filter has a preference of its own, so it shares the hook with anyone else's filters."""

    def __init__(self, prog: Any) -> None:
        self._prog = prog
        self.attached: set[str] = set()

    @off_loop
    def set(self, ifnames: set[str]) -> None:
        for ifname in self.attached - ifnames:
            self._detach(ifname)
        for ifname in ifnames - self.attached:
            try:
                tcfilter.attach(ifname, tcfilter.INGRESS, self._prog.fd, self._prog.name, REPLY_PREF)
            except DataplaneError as exc:
                log.warning("fast path: cannot attach the reply program to %s: %s", ifname, exc)
                continue
            self.attached.add(ifname)
            log.info("fast path: reply program attached to TC ingress of %s", ifname)

    def _detach(self, ifname: str) -> None:
        # the clsact goes too once no filter is left on it (as the loader's TC egress does), also one
        # that an earlier run created and a crash left behind
        try:
            tcfilter.detach(ifname, tcfilter.INGRESS, REPLY_PREF, delete_clsact=True)
        except DataplaneError as exc:
            log.warning("fast path: removing the reply program from %s: %s", ifname, exc)
        self.attached.discard(ifname)

    @off_loop
    def close(self) -> None:
        for ifname in list(self.attached):
            self._detach(ifname)


# rtnetlink multicast groups (linux/rtnetlink.h; bind takes bit group - 1): what can change
# bpf_fib_lookup's answer, for both families. Netconf carries the forwarding switches.
RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4  # IPv4 and IPv6 neighbours
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
RTMGRP_IPV4_NETCONF = 1 << (24 - 1)  # RTNLGRP_IPV4_NETCONF
RTMGRP_IPV6_NETCONF = 1 << (25 - 1)  # RTNLGRP_IPV6_NETCONF
NEXT_HOP_GROUPS = (
    RTMGRP_LINK
    | RTMGRP_NEIGH
    | RTMGRP_IPV4_IFADDR
    | RTMGRP_IPV4_ROUTE
    | RTMGRP_IPV6_IFADDR
    | RTMGRP_IPV6_ROUTE
    | RTMGRP_IPV4_NETCONF
    | RTMGRP_IPV6_NETCONF
)


def rtnetlink_socket(groups: int = NEXT_HOP_GROUPS) -> socket.socket:
    """A netlink socket of the current thread's network namespace that receives `groups`."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
    sock.bind((0, groups))
    return sock


class NextHopWatch:
    """Calls `forget` (Maps.forget_next_hops) after every batch of rtnetlink messages about links,
    neighbours, IPv4 and IPv6 addresses, routes and forwarding switches, on a thread of its own: a
    changed MAC, route, MTU or a link gone reaches both directions' caches as soon as the kernel
    announces it, not after the caches' 1 s.
    Any message counts (no parsing): a spurious forget costs one fib lookup per remembered next hop."""

    def __init__(self, forget: Callable[[], None], sock: socket.socket | None = None) -> None:
        self._forget = forget
        self._stop = threading.Event()
        self._sock = sock or rtnetlink_socket()
        self._thread = threading.Thread(target=self._run, name="lbtui-next-hops", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.5)
            if not ready:
                continue
            try:
                while self._sock.recv(65536):  # the whole batch, then one forget
                    pass
            except BlockingIOError:
                pass
            except OSError as exc:  # ENOBUFS: messages lost, so forget anyway
                log.debug("fast path: next-hop watch: %s", exc)
            try:
                self._forget()
            except Exception:  # the map went away under a closing engine: never end silently
                if not self._stop.is_set():
                    log.exception("fast path: next-hop watch")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
