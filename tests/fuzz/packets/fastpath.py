# SPDX-License-Identifier: Apache-2.0
"""The fast path under the fuzzer (bpf/lb_fastpath.h, docs/datapath.md#fast-path): a network namespace
whose routes and neighbours bpf_fib_lookup reads, and the rules that predict its answer. The IPv6
tables and rules (bpf/lb_fastpath6.h) are in fastpath6.py; the lab builds both.

bpf_fib_lookup in a test run reads the tables of the calling thread's namespace, from the ingress
interface given in the run's xdp_md. The lab is a namespace of its own with fixed tables that give
the IPv4 backends of topology.py and the generator's client ranges each one answer, so the oracle
can predict every verdict from the addresses, the frame's length, TTL, options and tag, and the
ingress interface alone:

    fzin   10.0.0.1/24 (in lb_fp_ifaces): where client frames arrive, where replies leave
           172.16.0.0/12 via 10.0.0.2 (permanent neighbour)   -> replies redirected
           172.31.0.0/16 via 10.0.0.2, mtu lock 160          -> frag_needed above 160 bytes
           192.168.0.0/16 via 10.0.0.3 (no neighbour entry)  -> no_neigh
    fzoff  10.0.8.1/24 (in lb_fp_ifaces), forwarding off: frames arriving here get "forwarding
           disabled" (fib_other)
    fzout  10.0.2.1/24, mtu 1400 (in lb_fp_ifaces)
           10.0.2.11  permanent neighbour                      -> redirected
           10.0.2.12  no neighbour entry                       -> no_neigh
           10.0.2.13  permanent neighbour, route mtu lock 160  -> frag_needed above 160 bytes
    fzun   10.0.3.1/24, NOT in lb_fp_ifaces
           10.0.3.10  permanent neighbour                      -> unmanaged
           10.1.0.0/16 via 10.0.3.2 (permanent neighbour)     -> replies unmanaged
    anything else: no route, or a local/broadcast address     -> fib_other

The kernel's order (net/core/filter.c bpf_ipv4_fib_lookup): forwarding on the ingress interface,
route (local and broadcast routes are not forwarded), MTU (tot_len against the locked route MTU or
the device's), neighbour of the next hop; then lb_fastpath.h checks the egress against
lb_fp_ifaces. Before any lookup the forward program passes VLAN-tagged frames, IP options and
TTL <= 1, in that order, then frames arriving on an interface not in lb_fp_ifaces (unmanaged) and
frames not addressed to the ingress interface's MAC (other_host: the generator sends some to another
unicast, the broadcast and multicast MACs; fzin, fzoff and fzout all have wire.ETH_DST, the MAC the
generator's frames are addressed to); the reply program (lbtui_tc_reply, lb_fastpath_reply.h) looks at frames
addressed to the backend interface's MAC, counts IP options and TTL <= 1 of replies of ours, then
looks up the way to the client. The tables never change during a run, so whether a next-hop cache (if the
program has one) hits does not change any answer.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from lbtui.dataplane.structs import GLOBAL_COUNTERS
from tests.fuzz.packets.parse import View
from tests.fuzz.packets.wire import ETH_DST, ETH_IP, TCP, UDP, u16

XDP_REDIRECT = 4
TC_ACT_REDIRECT = 7
LB_FP_REPLY_MARK = 0x4C42FA57  # lb_fastpath_reply.h: the mark of a reply redirected by lbtui_tc_reply
CLONE_NEWNET = 0x40000000
NS_PREFIX = "lbfzfp"  # + the process id: each fuzzing process has its own lab
FAST_PATH_COUNTERS = tuple(n for n in GLOBAL_COUNTERS if n.startswith("fast_path_"))

INGRESS, INGRESS_NO_FORWARDING, MANAGED, UNMANAGED = "fzin", "fzoff", "fzout", "fzun"
REPLY_INGRESS = MANAGED  # where the backends' replies arrive (its MAC: the frames' wire.ETH_DST)
SMALL_MTU = 160  # the locked MTU of two routes
DEVICE_MTU = {INGRESS: 1500, INGRESS_NO_FORWARDING: 1500, MANAGED: 1400, UNMANAGED: 1500}
FORWARDED = "fast_path_forwarded"
REPLY_FORWARDED = "fast_path_reply_forwarded"
NO_NEIGH = "fast_path_no_neigh"
FRAG_NEEDED = "fast_path_frag_needed"
TTL = "fast_path_ttl"
IP_OPTIONS = "fast_path_ip_options"
UNMANAGED_EGRESS = "fast_path_unmanaged"
VLAN = "fast_path_vlan"
FIB_OTHER = "fast_path_fib_other"
OTHER_HOST = "fast_path_other_host"


@dataclass(frozen=True)
class Route:
    prefix: str
    device: str
    via: str = ""  # the gateway, "" on-link
    mtu: int = 0  # a locked MTU, 0: the device's
    connected: bool = False  # made by the kernel with the interface's address


ROUTES = (
    Route("10.0.0.0/24", INGRESS, connected=True),
    Route("10.0.8.0/24", INGRESS_NO_FORWARDING, connected=True),
    Route("10.0.2.0/24", MANAGED, connected=True),
    Route("10.0.3.0/24", UNMANAGED, connected=True),
    Route("10.0.2.13/32", MANAGED, mtu=SMALL_MTU),
    Route("172.16.0.0/12", INGRESS, via="10.0.0.2"),
    Route("172.31.0.0/16", INGRESS, via="10.0.0.2", mtu=SMALL_MTU),
    Route("192.168.0.0/16", INGRESS, via="10.0.0.3"),
    Route("10.1.0.0/16", UNMANAGED, via="10.0.3.2"),
)
# permanent neighbour entries: address -> (device, MAC)
NEIGHBOURS = {
    "10.0.2.11": (MANAGED, "02:00:00:00:fa:11"),
    "10.0.2.13": (MANAGED, "02:00:00:00:fa:13"),
    "10.0.3.10": (UNMANAGED, "02:00:00:00:fa:10"),
    "10.0.0.2": (INGRESS, "02:00:00:00:fa:02"),
    "10.0.3.2": (UNMANAGED, "02:00:00:00:fa:32"),
}
DEVICES = {
    INGRESS: "10.0.0.1/24",
    INGRESS_NO_FORWARDING: "10.0.8.1/24",
    MANAGED: "10.0.2.1/24",
    UNMANAGED: "10.0.3.1/24",
}
MANAGED_DEVICES = (INGRESS, INGRESS_NO_FORWARDING, MANAGED)  # lbtui attaches to both ingress ones
_ROUTE_NETS = sorted(((ipaddress.ip_network(r.prefix), r) for r in ROUTES), key=lambda nr: -nr[0].prefixlen)


class FastPathLab:
    """The namespace: created at construction, deleted by close(). Root."""

    def __init__(self) -> None:
        self.ns = f"{NS_PREFIX}{os.getpid()}"
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        try:
            self._build()
            links = json.loads(self._ip("-j", "link", "show"))
            self.ifindex = {link["ifname"]: int(link["ifindex"]) for link in links}
            self.mac = {link["ifname"]: bytes.fromhex(link["address"].replace(":", "")) for link in links}
            self.rules = Rules(self.mac, self.local, fastpath6.Rules6(self.mac, self.local6, DEVICE_MTU))
            self._ns_fd = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
        except BaseException:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
            raise
        self._libc = ctypes.CDLL(None, use_errno=True)

    def _ip(self, *args: str) -> str:
        return subprocess.run(["ip", "-n", self.ns, *args], check=True, capture_output=True, text=True).stdout

    def _build(self) -> None:
        for name, cidr in DEVICES.items():
            self._ip("link", "add", name, "type", "veth", "peer", "name", name + "p")
            self._ip("addr", "add", cidr, "dev", name)
            self._ip("link", "set", name, "mtu", str(DEVICE_MTU[name]))
            if name != UNMANAGED:  # the generator's frames are addressed to them (pkt_type PACKET_HOST)
                self._ip("link", "set", name, "address", ETH_DST.hex(":"))
            self._ip("link", "set", name, "up")
            self._ip("link", "set", name + "p", "up")
        sysctl = ["ip", "netns", "exec", self.ns, "sysctl", "-qw"]
        subprocess.run([*sysctl, "net.ipv4.conf.all.forwarding=1"], check=True)
        subprocess.run([*sysctl, f"net.ipv4.conf.{INGRESS_NO_FORWARDING}.forwarding=0"], check=True)
        for ip, (device, mac) in NEIGHBOURS.items():
            self._ip("neigh", "replace", ip, "lladdr", mac, "dev", device, "nud", "permanent")
        for r in ROUTES:
            if not r.connected:
                via = ["via", r.via] if r.via else []
                mtu = ["mtu", "lock", str(r.mtu)] if r.mtu else []
                self._ip("route", "add", r.prefix, *via, "dev", r.device, *mtu)
        # what the local table holds (the lab's addresses, broadcast addresses): never forwarded
        local = json.loads(self._ip("-j", "route", "show", "table", "local"))
        self.local = [ipaddress.ip_network(e["dst"], strict=False) for e in local if "." in e["dst"]]
        self.local6 = fastpath6.build(
            self._ip, lambda setting: subprocess.run([*sysctl, setting], check=True)
        )

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._ns_fd)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """The calling thread in the lab's namespace (setns affects this thread only), then back."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            if self._libc.setns(self._ns_fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the fast-path lab")
            try:
                yield
            finally:
                if self._libc.setns(home, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back from the fast-path lab")
        finally:
            os.close(home)

    def managed_macs(self) -> dict[int, str]:
        """lb_fp_ifaces as lbtui would write it: ifindex -> MAC of the managed interfaces."""
        return {self.ifindex[name]: self.mac[name].hex(":") for name in MANAGED_DEVICES}


# ---- the rules ------------------------------------------------------------------------------------


def ingress_decision(data: bytes, ingress: str, macs: dict[str, bytes]) -> Decision | None:
    """fp_ingress_ok (lb_nexthop.h), both families: the forward fast path takes only frames arriving
    on an interface of lb_fp_ifaces and addressed to its MAC; None: it goes on to the lookup. (Its
    cache, keyed by the ingress interface, keeps the MAC: a hit gives the same answer.)"""
    if ingress not in MANAGED_DEVICES:
        return Decision(UNMANAGED_EGRESS)
    if data[0:6] != macs[ingress]:
        return Decision(OTHER_HOST)
    return None


@dataclass(frozen=True)
class Decision:
    """What lb_fastpath.h does with a frame it may send on: the counter it moves, and for a redirect
    the new MACs."""

    counter: str
    dmac: bytes = b""
    smac: bytes = b""

    @property
    def redirected(self) -> bool:
        return self.counter in (FORWARDED, REPLY_FORWARDED)


class Rules:
    """bpf_fib_lookup and lb_fastpath.h's checks over the lab's fixed tables."""

    def __init__(self, macs: dict[str, bytes], local: list[ipaddress.IPv4Network], six: Rules6) -> None:
        self.macs = macs  # the lab's interfaces: the source MAC of a redirect
        self.local = local
        self.six = six  # the IPv6 tables' rules (fastpath6.py)
        self.host_mac = macs[REPLY_INGRESS]  # a reply for the host to route is addressed to it

    def lookup(self, dst: bytes, tot_len: int, ingress: str, forwarded: str) -> Decision:
        """bpf_fib_lookup to `dst` for a packet of `tot_len` bytes from `ingress`, then the
        lb_fp_ifaces check; `forwarded`: the counter of a redirect."""
        ip = ipaddress.IPv4Address(dst)
        if ingress == INGRESS_NO_FORWARDING or any(ip in net for net in self.local):
            return Decision(FIB_OTHER)
        route = next((r for net, r in _ROUTE_NETS if ip in net), None)
        if route is None:
            return Decision(FIB_OTHER)
        if tot_len > (route.mtu or DEVICE_MTU[route.device]):
            return Decision(FRAG_NEEDED)
        neighbour = NEIGHBOURS.get(route.via or str(ip))
        if neighbour is None or neighbour[0] != route.device:
            return Decision(NO_NEIGH)
        if route.device not in MANAGED_DEVICES:
            return Decision(UNMANAGED_EGRESS)
        return Decision(forwarded, bytes.fromhex(neighbour[1].replace(":", "")), self.macs[route.device])

    def forward(self, data: bytes, view: View, backend_ip: bytes, ingress: str) -> Decision:
        """xdp_fast_forward4 on the DNATed frame (to `backend_ip`) arriving on `ingress`."""
        if view.l3 != 14:
            return Decision(VLAN)
        if view.ihl_len != 20:
            return Decision(IP_OPTIONS)
        if data[view.l3 + 8] <= 1:
            return Decision(TTL)
        return ingress_decision(data, ingress, self.macs) or self.lookup(
            backend_ip, view.ip_len, ingress, FORWARDED
        )

    def reply(self, data: bytes, reply: ReplyView) -> Decision | None:
        """tc_reply4 on a reply of a tracked flow (its reverse entry found) arriving on REPLY_INGRESS:
        a counted fallback, a redirect, or None where it passes the frame without counting."""
        if reply.ihl_len != 20:
            return Decision(IP_OPTIONS)
        n = len(data)
        if reply.ip_len < 28 or reply.ip_len > n:  # skb->len: the whole frame in a test run
            return None
        if data[14 + 8] <= 1:
            return Decision(TTL)
        if n < 14 + 20 + 8:
            return None
        if reply.proto == TCP:
            doff = data[34 + 12] >> 4 if n >= 54 else 0
            if n < 54 or doff < 5 or reply.ip_len < 20 + doff * 4:
                return None
        return self.lookup(reply.daddr, reply.ip_len, REPLY_INGRESS, REPLY_FORWARDED)


@dataclass(frozen=True)
class ReplyView:
    """A frame tc_reply4 looks up in conntrack: its key and lengths."""

    saddr: bytes
    daddr: bytes
    sport: int
    dport: int
    proto: int
    ihl_len: int
    ip_len: int


def reply_view(data: bytes, host_mac: bytes) -> ReplyView | None:
    """tc_reply4's checks before the conntrack lookup: None where it passes the frame untouched
    without looking (not addressed to the interface's MAC `host_mac`: the skb's pkt_type is not
    PACKET_HOST; not IPv4 by its EtherType, VLAN tags included; not TCP/UDP; a fragment; the ports
    beyond the frame)."""
    if len(data) < 34 or data[0:6] != host_mac or u16(data, 12) != ETH_IP or data[14] >> 4 != 4:
        return None
    proto = data[14 + 9]
    ihl_len = (data[14] & 15) * 4
    if proto not in (TCP, UDP) or u16(data, 14 + 6) & 0x3FFF or ihl_len < 20 or 14 + ihl_len + 4 > len(data):
        return None
    l4 = 14 + ihl_len
    ports = u16(data, l4), u16(data, l4 + 2)
    return ReplyView(bytes(data[26:30]), bytes(data[30:34]), *ports, proto, ihl_len, u16(data, 16))


def csum_replace4(check: int, old: bytes, new: bytes) -> int:
    """lb_csum.h lb_csum_replace4 on raw (little-endian loaded) 16-bit words, bit for bit."""
    s = ~check & 0xFFFF
    s += ~int.from_bytes(old[0:2], "little") & 0xFFFF
    s += ~int.from_bytes(old[2:4], "little") & 0xFFFF
    s += int.from_bytes(new[0:2], "little") + int.from_bytes(new[2:4], "little")
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ttl_check(check: int) -> int:
    """lb_fastpath.h fp_send4 (the kernel's ip_decrease_ttl) on the raw little-endian word."""
    s = check + 0x0001  # htons(0x0100) on a little-endian host
    return (s + (s >= 0xFFFF)) & 0xFFFF


def check_redirect(
    data: bytes, out: bytes, l3: int, addr_off: int, decision: Decision
) -> tuple[list[str], bytes]:
    """The fast path's own changes of a redirected frame, byte for byte: MACs, TTL - 1 and the header
    checksum (the NAT's incremental update of the address at `addr_off`, then the TTL's). Returns
    the problems and the frame as the NAT alone would have left it, for rewrite.check_rewrite."""
    if len(out) != len(data):
        return [f"fast path: the frame length changed {len(data)} -> {len(out)}"], out
    problems = []
    if out[0:6] != decision.dmac:
        problems.append(f"fast path: destination MAC {out[0:6].hex(':')}, expected {decision.dmac.hex(':')}")
    if out[6:12] != decision.smac:
        problems.append(f"fast path: source MAC {out[6:12].hex(':')}, expected {decision.smac.hex(':')}")
    if out[l3 + 8] != data[l3 + 8] - 1:
        problems.append(f"fast path: TTL {out[l3 + 8]}, expected {data[l3 + 8] - 1}")
    in_check = int.from_bytes(data[l3 + 10 : l3 + 12], "little")
    nat_check = csum_replace4(in_check, data[addr_off : addr_off + 4], out[addr_off : addr_off + 4])
    want = ttl_check(nat_check)
    got = int.from_bytes(out[l3 + 10 : l3 + 12], "little")
    if got != want:
        problems.append(
            f"fast path: IP header checksum {u16(out, l3 + 10):#06x}, expected "
            f"{int.from_bytes(want.to_bytes(2, 'little'), 'big'):#06x} (the NAT's update, then TTL - 1)"
        )
    plain = bytearray(out)
    plain[0:12] = data[0:12]
    plain[l3 + 8] = data[l3 + 8]
    plain[l3 + 10 : l3 + 12] = nat_check.to_bytes(2, "little")
    return problems, bytes(plain)


# the IPv6 half imports this module's names: imported last (FastPathLab and Rules use it at run time)
from tests.fuzz.packets import fastpath6  # noqa: E402
from tests.fuzz.packets.fastpath6 import Rules6  # noqa: E402
