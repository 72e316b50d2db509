# SPDX-License-Identifier: Apache-2.0
"""The fast path under the fuzzer (bpf/lb_fastpath.h, docs/datapath.md#fast-path): a network namespace
whose routes and neighbours bpf_fib_lookup reads, and the rules that predict its answer.

bpf_fib_lookup in a test run reads the tables of the calling thread's namespace, from the ingress
interface given in the run's xdp_md. The lab is a namespace of its own with fixed tables, one way
of falling back per IPv4 backend of topology.py, so the oracle can predict every verdict from the
DNATed destination, the frame's length, TTL, options and tag, and the ingress interface alone:

    fzin   10.0.0.1/24, forwarding on: where frames arrive (in lb_fp_ifaces)
    fzoff  10.0.8.1/24, forwarding off: frames arriving here get "forwarding disabled" (fib_other)
    fzout  10.0.2.1/24, mtu 1400, in lb_fp_ifaces
           10.0.2.11  permanent neighbour                      -> redirected
           10.0.2.12  no neighbour entry                       -> no_neigh
           10.0.2.13  permanent neighbour, route mtu lock 160  -> frag_needed above 160 bytes
    fzun   10.0.3.1/24, NOT in lb_fp_ifaces
           10.0.3.10  permanent neighbour                      -> unmanaged

The kernel's order (net/core/filter.c bpf_ipv4_fib_lookup): forwarding on the ingress interface,
route, MTU (tot_len against the locked route MTU or the device's), neighbour; then lb_fastpath.h
checks the egress against lb_fp_ifaces. Before any lookup the program passes VLAN-tagged frames, IP
options and TTL <= 1, in that order. The tables never change during a run, so whether a next-hop
cache (if the program has one) hits does not change any answer.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from lbtui.dataplane.structs import GLOBAL_COUNTERS
from tests.fuzz.packets.parse import View
from tests.fuzz.packets.wire import addr, u16

XDP_REDIRECT = 4
CLONE_NEWNET = 0x40000000
NS_PREFIX = "lbfzfp"  # + the process id: each fuzzing process has its own lab
FAST_PATH_COUNTERS = tuple(n for n in GLOBAL_COUNTERS if n.startswith("fast_path_"))

INGRESS, INGRESS_NO_FORWARDING, MANAGED, UNMANAGED = "fzin", "fzoff", "fzout", "fzun"
DEVICE_MTU = 1400  # fzout
SMALL_MTU = 160  # the locked MTU of the route to 10.0.2.13
FORWARDED = "fast_path_forwarded"
NO_NEIGH = "fast_path_no_neigh"
FRAG_NEEDED = "fast_path_frag_needed"
TTL = "fast_path_ttl"
IP_OPTIONS = "fast_path_ip_options"
UNMANAGED_EGRESS = "fast_path_unmanaged"
VLAN = "fast_path_vlan"
FIB_OTHER = "fast_path_fib_other"


@dataclass(frozen=True)
class Way:
    """How the lab's namespace reaches one backend address."""

    device: str
    neighbour: bytes | None  # the permanent neighbour entry's MAC, None: no entry
    mtu: int  # the route's locked MTU, else the device's


WAYS: dict[bytes, Way] = {
    addr("10.0.2.11"): Way(MANAGED, bytes.fromhex("02000000fa11"), DEVICE_MTU),
    addr("10.0.2.12"): Way(MANAGED, None, DEVICE_MTU),
    addr("10.0.2.13"): Way(MANAGED, bytes.fromhex("02000000fa13"), SMALL_MTU),
    addr("10.0.3.10"): Way(UNMANAGED, bytes.fromhex("02000000fa10"), 1500),
}
DEVICES = {
    INGRESS: "10.0.0.1/24",
    INGRESS_NO_FORWARDING: "10.0.8.1/24",
    MANAGED: "10.0.2.1/24",
    UNMANAGED: "10.0.3.1/24",
}
MANAGED_DEVICES = (INGRESS, MANAGED)


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
            self._ip("link", "set", name, "up")
            self._ip("link", "set", name + "p", "up")
        self._ip("link", "set", MANAGED, "mtu", str(DEVICE_MTU))
        sysctl = ["ip", "netns", "exec", self.ns, "sysctl", "-qw"]
        subprocess.run([*sysctl, "net.ipv4.conf.all.forwarding=1"], check=True)
        subprocess.run([*sysctl, f"net.ipv4.conf.{INGRESS_NO_FORWARDING}.forwarding=0"], check=True)
        for ip, way in WAYS.items():
            text = ".".join(map(str, ip))
            if way.mtu != DEVICE_MTU and way.device == MANAGED:
                self._ip("route", "add", f"{text}/32", "dev", way.device, "mtu", "lock", str(way.mtu))
            if way.neighbour is not None:
                mac = way.neighbour.hex(":")
                self._ip("neigh", "replace", text, "lladdr", mac, "dev", way.device, "nud", "permanent")

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

    def managed_ifindexes(self) -> list[int]:
        return [self.ifindex[name] for name in MANAGED_DEVICES]


# ---- the rules ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What lb_fastpath.h does with a DNATed IPv4 frame: the counter it moves, and for a redirect the
    new MACs."""

    counter: str
    dmac: bytes = b""
    smac: bytes = b""

    @property
    def redirected(self) -> bool:
        return self.counter == FORWARDED


def decide(
    data: bytes, view: View, backend_ip: bytes, ingress: str, egress_mac: dict[str, bytes]
) -> Decision:
    """xdp_fast_forward4 on the DNATed frame (to `backend_ip`) arriving on `ingress`."""
    if view.l3 != 14:
        return Decision(VLAN)
    if view.ihl_len != 20:
        return Decision(IP_OPTIONS)
    if data[view.l3 + 8] <= 1:
        return Decision(TTL)
    way = WAYS.get(backend_ip)
    if ingress == INGRESS_NO_FORWARDING or way is None:
        return Decision(FIB_OTHER)
    if view.ip_len > way.mtu:
        return Decision(FRAG_NEEDED)
    if way.neighbour is None:
        return Decision(NO_NEIGH)
    if way.device not in MANAGED_DEVICES:
        return Decision(UNMANAGED_EGRESS)
    return Decision(FORWARDED, way.neighbour, egress_mac[way.device])


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


def check_redirect(data: bytes, out: bytes, view: View, decision: Decision) -> tuple[list[str], bytes]:
    """The fast path's own changes of a redirected frame, byte for byte: MACs, TTL - 1 and the header
    checksum (the DNAT's incremental update, then the TTL's). Returns the problems and the frame as
    the DNAT alone would have left it, for rewrite.check_rewrite."""
    if len(out) != len(data):
        return [f"fast path: the frame length changed {len(data)} -> {len(out)}"], out
    l3 = view.l3
    problems = []
    if out[0:6] != decision.dmac:
        problems.append(f"fast path: destination MAC {out[0:6].hex(':')}, expected {decision.dmac.hex(':')}")
    if out[6:12] != decision.smac:
        problems.append(f"fast path: source MAC {out[6:12].hex(':')}, expected {decision.smac.hex(':')}")
    if out[l3 + 8] != data[l3 + 8] - 1:
        problems.append(f"fast path: TTL {out[l3 + 8]}, expected {data[l3 + 8] - 1}")
    in_check = int.from_bytes(data[l3 + 10 : l3 + 12], "little")
    dnat_check = csum_replace4(in_check, data[l3 + 16 : l3 + 20], out[l3 + 16 : l3 + 20])
    want = ttl_check(dnat_check)
    got = int.from_bytes(out[l3 + 10 : l3 + 12], "little")
    if got != want:
        problems.append(
            f"fast path: IP header checksum {u16(out, l3 + 10):#06x}, expected "
            f"{int.from_bytes(want.to_bytes(2, 'little'), 'big'):#06x} (the DNAT's update, then TTL - 1)"
        )
    plain = bytearray(out)
    plain[0:12] = data[0:12]
    plain[l3 + 8] = data[l3 + 8]
    plain[l3 + 10 : l3 + 12] = dnat_check.to_bytes(2, "little")
    return problems, bytes(plain)
