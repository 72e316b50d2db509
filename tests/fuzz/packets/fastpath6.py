# SPDX-License-Identifier: Apache-2.0
"""The IPv6 half of the fast-path lab (fastpath.py) and the rules of bpf/lb_fastpath6.h over it.

The same interfaces carry IPv6 prefixes whose routes and neighbours give the IPv6 backends of
topology.py and the IPv6 generator's client ranges (frames6.Frames6.client_ip) each one answer:

    fzin   fd00:f0::1/64: where client frames arrive, where replies leave
           fd00:fe::/64 via fd00:f0::2 (permanent neighbour)           -> replies redirected
           fd00:fe:0:0:8000::/65 via fd00:fb:3::2 (fzun, neighbour)    -> replies unmanaged
           fd00:fe:0:1::/64 via fd00:f0::2, mtu lock 160               -> frag_needed above 160 bytes
           fd00:fc::/32 via fd00:f0::3 (no neighbour entry)            -> no_neigh
    fzoff  fd00:f8::1/64, IPv6 forwarding off                          -> fib_other
    fzout  fd00:fb::1/64, mtu 1400
           fd00:fb::11  permanent neighbour                              -> redirected
           fd00:fb::12  no neighbour entry                               -> no_neigh
           fd00:fb::13  permanent neighbour, route mtu lock 160          -> frag_needed above 160 bytes
    fzun   fd00:fb:3::1/64, not in lb_fp_ifaces
           fd00:fb:3::10  permanent neighbour                            -> unmanaged
    anything else: no route, a local, anycast or multicast address    -> fib_other

The kernel's order (net/core/filter.c bpf_ipv6_fib_lookup): link-local, multicast or loopback source
or destination (never forwarded), forwarding on the ingress interface, route (unicast only), MTU
(tot_len against the locked route MTU, else the device's, at least 1280), the next hop's
neighbour; then lb_fastpath6.h checks the egress against lb_fp_ifaces. Before the lookup
xdp_fast_forward6 counts a VLAN tag, extension headers, hop limit <= 1 and a client address the
lookup never forwards from (fib_other), in that order, then the ingress interface's checks as IPv4
(fastpath.ingress_decision: unmanaged, other_host); tc_reply6
(lbtui_tc_reply's tail call for IPv6 frames) takes frames addressed to the interface's MAC whose
upper layer is TCP or UDP and not a fragment, and for a reply of ours counts extension headers and
hop limit <= 1 before its lookup.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable

from tests.fuzz.packets.fastpath import (
    FIB_OTHER,
    FRAG_NEEDED,
    INGRESS,
    INGRESS_NO_FORWARDING,
    IP_OPTIONS,
    MANAGED,
    MANAGED_DEVICES,
    NO_NEIGH,
    SMALL_MTU,
    TTL,
    UNMANAGED,
    UNMANAGED_EGRESS,
    VLAN,
    Decision,
    ReplyView,
    Route,
    ingress_decision,
)
from tests.fuzz.packets.parse import View, _upper6
from tests.fuzz.packets.wire import ETH_IPV6, TCP, UDP, u16

IPV6_MIN_MTU = 1280  # ip6_mtu_from_fib6: a device's MTU counts as at least this
DEVICES6 = {
    INGRESS: "fd00:f0::1/64",
    INGRESS_NO_FORWARDING: "fd00:f8::1/64",
    MANAGED: "fd00:fb::1/64",
    UNMANAGED: "fd00:fb:3::1/64",
}
ROUTES6 = (
    Route("fd00:f0::/64", INGRESS, connected=True),
    Route("fd00:f8::/64", INGRESS_NO_FORWARDING, connected=True),
    Route("fd00:fb::/64", MANAGED, connected=True),
    Route("fd00:fb:3::/64", UNMANAGED, connected=True),
    Route("fd00:fb::13/128", MANAGED, mtu=SMALL_MTU),
    Route("fd00:fe::/64", INGRESS, via="fd00:f0::2"),
    Route("fd00:fe:0:0:8000::/65", UNMANAGED, via="fd00:fb:3::2"),
    Route("fd00:fe:0:1::/64", INGRESS, via="fd00:f0::2", mtu=SMALL_MTU),
    Route("fd00:fc::/32", INGRESS, via="fd00:f0::3"),
)
NEIGHBOURS6 = {
    "fd00:fb::11": (MANAGED, "02:00:00:00:f6:11"),
    "fd00:fb::13": (MANAGED, "02:00:00:00:f6:13"),
    "fd00:fb:3::10": (UNMANAGED, "02:00:00:00:f6:10"),
    "fd00:f0::2": (INGRESS, "02:00:00:00:f6:02"),
    "fd00:fb:3::2": (UNMANAGED, "02:00:00:00:f6:32"),
}
_NEIGHBOURS = {ipaddress.IPv6Address(ip): v for ip, v in NEIGHBOURS6.items()}
_ROUTE_NETS = sorted(((ipaddress.ip_network(r.prefix), r) for r in ROUTES6), key=lambda nr: -nr[0].prefixlen)


def build(ip: Callable[..., str], sysctl: Callable[[str], None]) -> list[ipaddress.IPv6Network]:
    """The IPv6 addresses, neighbours and routes on the lab's interfaces (made by fastpath.py), with
    `ip` running `ip -n <lab> ...` and `sysctl` setting one value inside the lab; returns what the
    local table holds (addresses, anycast, multicast): never forwarded."""
    for name, cidr in DEVICES6.items():
        ip("-6", "addr", "add", cidr, "dev", name, "nodad")
    sysctl("net.ipv6.conf.all.forwarding=1")
    sysctl(f"net.ipv6.conf.{INGRESS_NO_FORWARDING}.forwarding=0")
    for addr, (device, mac) in NEIGHBOURS6.items():
        ip("-6", "neigh", "replace", addr, "lladdr", mac, "dev", device, "nud", "permanent")
    for r in ROUTES6:
        if not r.connected:
            via = ["via", r.via] if r.via else []
            mtu = ["mtu", "lock", str(r.mtu)] if r.mtu else []
            ip("-6", "route", "add", r.prefix, *via, "dev", r.device, *mtu)
    local = json.loads(ip("-6", "-j", "route", "show", "table", "local"))
    return [ipaddress.IPv6Network(e["dst"], strict=False) for e in local]


def _strict(a: ipaddress.IPv6Address) -> bool:
    """rt6_need_strict: multicast, link-local and loopback addresses are never forwarded."""
    return a.is_multicast or a.is_link_local or a.is_loopback


class Rules6:
    """bpf_fib_lookup (AF_INET6) and lb_fastpath6.h's checks over the lab's fixed IPv6 tables."""

    def __init__(
        self, macs: dict[str, bytes], local: list[ipaddress.IPv6Network], device_mtu: dict[str, int]
    ) -> None:
        self.macs = macs
        self.local = local
        self.device_mtu = device_mtu

    def lookup(self, src: bytes, dst: bytes, tot_len: int, ingress: str, forwarded: str) -> Decision:
        s, d = ipaddress.IPv6Address(src), ipaddress.IPv6Address(dst)
        if _strict(s) or _strict(d) or ingress == INGRESS_NO_FORWARDING or any(d in n for n in self.local):
            return Decision(FIB_OTHER)
        route = next((r for net, r in _ROUTE_NETS if d in net), None)
        if route is None:
            return Decision(FIB_OTHER)
        if tot_len > (route.mtu or max(IPV6_MIN_MTU, self.device_mtu[route.device])):
            return Decision(FRAG_NEEDED)
        neighbour = _NEIGHBOURS.get(ipaddress.IPv6Address(route.via) if route.via else d)
        if neighbour is None or neighbour[0] != route.device:
            return Decision(NO_NEIGH)
        if route.device not in MANAGED_DEVICES:
            return Decision(UNMANAGED_EGRESS)
        return Decision(forwarded, bytes.fromhex(neighbour[1].replace(":", "")), self.macs[route.device])

    def forward(self, data: bytes, view: View, backend_ip: bytes, ingress: str, forwarded: str) -> Decision:
        """xdp_fast_forward6 on the DNATed frame (to `backend_ip`) arriving on `ingress`."""
        if view.l3 != 14:  # the EtherType is a VLAN tag's
            return Decision(VLAN)
        if data[view.l3 + 6] not in (TCP, UDP):
            return Decision(IP_OPTIONS)
        if data[view.l3 + 7] <= 1:
            return Decision(TTL)
        if _strict(ipaddress.IPv6Address(view.saddr)):  # fp_never_forwarded6, before the cache
            return Decision(FIB_OTHER)
        return ingress_decision(data, ingress, self.macs) or self.lookup(
            view.saddr, backend_ip, view.ip_len, ingress, forwarded
        )

    def reply(
        self, data: bytes, reply: ReplyView, vip: bytes, ingress: str, forwarded: str
    ) -> Decision | None:
        """tc_reply6 on a reply of a tracked flow (its reverse entry found, of VIP `vip`): a counted
        fallback, a redirect, or None where it passes the frame without counting."""
        if reply.ihl_len != 40:
            return Decision(IP_OPTIONS)
        n = len(data)  # skb->len: the whole frame in a test run
        if reply.ip_len < 48 or reply.ip_len > n:
            return None
        if data[14 + 7] <= 1:
            return Decision(TTL)
        if n < 14 + 40 + 8:
            return None
        if reply.proto == TCP:
            doff = data[54 + 12] >> 4 if n >= 74 else 0
            if n < 74 or doff < 5 or reply.ip_len < 40 + doff * 4:
                return None
        return self.lookup(vip, reply.daddr, reply.ip_len, ingress, forwarded)


def reply_view6(data: bytes, host_mac: bytes) -> ReplyView | None:
    """tc_reply6's checks before the conntrack lookup: None where it passes the frame untouched
    without looking (not addressed to `host_mac`; not IPv6; the upper layer not TCP/UDP, a fragment,
    or beyond the headers walked; the ports beyond the frame). The offset of the upper layer is taken
    modulo 256 as the program does (`off &= 0xff`): ReplyView.ihl_len is that offset."""
    if len(data) < 54 or data[0:6] != host_mac or u16(data, 12) != ETH_IPV6 or data[14] >> 4 != 6:
        return None
    proto, off = _upper6(data, 14)
    if proto not in (TCP, UDP):
        return None
    assert isinstance(proto, int)
    off &= 0xFF
    l4 = 14 + off
    if l4 + 4 > len(data):
        return None
    ports = u16(data, l4), u16(data, l4 + 2)
    return ReplyView(bytes(data[22:38]), bytes(data[38:54]), *ports, proto, off, 40 + u16(data, 18))


def check_redirect6(data: bytes, out: bytes, l3: int, decision: Decision) -> tuple[list[str], bytes]:
    """The fast path's own changes of a redirected IPv6 frame, byte for byte: MACs and hop limit - 1
    (no header checksum). Returns the problems and the frame as the NAT alone would have left it."""
    if len(out) != len(data):
        return [f"fast path: the frame length changed {len(data)} -> {len(out)}"], out
    problems = []
    if out[0:6] != decision.dmac:
        problems.append(f"fast path: destination MAC {out[0:6].hex(':')}, expected {decision.dmac.hex(':')}")
    if out[6:12] != decision.smac:
        problems.append(f"fast path: source MAC {out[6:12].hex(':')}, expected {decision.smac.hex(':')}")
    if out[l3 + 7] != data[l3 + 7] - 1:
        problems.append(f"fast path: hop limit {out[l3 + 7]}, expected {data[l3 + 7] - 1}")
    plain = bytearray(out)
    plain[0:12] = data[0:12]
    plain[l3 + 7] = data[l3 + 7]
    return problems, bytes(plain)
