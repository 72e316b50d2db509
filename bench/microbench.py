#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Kernel-timed ns/packet of lbtui's BPF programs per packet class (BPF_PROG_TEST_RUN).

No traffic, no namespace, no attach: the programs of ``lbtui.dataplane.loader.Loaded`` run on
synthetic frames through ``lbtui.dataplane.progrun.run_program``. Every call runs ONE packet
(repeat=1): the programs rewrite the packet in place and the kernel does not reset it between
repetitions (docs/datapath.md#test-run), so repeat > 1 would measure the "not for a VIP" path after
the first run.
The duration of each call is the kernel's (ktime around the program run); this script collects one
sample per call and reports median and p90 per class.

Classes (all interleaved in batches, so slow drift and background load hit every class alike):
  empty_xdp    ``return XDP_PASS`` (compiled here): the test-run floor for XDP classes
  empty_tc     ``return TC_ACT_OK`` (compiled here): the floor for the TC class
  syn          SYN to VIP:80, a new client address:port every call: conntrack miss, backend pick,
               2 conntrack inserts, counters, DNAT. Service with events off.
  syn_events   the same on VIP:81, whose service has events on: + a ring-buffer record per flow.
               The ring buffer is drained (no-op callback) after every batch so it never fills.
  ack          ACK on one established flow (opened by a full handshake: SYN, SYN-ACK through TC, ACK):
               conntrack hit, counters, DNAT
  ack_spread   ACK cycling over --spread-flows established flows (conntrack lookups miss the cache
               more often, as with many concurrent clients)
  non_vip      SYN to an address that is no VIP: service lookup miss, XDP_PASS
  tc_reply     TC egress on a backend's ACK reply of an established flow: reverse lookup + SNAT
  syn6, ack6, tc_reply6   the same three over IPv6 (lbtui_xdp tail-calls lbtui_xdp6, lbtui_tc lbtui_tc6)
  tc_reply_fast, tc_reply6_fast   with --fast-path: the reply at TC ingress (lbtui_tc_reply), redirected

With --katran PATH (a Katran checkout), Katran's XDP balancer is built from it and timed in the same
batches with the same frames (bench/katran_bench.py; nothing of Katran is in this repository):
  katran_syn         SYN to the VIP, new flow every call: LRU miss, ring pick, LRU insert, IPIP encap
  katran_ack         ACK on one established flow: LRU hit, IPIP encap
  katran_ack_spread  ACK cycling over the same number of established flows
  katran_non_vip     the non-VIP SYN
Katran's VIP classes return XDP_TX (encapsulated for a real), lbtui's XDP_PASS (DNAT, the kernel
forwards): the comparison is per packet in the program, not what the kernel does afterwards.

Afterwards a second, shorter phase measures ``syn_events`` with a full ring buffer (nothing drains
it; the program counts events_lost instead of writing) next to the empty XDP program.

"net" = the class's median (p90) minus the median (p90) of the empty program of the same hook,
measured in the same run.

    sudo .venv/bin/python bench/microbench.py [--calls 20000] [--batch 500] [--cpu 1] [--json]
        [--katran PATH [--katran-lru percpu|fallback]]
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import platform
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    from lbtui.control.selection import weighted_table
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from lbtui.control.selection import weighted_table
from lbtui.dataplane.loader import DataplaneSpec, Loaded
from lbtui.dataplane.maps import Maps
from lbtui.dataplane.port import ServiceEntry
from lbtui.dataplane.progrun import (
    TC_ACT_OK,
    TC_ACT_REDIRECT,
    XDP_PASS,
    XDP_REDIRECT,
    XDP_TX,
    run_program,
    skb_context,
)

VIP = "10.0.0.1"
PORT_QUIET = 80  # service 0: events off
PORT_EVENTS = 81  # service 1: events on
OTHER_ADDRESS = "10.0.0.99"
CLIENT = "10.0.0.2"
LB_MAC = "02:00:00:00:00:02"  # the destination of the frames below (fast path: the ingress veth's MAC)
FIRST_NEW_CLIENT = int(ipaddress.IPv4Address("10.128.0.0"))  # new flows: 10.128.0.0 + n
BACKENDS = {0: ("10.0.2.11", 8080), 1: ("10.0.2.12", 8080), 2: ("10.0.2.13", 8080)}
TCP_SYN, TCP_ACK = 0x02, 0x10
VIP6 = "fd00:6a::1"
CLIENT6 = "fd00:6c::2"
FIRST_NEW_CLIENT6 = int(ipaddress.IPv6Address("fd00:6c::1:0"))
BACKENDS6 = {3: ("fd00:6b::11", 8080), 4: ("fd00:6b::12", 8080), 5: ("fd00:6b::13", 8080)}

EMPTY_PROGRAMS = """
#include <uapi/linux/pkt_cls.h>
int empty_xdp(struct xdp_md *ctx) { return XDP_PASS; }
int empty_tc(struct __sk_buff *skb) { return TC_ACT_OK; }
"""

CLASS_NOTES = {
    "empty_xdp": "empty XDP program (`return XDP_PASS`)",
    "empty_tc": "empty TC program (`return TC_ACT_OK`)",
    "syn": "SYN to the VIP, new flow every call, events off",
    "syn_events": "the same, service with events on (ring buffer drained between batches)",
    "syn_events_full": "the same, ring buffer full (reserve fails, events_lost counted)",
    "ack": "ACK on one established flow",
    "ack_spread": "ACK cycling over many established flows",
    "non_vip": "SYN to a non-VIP address",
    "tc_reply": "TC egress: backend's ACK reply, SNAT",
    "tc_reply_fast": "fast path: backend's ACK reply at TC ingress, SNAT, next hop, redirect (--fast-path)",
    "syn6": "IPv6: SYN to the VIP, new flow every call, events off",
    "ack6": "IPv6: ACK on one established flow",
    "tc_reply6": "IPv6: TC egress, backend's ACK reply, SNAT",
    "tc_reply6_fast": "IPv6 fast path: the same (lbtui_tc_reply tail-calls lbtui_tc_reply6)",
    "katran_syn": "Katran: SYN to the VIP, new flow every call (IPIP, XDP_TX)",
    "katran_ack": "Katran: ACK on one established flow (LRU hit)",
    "katran_ack_spread": "Katran: ACK cycling over many established flows",
    "katran_non_vip": "Katran: SYN to a non-VIP address",
}
# lbtui's class -> Katran's class of the same packets, for the ratio lines
KATRAN_PAIRS = {
    "syn": "katran_syn",
    "ack": "katran_ack",
    "ack_spread": "katran_ack_spread",
    "non_vip": "katran_non_vip",
}


# ---------------------------------------------------------------- packets


def _csum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_frame(src: str, dst: str, sport: int, dport: int, flags: int, seq: int = 1000, ack: int = 0) -> bytes:
    """Ethernet / IPv4 / TCP (no options, no payload) with valid checksums, as a NIC delivers it."""
    saddr, daddr = socket.inet_aton(src), socket.inet_aton(dst)
    eth = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0x4000, 64, 6, 0, saddr, daddr))
    struct.pack_into("!H", ip, 10, _csum16(bytes(ip)))
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0))
    pseudo = saddr + daddr + struct.pack("!BBH", 0, 6, len(tcp))
    struct.pack_into("!H", tcp, 16, _csum16(pseudo + bytes(tcp)))
    return eth + bytes(ip) + bytes(tcp)


def tcp6_frame(
    src: str, dst: str, sport: int, dport: int, flags: int, seq: int = 1000, ack: int = 0
) -> bytes:
    """Ethernet / IPv6 / TCP (no options, no payload) with a valid checksum."""
    saddr, daddr = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    eth = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x86\xdd"
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0))
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, saddr, daddr)
    pseudo = saddr + daddr + struct.pack("!IxxxB", len(tcp), 6)
    struct.pack_into("!H", tcp, 16, _csum16(pseudo + bytes(tcp)))
    return eth + ip + bytes(tcp)


def frame_dst(frame: bytes) -> tuple[str, int]:
    return socket.inet_ntoa(frame[30:34]), struct.unpack_from("!H", frame, 36)[0]


def frame_src(frame: bytes) -> tuple[str, int]:
    return socket.inet_ntoa(frame[26:30]), struct.unpack_from("!H", frame, 34)[0]


class NewClients:
    """A distinct client address:port for every new flow (no conntrack hits, no port wrap)."""

    def __init__(self) -> None:
        self.n = 0

    def next(self) -> tuple[str, int]:
        self.n += 1
        return str(ipaddress.IPv4Address(FIRST_NEW_CLIENT + self.n)), 1024 + self.n % 60000


# ---------------------------------------------------------------- the measured setup


@dataclass(frozen=True)
class PacketClass:
    name: str
    prog_fd: int
    expected: int  # verdict every call must return
    next_frame: Callable[[], bytes]
    ingress_ifindex: int = 0  # XDP: the interface the frame arrives on (0: none, the loopback)
    skb_ifindex: int = 0  # TC: likewise, given in the run's __sk_buff


class FastPathNetns:
    """A namespace where the fast path's bpf_fib_lookup finds every backend and the client, both
    families: ingress veth mfin (10.0.0.1/24, fd00:6c::1/64, forwarding on), egress veth mfout
    (10.0.2.1/24, fd00:6b::1/64) with permanent neighbours."""

    NAME = "lbmfp16"

    def __init__(self) -> None:
        import subprocess

        def ip(*a: str) -> str:
            return subprocess.run(
                ["ip", "-n", self.NAME, *a], check=True, capture_output=True, text=True
            ).stdout

        subprocess.run(["ip", "netns", "del", self.NAME], capture_output=True)
        subprocess.run(["ip", "netns", "add", self.NAME], check=True)
        for name, addr, addr6 in (
            ("mfin", "10.0.0.1/24", "fd00:6c::1/64"),
            ("mfout", "10.0.2.1/24", "fd00:6b::1/64"),
        ):
            ip("link", "add", name, "type", "veth", "peer", "name", name + "p")
            ip("addr", "add", addr, "dev", name)
            ip("addr", "add", addr6, "dev", name, "nodad")
            ip("link", "set", name, "up")
            ip("link", "set", name + "p", "up")
        ip("link", "set", "mfin", "address", LB_MAC)  # the frames are addressed to it
        for n, (addr, _) in enumerate(BACKENDS.values()):
            ip(
                "neigh",
                "replace",
                addr,
                "lladdr",
                f"02:00:00:00:02:{n + 16:02x}",
                "dev",
                "mfout",
                "nud",
                "permanent",
            )
        for n, (addr, _) in enumerate(BACKENDS6.values()):
            ip(
                "neigh",
                "replace",
                addr,
                "lladdr",
                f"02:00:00:00:06:{n + 16:02x}",
                "dev",
                "mfout",
                "nud",
                "permanent",
            )
        ip("neigh", "replace", CLIENT, "lladdr", "02:00:00:00:00:01", "dev", "mfin", "nud", "permanent")
        ip("neigh", "replace", CLIENT6, "lladdr", "02:00:00:00:00:01", "dev", "mfin", "nud", "permanent")
        found = json.loads(ip("-j", "link", "show"))
        links = {link["ifname"]: link["ifindex"] for link in found}
        self.egress_mac = bytes.fromhex(
            next(x["address"] for x in found if x["ifname"] == "mfout").replace(":", "")
        )
        for forwarding in ("net.ipv4.conf.all.forwarding=1", "net.ipv6.conf.all.forwarding=1"):
            subprocess.run(["ip", "netns", "exec", self.NAME, "sysctl", "-qw", forwarding], check=True)
        self.egress_ifindex = int(links["mfout"])
        self.ingress_ifindex = int(links["mfin"])
        self.macs = {int(x["ifindex"]): str(x["address"]) for x in found if x["ifname"] in ("mfin", "mfout")}
        self._home = os.open("/proc/self/ns/net", os.O_RDONLY)

    def enter(self) -> None:
        _setns(f"/run/netns/{self.NAME}")

    def close(self) -> None:
        import subprocess

        _setns(f"/proc/self/fd/{self._home}")
        os.close(self._home)
        subprocess.run(["ip", "netns", "del", self.NAME], capture_output=True)


def _setns(path: str) -> None:
    """This thread into the network namespace at `path` (Python 3.11 has no os.setns)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


class Bench:
    """lbtui's programs with one VIP (two services: events off / on) and three backends."""

    def __init__(self, args: argparse.Namespace) -> None:
        from bcc import BPF

        self.args = args
        self.loaded = Loaded(
            DataplaneSpec(conntrack_entries=args.conntrack_entries, fast_path=args.fast_path)
        )
        self.maps = Maps(self.loaded)
        self.netns = FastPathNetns() if args.fast_path else None
        self.xdp_ctx: int | None = None  # the ingress ifindex XDP classes run with
        if self.netns is not None:
            self.maps.set_fast_path_interfaces(self.netns.macs)
        for bid, (ip, port) in BACKENDS.items():
            self.maps.set_backend(bid, ip, port, active=True)
        table_size = self.loaded.spec.table_size
        table = np.asarray(weighted_table({0: 1, 1: 1, 2: 1}, table_size))
        self.maps.write_slots(0, np.arange(table_size), table)
        for sid, port, events in ((0, PORT_QUIET, False), (1, PORT_EVENTS, True)):
            self.maps.set_service(ServiceEntry(VIP, port, "tcp", sid, 0, "weighted-random", events, events))
        for bid, (ip, port) in BACKENDS6.items():
            self.maps.set_backend(bid, ip, port, active=True)
        table6 = np.asarray(weighted_table({3: 1, 4: 1, 5: 1}, table_size))
        self.maps.write_slots(1, np.arange(table_size), table6)
        self.maps.set_service(ServiceEntry(VIP6, PORT_QUIET, "tcp", 2, 1, "weighted-random"))
        self.empty = BPF(text=EMPTY_PROGRAMS)
        self.empty_xdp_fd = self.empty.load_func("empty_xdp", BPF.XDP).fd
        self.empty_tc_fd = self.empty.load_func("empty_tc", BPF.SCHED_CLS).fd
        self.events_seen = 0
        self.loaded.table("lb_events").open_ring_buffer(self._on_event)
        self.clients = NewClients()

    def _on_event(self, _ctx: Any, _data: Any, _size: int) -> None:
        self.events_seen += 1  # no-op apart from counting: nothing decodes the events

    def drain_events(self) -> None:
        self.loaded.bpf.ring_buffer_consume()

    def events_lost(self) -> int:
        return self.maps.global_counters()["events_lost"]

    def enter_netns(self) -> None:
        """From here on this thread runs the programs inside the fast path's namespace, as if each
        IPv4/IPv6 frame arrived on its ingress veth (bpf_fib_lookup sees its routes and neighbours)."""
        if self.netns is not None:
            self.netns.enter()
            self.xdp_ctx = self.netns.ingress_ifindex

    def close(self) -> None:
        if self.netns is not None:
            self.netns.close()
        self.empty.cleanup()
        self.loaded.close()

    # ---- flows

    def open_flow(self, client: str, sport: int) -> tuple[str, int]:
        """Run the handshake of a flow (untimed): the client's SYN, the backend's SYN-ACK through TC,
        the client's ACK, so that the flow is established (lb_ct_established) as a real one is.
        Returns the backend it was DNATed to."""
        xdp, tc = self.loaded.xdp_fn.fd, self.loaded.tc_fn.fd
        r = run_program(xdp, tcp_frame(client, VIP, sport, PORT_QUIET, TCP_SYN))
        if r.retval != XDP_PASS:
            raise RuntimeError(f"SYN of {client}:{sport} got verdict {r.retval}")
        backend = frame_dst(r.data)
        synack = tcp_frame(backend[0], client, backend[1], sport, TCP_SYN | TCP_ACK, seq=5000, ack=1001)
        run_program(tc, synack)
        run_program(xdp, tcp_frame(client, VIP, sport, PORT_QUIET, TCP_ACK, seq=1001, ack=5001))
        return backend

    def new_syn(self, port: int) -> Callable[[], bytes]:
        def frame() -> bytes:
            client, sport = self.clients.next()
            return tcp_frame(client, VIP, sport, port, TCP_SYN)

        return frame

    def classes(self) -> list[PacketClass]:
        xdp, tc = self.loaded.xdp_fn.fd, self.loaded.tc_fn.fd
        backend = self.open_flow(CLIENT, 40000)
        ack = tcp_frame(CLIENT, VIP, 40000, PORT_QUIET, TCP_ACK, seq=1001)
        reply = tcp_frame(backend[0], CLIENT, backend[1], 40000, TCP_ACK, seq=5001)
        non_vip = tcp_frame(CLIENT, OTHER_ADDRESS, 40001, PORT_QUIET, TCP_SYN)
        spread = []
        for _ in range(self.args.spread_flows):
            client, sport = self.clients.next()
            self.open_flow(client, sport)
            spread.append(tcp_frame(client, VIP, sport, PORT_QUIET, TCP_ACK, seq=1001))
        cursor = [0]

        def next_spread() -> bytes:
            cursor[0] = (cursor[0] + 1) % len(spread)
            return spread[cursor[0]]

        r = run_program(xdp, tcp6_frame(CLIENT6, VIP6, 40000, PORT_QUIET, TCP_SYN))
        if r.retval != XDP_PASS or r.data[38:54] == socket.inet_pton(socket.AF_INET6, VIP6):
            raise RuntimeError("the IPv6 SYN was not DNATed")
        backend6 = socket.inet_ntop(socket.AF_INET6, r.data[38:54]), struct.unpack_from("!H", r.data, 56)[0]
        synack6 = tcp6_frame(backend6[0], CLIENT6, backend6[1], 40000, TCP_SYN | TCP_ACK, seq=5000, ack=1001)
        run_program(tc, synack6)
        run_program(xdp, tcp6_frame(CLIENT6, VIP6, 40000, PORT_QUIET, TCP_ACK, seq=1001, ack=5001))
        ack6 = tcp6_frame(CLIENT6, VIP6, 40000, PORT_QUIET, TCP_ACK, seq=1001)
        reply6 = tcp6_frame(backend6[0], CLIENT6, backend6[1], 40000, TCP_ACK, seq=5001)
        new6 = [0]

        def syn6() -> bytes:
            new6[0] += 1
            client = str(ipaddress.IPv6Address(FIRST_NEW_CLIENT6 + new6[0]))
            return tcp6_frame(client, VIP6, 1024 + new6[0] % 60000, PORT_QUIET, TCP_SYN)

        self.enter_netns()  # the flows above were opened outside it: their SYNs went the PASS way
        ctx = self.xdp_ctx or 0
        dnat = XDP_REDIRECT if ctx else XDP_PASS  # the fast path redirects DNATed packets
        return [
            PacketClass("empty_xdp", self.empty_xdp_fd, XDP_PASS, lambda: non_vip, ctx),
            PacketClass("empty_tc", self.empty_tc_fd, TC_ACT_OK, lambda: reply),
            PacketClass("syn", xdp, dnat, self.new_syn(PORT_QUIET), ctx),
            PacketClass("syn_events", xdp, dnat, self.new_syn(PORT_EVENTS), ctx),
            PacketClass("ack", xdp, dnat, lambda: ack, ctx),
            PacketClass("ack_spread", xdp, dnat, next_spread, ctx),
            PacketClass("non_vip", xdp, XDP_PASS, lambda: non_vip, ctx),
            PacketClass("tc_reply", tc, TC_ACT_OK, lambda: reply),
            *self.reply_classes(reply),
            PacketClass("syn6", xdp, dnat, syn6, ctx),
            PacketClass("ack6", xdp, dnat, lambda: ack6, ctx),
            PacketClass("tc_reply6", tc, TC_ACT_OK, lambda: reply6),
            *self.reply_classes(reply6, "tc_reply6_fast"),
        ]

    def reply_classes(self, reply: bytes, name: str = "tc_reply_fast") -> list[PacketClass]:
        """With --fast-path: the backend's ACK reply through lbtui_tc_reply as if it arrived on the
        backend-facing veth, addressed to it (SNAT at TC ingress, redirect to the client's)."""
        if self.netns is None:
            return []
        to_host = self.netns.egress_mac + reply[6:]
        fd = self.loaded.tc_reply_fn.fd
        out = self.netns.egress_ifindex
        return [PacketClass(name, fd, TC_ACT_REDIRECT, lambda: to_host, skb_ifindex=out)]

    def check_rewrites(self) -> dict[str, str]:
        """One untimed run per rewriting class: the output really is DNATed / SNATed."""
        client, sport = self.clients.next()
        dnat = run_program(self.loaded.xdp_fn.fd, tcp_frame(client, VIP, sport, PORT_QUIET, TCP_SYN))
        bip, bport = frame_dst(dnat.data)
        if (bip, bport) not in BACKENDS.values():
            raise RuntimeError(f"SYN was not DNATed to a backend: {bip}:{bport}")
        reply = tcp_frame(bip, client, bport, sport, TCP_ACK)
        snat = run_program(self.loaded.tc_fn.fd, reply)
        if frame_src(snat.data) != (VIP, PORT_QUIET):
            raise RuntimeError(f"reply was not SNATed: {frame_src(snat.data)}")
        return {
            "syn": f"{client}:{sport} -> {VIP}:{PORT_QUIET} became -> {bip}:{bport}",
            "tc_reply": f"{bip}:{bport} -> {client}:{sport} became {VIP}:{PORT_QUIET} -> {client}:{sport}",
        }


# ---------------------------------------------------------------- Katran beside lbtui


def open_katran(args: argparse.Namespace) -> Any:
    """Katran's balancer built from args.katran, filled for lbtui's VIP:80 and backend addresses."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import katran_bench

    reals = [ip for ip, _ in BACKENDS.values()]
    return katran_bench.Katran(
        args.katran, VIP, PORT_QUIET, reals, args.cpu, args.katran_lru, args.conntrack_entries
    )


def katran_classes(bench: Bench, katran: Any, spread_flows: int) -> list[PacketClass]:
    """Katran's classes on the frames lbtui's classes use (flows opened with an untimed SYN)."""

    def open_flow(client: str, sport: int) -> bytes:
        r = run_program(katran.prog_fd, tcp_frame(client, VIP, sport, PORT_QUIET, TCP_SYN))
        if r.retval != XDP_TX:
            raise RuntimeError(f"Katran: SYN of {client}:{sport} got verdict {r.retval}")
        return tcp_frame(client, VIP, sport, PORT_QUIET, TCP_ACK, seq=1001)

    ack = open_flow(CLIENT, 40000)
    spread = [open_flow(*bench.clients.next()) for _ in range(spread_flows)]
    cursor = [0]

    def next_spread() -> bytes:
        cursor[0] = (cursor[0] + 1) % len(spread)
        return spread[cursor[0]]

    non_vip = tcp_frame(CLIENT, OTHER_ADDRESS, 40001, PORT_QUIET, TCP_SYN)
    fd = katran.prog_fd
    return [
        PacketClass("katran_syn", fd, XDP_TX, bench.new_syn(PORT_QUIET)),
        PacketClass("katran_ack", fd, XDP_TX, lambda: ack),
        PacketClass("katran_ack_spread", fd, XDP_TX, next_spread),
        PacketClass("katran_non_vip", fd, XDP_PASS, lambda: non_vip),
    ]


def katran_check(bench: Bench, katran: Any) -> str:
    """One untimed SYN through Katran: encapsulated for a real, inner packet unchanged."""
    import katran_bench

    client, sport = bench.clients.next()
    frame = tcp_frame(client, VIP, sport, PORT_QUIET, TCP_SYN)
    r = run_program(katran.prog_fd, frame)
    if r.retval != XDP_TX:
        raise RuntimeError(f"Katran: SYN got verdict {r.retval}, expected XDP_TX")
    return str(katran_bench.check_encap(frame, r.data, katran.reals))


# ---------------------------------------------------------------- measuring


def time_batches(
    classes: list[PacketClass], calls: int, batch: int, between: Callable[[], None]
) -> dict[str, list[int]]:
    """`calls` one-packet runs per class, in batches of `batch`, class order rotated per batch."""
    samples: dict[str, list[int]] = {c.name: [] for c in classes}
    done = 0
    rotation = 0
    while done < calls:
        n = min(batch, calls - done)
        order = classes[rotation:] + classes[:rotation]
        rotation = (rotation + 1) % len(classes)
        for cls in order:
            out = samples[cls.name]
            for _ in range(n):
                skb = skb_context(cls.skb_ifindex) if cls.skb_ifindex else None
                r = run_program(cls.prog_fd, cls.next_frame(), ctx=skb, ingress_ifindex=cls.ingress_ifindex)
                if r.retval != cls.expected:
                    raise RuntimeError(f"{cls.name}: verdict {r.retval}, expected {cls.expected}")
                out.append(r.duration_ns)
            between()
        done += n
    return samples


def percentile(sorted_xs: list[int], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_xs:
        return float("nan")
    k = max(0, min(len(sorted_xs) - 1, int(round(q / 100 * len(sorted_xs) + 0.5)) - 1))
    return float(sorted_xs[k])


def summarize(samples: dict[str, list[int]], baseline_of: dict[str, str]) -> dict[str, dict[str, Any]]:
    stats: dict[str, dict[str, Any]] = {}
    for name, xs in samples.items():
        s = sorted(xs)
        stats[name] = {
            "calls": len(s),
            "median_ns": percentile(s, 50),
            "p90_ns": percentile(s, 90),
            "p99_ns": percentile(s, 99),
            "min_ns": float(s[0]),
            "mean_ns": round(sum(s) / len(s), 1),
        }
    for name, st in stats.items():
        base = baseline_of.get(name)
        if base and base in stats:
            st["baseline"] = base
            st["net_median_ns"] = st["median_ns"] - stats[base]["median_ns"]
            st["net_p90_ns"] = st["p90_ns"] - stats[base]["p90_ns"]
    return stats


def warm_reference(bench: Bench, repeat: int) -> dict[str, float]:
    """ns/run with repeat > 1 for packets no program rewrites (there repeat is valid): the warm-cache
    floor, to compare with the one-call-per-packet numbers."""
    non_vip = tcp_frame(CLIENT, OTHER_ADDRESS, 40001, PORT_QUIET, TCP_SYN)
    out = {}
    for name, fd in (("empty_xdp", bench.empty_xdp_fd), ("non_vip", bench.loaded.xdp_fn.fd)):
        runs = sorted(run_program(fd, non_vip, repeat=repeat).duration_ns for _ in range(5))
        out[name] = float(runs[2])
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.sched_setaffinity(0, {args.cpu})  # per-CPU state and caches: one CPU for every call
    started = time.monotonic()
    load_at_start = os.getloadavg()
    bench = Bench(args)
    katran = open_katran(args) if args.katran else None
    katran_info: dict[str, Any] = {}
    try:
        rewrites = bench.check_rewrites()
        classes = bench.classes()
        if katran is not None:
            rewrites["katran"] = katran_check(bench, katran)
            classes += katran_classes(bench, katran, args.spread_flows)
            katran_before = katran.counters()
        baseline_of = {c.name: "empty_tc" if c.name.startswith("tc_") else "empty_xdp" for c in classes}
        baseline_of.update(empty_xdp="", empty_tc="")

        # phase 1: every class, ring buffer drained after every batch
        lost0 = bench.events_lost()
        samples = time_batches(classes, args.calls, args.batch, bench.drain_events)
        bench.drain_events()
        lost_phase1 = bench.events_lost() - lost0
        if katran is not None:
            after = katran.counters()
            katran_info = {
                "checkout": os.path.abspath(args.katran),
                "lru": args.katran_lru,
                "counters_while_timing": {k: after[k] - katran_before[k] for k in after},
            }
        events_phase1 = bench.events_seen

        # phase 2: fill the ring buffer (untimed), then time SYNs with events that cannot be written
        full_info: dict[str, Any] = {}
        if args.full_calls:
            fill = bench.new_syn(PORT_EVENTS)  # (run without ctx: the PASS way, untimed)
            lost_before = bench.events_lost()
            filled = 0
            while bench.events_lost() == lost_before:
                for _ in range(256):
                    run_program(bench.loaded.xdp_fn.fd, fill())
                filled += 256
                if filled > 1_000_000:
                    raise RuntimeError("the ring buffer never filled")
            full = [
                PacketClass(
                    "empty_xdp", bench.empty_xdp_fd, XDP_PASS, classes[0].next_frame, bench.xdp_ctx or 0
                ),
                PacketClass(
                    "syn_events_full",
                    bench.loaded.xdp_fn.fd,
                    XDP_REDIRECT if bench.xdp_ctx is not None else XDP_PASS,
                    bench.new_syn(PORT_EVENTS),
                    bench.xdp_ctx or 0,
                ),
            ]
            lost1 = bench.events_lost()
            full_samples = time_batches(full, args.full_calls, args.batch, lambda: None)
            full_info = {
                "fill_calls": filled,
                "events_lost_during_timing": bench.events_lost() - lost1,
                "stats": summarize(full_samples, {"syn_events_full": "empty_xdp"}),
            }
            bench.drain_events()

        warm = warm_reference(bench, args.warm_repeat) if args.warm_repeat > 1 else {}
        conntrack_entries = bench.maps.conntrack_count()
    finally:
        if katran is not None:
            katran.close()
        bench.close()

    stats = summarize(samples, baseline_of)
    syn, syn_ev = stats["syn"], stats["syn_events"]
    return {
        "info": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "kernel": platform.release(),
            "cpu_model": _cpu_model(),
            "cpus": os.cpu_count(),
            "pinned_cpu": args.cpu,
            "load_average_start": load_at_start,
            "load_average_end": os.getloadavg(),
            "args": vars(args),
            "elapsed_s": round(time.monotonic() - started, 1),
            "conntrack_entries_at_end": conntrack_entries,
        },
        "rewrite_check": rewrites,
        "classes": stats,
        "events": {
            "cost_median_ns": syn_ev["median_ns"] - syn["median_ns"],
            "cost_p90_ns": syn_ev["p90_ns"] - syn["p90_ns"],
            "events_consumed": events_phase1,
            "events_lost_phase1": lost_phase1,
            "ring_full": full_info,
        },
        "warm_repeat_reference": {"repeat": args.warm_repeat, "ns_per_run": warm},
        "katran": katran_info,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ---------------------------------------------------------------- report


def markdown(report: dict[str, Any]) -> str:
    info, stats, ev = report["info"], report["classes"], report["events"]
    a = info["args"]
    lines = [
        f"{info['date']}, kernel {info['kernel']}, {info['cpu_model']}, pinned to CPU {info['pinned_cpu']}; "
        f"{a['calls']:,} calls per class (repeat=1), batches of {a['batch']}; 1-min load average "
        f"{info['load_average_start'][0]:.2f} at the start, {info['load_average_end'][0]:.2f} at the end. "
        "net = minus the empty program of the same hook.",
        "",
        "| class | what | median ns | p90 ns | net median | net p90 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    rows = dict(stats)
    full = ev.get("ring_full") or {}
    if full:
        rows["syn_events_full"] = full["stats"]["syn_events_full"]
    for name, st in rows.items():
        net_med = f"{st['net_median_ns']:.0f}" if "net_median_ns" in st else "—"
        net_p90 = f"{st['net_p90_ns']:.0f}" if "net_p90_ns" in st else "—"
        lines.append(
            f"| `{name}` | {CLASS_NOTES[name]} | {st['median_ns']:.0f} | {st['p90_ns']:.0f} |"
            f" {net_med} | {net_p90} |"
        )
    lines += [
        "",
        f"- events on vs off (`syn_events` - `syn`): {ev['cost_median_ns']:+.0f} ns median, "
        f"{ev['cost_p90_ns']:+.0f} ns p90; {ev['events_consumed']:,} events consumed, "
        f"{ev['events_lost_phase1']} lost while draining between batches",
    ]
    if full:
        fs = full["stats"]
        lines.append(
            f"- ring buffer full: `syn_events_full` {fs['syn_events_full']['median_ns']:.0f} ns median "
            f"next to `empty_xdp` {fs['empty_xdp']['median_ns']:.0f} in that phase "
            f"({full['events_lost_during_timing']:,} events lost while timing, buffer filled after "
            f"{full['fill_calls']:,} SYNs)"
        )
    warm = report["warm_repeat_reference"]
    if warm["ns_per_run"]:
        vals = ", ".join(f"`{k}` {v:.0f} ns" for k, v in warm["ns_per_run"].items())
        lines.append(f"- warm loop (repeat={warm['repeat']:,}, packets nothing rewrites): {vals}")
    lines.append(f"- rewrite check: {report['rewrite_check']['syn']}; {report['rewrite_check']['tc_reply']}")
    if report.get("katran"):
        lines += katran_lines(report)
    return "\n".join(lines) + "\n"


def katran_lines(report: dict[str, Any]) -> list[str]:
    stats, kat = report["classes"], report["katran"]
    out = []
    for ours, theirs in KATRAN_PAIRS.items():
        a, b = stats[ours].get("net_median_ns"), stats[theirs].get("net_median_ns")
        if a is not None and b:
            out.append(f"`{ours}` {a:.0f} / `{theirs}` {b:.0f} = {a / b:.2f}")
    c = kat["counters_while_timing"]
    return [
        "- lbtui / Katran, net medians: " + "; ".join(out),
        f"- Katran ({kat['lru']} LRU) while timing: {c['vip_packets']:,} VIP packets, "
        f"{c['syn_lru_misses']:,} SYN LRU misses, {c['nonsyn_lru_misses']:,} non-SYN LRU misses, "
        f"{c['fallback_lru_packets']:,} packets on the fallback LRU; {report['rewrite_check']['katran']}",
    ]


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20000, help="one-packet calls per class")
    ap.add_argument("--batch", type=int, default=500, help="calls of one class before the next class")
    ap.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)), help="CPU to pin to")
    ap.add_argument("--spread-flows", type=int, default=10000, help="established flows for ack_spread")
    ap.add_argument(
        "--full-calls", type=int, default=5000, help="SYNs timed with a full ring buffer (0 = skip)"
    )
    ap.add_argument(
        "--warm-repeat", type=int, default=100000, help="repeat for the warm reference (1 = skip)"
    )
    ap.add_argument("--conntrack-entries", type=int, default=DataplaneSpec().conntrack_entries)
    ap.add_argument("--json", action="store_true", help="print the full report as JSON instead")
    ap.add_argument(
        "--fast-path",
        action="store_true",
        help="settings.fast_path = auto: XDP classes run in a namespace of their own (routes, neighbours) "
        "with an ingress ifindex, and DNATed IPv4 packets are redirected (bpf_fib_lookup, MACs, TTL)",
    )
    ap.add_argument("--katran", metavar="PATH", help="a Katran checkout: time its XDP balancer too")
    ap.add_argument(
        "--katran-lru",
        choices=("percpu", "fallback"),
        default="percpu",
        help="Katran's connection table: a per-CPU LRU as in production (sized like lbtui's conntrack) "
        "or its 1,000-entry fallback LRU as its unit tester runs it",
    )
    args = ap.parse_args(argv)
    if not (1 <= args.calls <= 200_000 and 1 <= args.batch <= 10_000 and 1 <= args.spread_flows <= 100_000):
        ap.error("keep it bounded: calls 1..200000, batch 1..10000, spread-flows 1..100000")
    if not (0 <= args.full_calls <= 100_000 and 1 <= args.warm_repeat <= 10_000_000):
        ap.error("keep it bounded: full-calls 0..100000, warm-repeat 1..10000000")
    # every new flow takes 2 entries; LRU evictions would change what `syn` measures
    ring_fill_bound = 20_000  # > events a 1 MiB ring holds
    # (Katran's classes draw new clients from the same counter but do not use lbtui's conntrack)
    flows = 2 * args.calls + args.spread_flows + args.full_calls + ring_fill_bound + 10
    if 2 * flows > args.conntrack_entries:
        ap.error(f"{flows} flows need {2 * flows} conntrack entries: raise --conntrack-entries")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (loads BPF programs)", file=sys.stderr)
        return 2
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
