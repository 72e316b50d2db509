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
bpf/lb_nexthop.h). A MAC changed later is read again when the next-hop watch sees a link message
(kernel.py rewrites the set: docs/datapath.md#fast-path, "Destination MAC").

Native XDP can redirect only into a device that can transmit XDP frames (ndo_xdp_xmit; a veth only
when its peer runs XDP or has GRO on: docs/datapath.md#fast-path). So while any attachment runs in
native mode the set holds only the interfaces whose netdev xdp-features say NDO_XMIT (xdp_features.py,
re-read whenever the kernel announces a change); the others' packets fall back.

The fast path remembers bpf_fib_lookup's answers (lb_fp_nexthops forward, lb_fp_reply_nexthops for
replies, each with an IPv6 twin: bpf/lb_nexthop.h) for at most a second; `NextHopWatch`
(nexthop_watch.py) makes it forget them at once when the kernel announces a change that may alter one
(docs/datapath.md#next-hop-cache).

Replies: `ReplyPrograms` attaches lbtui_tc_reply at TC ingress of the backend-facing interfaces, those
the routes to the backends leave through that are not client-facing (bpf/lb_fastpath_reply.h), each
at a preference of its own so that several instances can share an interface.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lbtui.dataplane import bpfobj, tcfilter
from lbtui.dataplane.netlink import off_loop
from lbtui.dataplane.port import DataplaneError
from lbtui.dataplane.xdp_features import native_targets, xdp_features

log = logging.getLogger(__name__)

# lbtui_tc_reply's TC ingress preferences (egress: 0xC000, the decapsulator: 0xC001): each instance
# that shares a backend-facing interface takes a free one (docs/datapath.md#attachments)
REPLY_PREF = 0xC002
REPLY_PREFS = range(REPLY_PREF, REPLY_PREF + 16)


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
def interface_macs(names: Iterable[str], ifindexes: Iterable[int]) -> dict[int, str]:
    """ifindex -> MAC ("02:00:5e:00:53:01") of the interfaces named `names` and of those of
    `ifindexes`, from one dump of the links; one without an Ethernet address (gone, or of another
    kind) is left out: the fast path then never uses it."""
    from pyroute2 import IPRoute

    wanted_names, wanted_indexes = set(names), set(ifindexes)
    if not wanted_names and not wanted_indexes:
        return {}
    out = {}
    with IPRoute() as ipr:
        for link in ipr.get_links():
            mac = link.get_attr("IFLA_ADDRESS")
            wanted = link["index"] in wanted_indexes or link.get_attr("IFLA_IFNAME") in wanted_names
            if wanted and isinstance(mac, str) and len(mac) == 17:
                out[int(link["index"])] = mac
    return out


@dataclass(frozen=True)
class FastPathSet:
    """What lb_fp_ifaces holds (Maps.set_fast_path_interfaces): every interface the fast path may use,
    ifindex -> MAC, and those of them XDP may redirect frames into."""

    macs: dict[int, str]
    xdp_out: frozenset[int]


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

    def wanted(self, attached: Iterable[str], any_native: bool) -> FastPathSet:
        """The attachments and backend-side interfaces with their MACs; while any attachment runs
        native XDP, XDP frames go only into those that transmit XDP frames (the program cannot tell
        which mode runs it, so a generic ingress gives up the others too: never a native redirect into
        a device that drops it). Replies, skbs redirected from TC, may go into any of them."""
        macs = interface_macs(attached, self.backend_side())
        xdp_out = native_targets(macs, xdp_features()) if any_native else set(macs)
        return FastPathSet(macs, frozenset(xdp_out))


@off_loop
def interface_name(ifindex: int) -> str | None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.get_links(ifindex)
        return str(links[0].get_attr("IFLA_IFNAME")) if links else None


class ReplyPrograms:
    """lbtui_tc_reply at TC ingress (clsact) of the backend-facing interfaces, attached and detached by
    name. Each filter takes a free preference of REPLY_PREFS and is remembered with it, so it shares
    the hook with anyone else's filters, other lbtui instances' reply programs included; a stop
    removes only this instance's (and the clsact once no filter is left on it). `adopt` names an
    earlier run's reply filter of this instance (leftover_replies.py) to replace in place, without a
    gap, on an interface still wanted."""

    def __init__(self, prog: Any, adopt: Mapping[str, tuple[int, int]] | None = None) -> None:
        self._prog = prog
        self._adopt = dict(adopt or {})  # ifname -> (preference, program id) of the earlier run's
        self.attached: dict[str, int] = {}  # ifname -> preference

    @off_loop
    def set(self, ifnames: set[str]) -> None:
        for ifname in set(self.attached) - ifnames:
            self._detach(ifname)
        for ifname in ifnames - set(self.attached):
            try:
                pref = self._attach(ifname)
            except DataplaneError as exc:
                log.warning("fast path: cannot attach the reply program to %s: %s", ifname, exc)
                continue
            self.attached[ifname] = pref
            log.info("fast path: reply program attached to TC ingress of %s (preference %#x)", ifname, pref)

    def _attach(self, ifname: str) -> int:
        prog = self._prog
        if ifname in self._adopt:
            pref, earlier = self._adopt.pop(ifname)
            current = tcfilter.filters(ifname, tcfilter.INGRESS)
            if any(f.pref == pref and f.prog_id == earlier for f in current):
                tcfilter.attach(ifname, tcfilter.INGRESS, prog.fd, prog.name, pref)  # replaced in place
                return pref
        return tcfilter.attach_free(ifname, tcfilter.INGRESS, prog.fd, prog.name, REPLY_PREFS)

    def _detach(self, ifname: str) -> None:
        # only while the filter there is still this program (an older lbtui's fixed preference could
        # have replaced it); the clsact goes too once no filter is left on it
        pref = self.attached.pop(ifname)
        there = [f.prog_id for f in tcfilter.filters(ifname, tcfilter.INGRESS) if f.pref == pref]
        if not there:
            return  # gone with its interface, or removed by hand
        if bpfobj.prog_id(self._prog.fd) not in there:
            log.warning(
                "fast path: the reply program on TC ingress of %s (preference %#x) was replaced by "
                "someone else's filter; left as it is",
                ifname,
                pref,
            )
            return
        try:
            tcfilter.detach(ifname, tcfilter.INGRESS, pref, delete_clsact=True)
        except DataplaneError as exc:
            log.warning("fast path: removing the reply program from %s: %s", ifname, exc)

    @off_loop
    def close(self) -> None:
        for ifname in list(self.attached):
            self._detach(ifname)
