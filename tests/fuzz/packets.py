# SPDX-License-Identifier: Apache-2.0
"""Packet fuzzing of the BPF data path: a seeded frame generator and an exact oracle.

One implementation for bench/fuzz_packets.py (a million frames) and tests/bpf/test_fuzz_packets.py (a
sample). The generator builds frames byte by byte (scapy builds ~1 ms per packet, too slow for a
million; it only supplies a pool of templates for the exotic families). The oracle predicts, from
the input frame and a mirror of the conntrack map, what lb.c must do (docs/datapath.md#what-the-programs-do):

- XDP: anything that is not a well-formed IPv4 TCP/UDP non-fragment to a configured VIP:port passes
  untouched; a new flow (TCP SYN without ACK, any UDP, any TCP for maglev) and every packet of a
  tracked flow is DNATed; a TCP non-SYN without an entry passes untouched. A DNATed frame differs
  from the input only in daddr, the IP checksum, dport and the L4 checksum; daddr:dport is the
  flow's backend (or, for a new weighted-random flow, one of its group's backends).
- TC egress: a reply that matches a reverse entry is SNATed back to VIP:port (saddr, IP checksum,
  sport, L4 checksum), anything else passes untouched.

Checksums are verified by this module's own one's complement code, not by the program's: a rewrite
must keep every checksum's residual (so a frame whose checksums verified still verifies, and a
broken one stays exactly as broken), and a zero UDP checksum stays zero. The conntrack mirror is
compared entry by entry (flags and counters included) with the real map, and the global counters
with the mirror's, every `sync_every` frames. Behaviour that mirrors lb.c but contradicts docs/datapath.md
is counted as a finding (FINDINGS), not a failure.
"""

from __future__ import annotations

import array
import errno
import ipaddress
import logging
import random
import socket
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lbtui.control.selection import jhash_3words, maglev_table, weighted_table

log = logging.getLogger(__name__)

# ---- the fuzz topology ----------------------------------------------------------------------------

VIP = "10.0.0.1"
TABLE_SIZE = 13
CONNTRACK_ENTRIES = 65536
TCP, UDP, ICMP = 6, 17, 1
XDP_DROP, XDP_PASS = 1, 2
TC_ACT_OK = 0

# backend id -> (address, port)
BACKENDS: dict[int, tuple[str, int]] = {
    0: ("10.0.2.11", 8080),
    1: ("10.0.2.12", 8080),
    2: ("10.0.2.13", 8081),
    3: ("10.0.3.10", 8080),
}


@dataclass(frozen=True)
class FuzzService:
    port: int
    proto: int
    service_id: int
    group: int
    algorithm: str


SERVICES = (
    FuzzService(80, TCP, 0, 0, "weighted-random"),
    FuzzService(53, UDP, 1, 0, "weighted-random"),
    FuzzService(81, TCP, 2, 2, "maglev"),
    FuzzService(5353, UDP, 3, 3, "source-hash"),
)
ROUTE_SERVICE, ROUTE_CIDR, ROUTE_GROUP = 0, "192.168.0.0/16", 1  # clients of 192.168/16 on tcp/80


def _group_tables() -> dict[int, list[int]]:
    def names(ids: Sequence[int]) -> dict[int, tuple[str, int]]:
        return {bid: (f"{BACKENDS[bid][0]}:{BACKENDS[bid][1]}", 1) for bid in ids}

    return {
        0: weighted_table({0: 3, 1: 2, 2: 1}, TABLE_SIZE),
        1: weighted_table({3: 1}, TABLE_SIZE),
        2: maglev_table(names([0, 1, 2]), TABLE_SIZE),
        3: weighted_table({0: 1, 2: 1}, TABLE_SIZE),
    }


GROUP_TABLES = _group_tables()

# ---- wire helpers -------------------------------------------------------------------------------

_LITTLE = sys.byteorder == "little"
CT_F_SYNACK, CT_F_FIN_IN, CT_F_FIN_OUT, CT_F_RST, CT_F_CLOSED, CT_F_FAILED = 1, 2, 4, 8, 0x10, 0x20
DIR_FORWARD, DIR_REVERSE = 0, 1


def addr(text: str) -> bytes:
    return socket.inet_aton(text)


VIP_B = addr(VIP)
BACKEND_BY_ENDPOINT = {(addr(ip), port): bid for bid, (ip, port) in BACKENDS.items()}
SERVICE_BY_KEY = {(VIP_B, s.port, s.proto): s for s in SERVICES}


def ones_sum(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """16-bit one's complement sum of big-endian words (odd length: zero padded), folded."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    words = array.array("H", bytes(data))
    if _LITTLE:
        words.byteswap()
    total = sum(words) + start
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def internet_checksum(data: bytes | bytearray, start: int = 0) -> int:
    return ~ones_sum(data, start) & 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    return ones_sum(src + dst + bytes((0, proto)) + (length & 0xFFFF).to_bytes(2, "big"))


def hexdump(data: bytes) -> str:
    """Offsets and 16 bytes per line, for failure reports."""
    return "\n".join(f"{i:04x}  {data[i : i + 16].hex(' ')}" for i in range(0, len(data), 16))


def _u16(data: bytes | bytearray, off: int) -> int:
    return (data[off] << 8) | data[off + 1]


def _put16(data: bytearray, off: int, value: int) -> None:
    data[off] = (value >> 8) & 0xFF
    data[off + 1] = value & 0xFF


# ---- frame building -----------------------------------------------------------------------------

ETH_DST = bytes.fromhex("020000000002")
ETH_SRC = bytes.fromhex("020000000001")
ETH_IP = 0x0800
TPID_8021Q, TPID_8021AD = 0x8100, 0x88A8


@dataclass
class Built:
    """A frame under construction: bytes plus where its layers start."""

    data: bytearray
    l3: int
    l4: int
    proto: int


def ethernet(ethertype: int, vlans: Sequence[tuple[int, int]] = ()) -> bytes:
    """Ethernet header with VLAN tags given as (TPID, TCI) pairs, outermost first."""
    out = bytearray(ETH_DST + ETH_SRC)
    for tpid, tci in vlans:
        out += tpid.to_bytes(2, "big") + tci.to_bytes(2, "big")
    return bytes(out + ethertype.to_bytes(2, "big"))


def ipv4_header(
    src: bytes,
    dst: bytes,
    proto: int,
    payload_len: int,
    *,
    options: bytes = b"",
    ident: int = 0,
    frag: int = 0,
    ttl: int = 64,
    tos: int = 0,
) -> bytearray:
    assert len(options) % 4 == 0 and len(options) <= 40
    ihl = 5 + len(options) // 4
    hdr = bytearray(20 + len(options))
    hdr[0] = 0x40 | ihl
    hdr[1] = tos
    _put16(hdr, 2, len(hdr) + payload_len)
    _put16(hdr, 4, ident)
    _put16(hdr, 6, frag)
    hdr[8] = ttl
    hdr[9] = proto
    hdr[12:16] = src
    hdr[16:20] = dst
    hdr[20:] = options
    _put16(hdr, 10, internet_checksum(hdr))
    return hdr


def tcp_segment(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    flags: int,
    payload: bytes,
    *,
    seq: int = 0,
    ack: int = 0,
    window: int = 65535,
    options: bytes = b"",
) -> bytearray:
    assert len(options) % 4 == 0 and len(options) <= 40
    seg = bytearray(20 + len(options))
    _put16(seg, 0, sport)
    _put16(seg, 2, dport)
    seg[4:8] = seq.to_bytes(4, "big")
    seg[8:12] = ack.to_bytes(4, "big")
    seg[12] = (5 + len(options) // 4) << 4
    seg[13] = flags
    _put16(seg, 14, window)
    seg[20:] = options
    seg += payload
    _put16(seg, 16, internet_checksum(seg, pseudo_header_sum(src, dst, TCP, len(seg))))
    return seg


def udp_datagram(
    src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, *, zero_checksum: bool = False
) -> bytearray:
    dgram = bytearray(8) + payload
    _put16(dgram, 0, sport)
    _put16(dgram, 2, dport)
    _put16(dgram, 4, len(dgram))
    if not zero_checksum:
        check = internet_checksum(dgram, pseudo_header_sum(src, dst, UDP, len(dgram)))
        _put16(dgram, 6, check or 0xFFFF)  # RFC 768: a computed 0 is sent as all ones
    return dgram


def assemble(eth: bytes, ip: bytearray, l4: bytes | bytearray, proto: int) -> Built:
    return Built(bytearray(eth) + ip + l4, len(eth), len(eth) + len(ip), proto)


def fix_checksums(frame: bytearray, l3: int) -> None:
    """Recompute the IP and L4 checksums where the header fields say where they are and they fit."""
    n = len(frame)
    if n < l3 + 20:
        return
    ihl_len = (frame[l3] & 15) * 4
    if ihl_len >= 20 and l3 + ihl_len <= n:
        _put16(frame, l3 + 10, 0)
        _put16(frame, l3 + 10, internet_checksum(frame[l3 : l3 + ihl_len]))
    proto = frame[l3 + 9]
    ip_len = _u16(frame, l3 + 2)
    l4 = l3 + ihl_len
    src, dst = bytes(frame[l3 + 12 : l3 + 16]), bytes(frame[l3 + 16 : l3 + 20])
    if ihl_len < 20:
        return
    if proto == TCP and l4 + 20 <= n and ihl_len <= ip_len and l3 + ip_len <= n:
        seg = frame[l4 : l3 + ip_len]
        if len(seg) >= 18:
            _put16(frame, l4 + 16, 0)
            seg = frame[l4 : l3 + ip_len]
            _put16(frame, l4 + 16, internet_checksum(seg, pseudo_header_sum(src, dst, TCP, len(seg))))
    elif proto == UDP and l4 + 8 <= n:
        ulen = _u16(frame, l4 + 4)
        if 8 <= ulen and l4 + ulen <= n and _u16(frame, l4 + 6) != 0:
            _put16(frame, l4 + 6, 0)
            check = internet_checksum(frame[l4 : l4 + ulen], pseudo_header_sum(src, dst, UDP, ulen))
            _put16(frame, l4 + 6, check or 0xFFFF)


# ---- generator ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    family: str
    hook: str  # "xdp" | "tc"
    data: bytes


@dataclass(frozen=True)
class Flow:
    """A tracked flow as the generator needs it: who talks to which VIP port through which backend."""

    client_ip: bytes
    client_port: int
    vip_port: int
    proto: int
    backend_ip: bytes
    backend_port: int


XDP_FAMILIES: dict[str, int] = {
    "tcp_syn": 8,
    "tcp_flags": 6,
    "tcp_followup": 10,
    "udp_vip": 8,
    "udp_followup": 4,
    "cross_service": 1,
    "non_vip_addr": 3,
    "non_vip_port": 3,
    "vlan": 5,
    "qinq": 1,
    "ip_options": 5,
    "tcp_options": 2,
    "fragment": 4,
    "df_reserved": 2,
    "icmp": 1,
    "icmp_error": 2,
    "arp": 1,
    "ipv6": 1,
    "other_ethertype": 1,
    "other_ipproto": 2,
    "truncated": 8,
    "byte_flip": 8,
    "bad_ihl": 3,
    "bad_version": 1,
    "bad_tot_len": 4,
    "padded": 2,
    "tcp_bad_doff": 3,
    "udp_bad_len": 3,
    "random_bytes": 2,
    "scapy": 2,
}
TC_FAMILIES: dict[str, int] = {
    "tc_reply": 8,
    "tc_reply_mutated": 6,
    "tc_unknown": 2,
    "tc_client_frame": 2,
}
FAMILIES = {**XDP_FAMILIES, **TC_FAMILIES}
TCP_FOLLOWUP_FLAGS = (0x10, 0x18, 0x11, 0x04, 0x14, 0x02, 0x19, 0x12, 0x01)
TCP_REPLY_FLAGS = (0x12, 0x10, 0x18, 0x11, 0x04, 0x14, 0x19, 0x01, 0x02)


class FrameGenerator:
    """Seeded frames from the families above. `next(flows)` uses flows the data path is tracking."""

    def __init__(self, seed: int, *, scapy_pool: int = 48) -> None:
        self.rng = random.Random(seed)
        self._xdp_names = list(XDP_FAMILIES)
        self._xdp_weights = list(XDP_FAMILIES.values())
        self._tc_names = list(TC_FAMILIES)
        self._tc_weights = list(TC_FAMILIES.values())
        self._tc_share = sum(self._tc_weights) / (sum(self._tc_weights) + sum(self._xdp_weights))
        self._pool = build_scapy_pool(self.rng.randrange(2**32), scapy_pool) if scapy_pool else []

    # -- random values -------------------------------------------------------------------------

    def client_ip(self) -> bytes:
        r = self.rng.random()
        if r < 0.4:
            return bytes((172, 16 + self.rng.randrange(16), self.rng.randrange(256), self.rng.randrange(256)))
        if r < 0.6:
            return bytes((192, 168, self.rng.randrange(256), self.rng.randrange(256)))
        if r < 0.8:
            return bytes((10, 1, self.rng.randrange(256), self.rng.randrange(256)))
        return self.rng.randbytes(4)

    def port(self) -> int:
        r = self.rng.random()
        if r < 0.05:
            return self.rng.choice((0, 1, 53, 80, 81, 5353, 65535))
        return self.rng.randrange(1024, 65536)

    def payload(self) -> bytes:
        r = self.rng.random()
        if r < 0.3:
            return b""
        if r < 0.95:
            return self.rng.randbytes(self.rng.randrange(1, 80))
        return self.rng.randbytes(self.rng.randrange(80, 1400))

    def ip_options(self) -> bytes:
        words = self.rng.randrange(1, 11)
        kind = self.rng.random()
        if kind < 0.3:
            return b"\x01" * (words * 4)  # NOPs
        if kind < 0.5:
            return b"\x94\x04\x00\x00" + b"\x00" * (words * 4 - 4)  # router alert, then EOL
        return self.rng.randbytes(words * 4)

    def vlans(self) -> list[tuple[int, int]]:
        return [(self.rng.choice((TPID_8021Q, TPID_8021AD)), self.rng.randrange(65536))]

    # -- valid frames --------------------------------------------------------------------------

    def l4_frame(
        self,
        src: bytes,
        dst: bytes,
        proto: int,
        sport: int,
        dport: int,
        *,
        flags: int = 0x02,
        payload: bytes | None = None,
        ip_options: bytes = b"",
        tcp_options: bytes = b"",
        vlans: Sequence[tuple[int, int]] = (),
        udp_zero: bool | None = None,
        frag: int | None = None,
    ) -> Built:
        rng = self.rng
        body = self.payload() if payload is None else payload
        if proto == TCP:
            l4: bytes | bytearray = tcp_segment(
                src,
                dst,
                sport,
                dport,
                flags,
                body,
                seq=rng.randrange(2**32),
                ack=rng.randrange(2**32) if flags & 0x10 else 0,
                options=tcp_options,
            )
        elif proto == UDP:
            zero = rng.random() < 0.25 if udp_zero is None else udp_zero
            l4 = udp_datagram(src, dst, sport, dport, body, zero_checksum=zero)
        else:
            l4 = body
        if frag is None:
            frag = 0x4000 if rng.random() < 0.5 else 0  # DF is common on the wire
        ip = ipv4_header(src, dst, proto, len(l4), options=ip_options, ident=rng.randrange(65536), frag=frag)
        return assemble(ethernet(ETH_IP, vlans), ip, l4, proto)

    def to_vip(self, proto: int | None = None, **kw: Any) -> Built:
        """A well-formed frame to a configured VIP:port of the given (or a random) protocol."""
        services = [s for s in SERVICES if proto is None or s.proto == proto]
        svc = self.rng.choice(services)
        if svc.proto == TCP and "flags" not in kw:
            kw["flags"] = 0x02
        return self.l4_frame(self.client_ip(), VIP_B, svc.proto, self.port(), svc.port, **kw)

    def followup(self, flow: Flow, **kw: Any) -> Built:
        if flow.proto == TCP and "flags" not in kw:
            kw["flags"] = self.rng.choice(TCP_FOLLOWUP_FLAGS)
        return self.l4_frame(flow.client_ip, VIP_B, flow.proto, flow.client_port, flow.vip_port, **kw)

    def reply(self, flow: Flow, **kw: Any) -> Built:
        if flow.proto == TCP and "flags" not in kw:
            kw["flags"] = self.rng.choice(TCP_REPLY_FLAGS)
        return self.l4_frame(
            flow.backend_ip, flow.client_ip, flow.proto, flow.backend_port, flow.client_port, **kw
        )

    def any_valid(self, flows: Sequence[Flow]) -> Built:
        r = self.rng.random()
        kw: dict[str, Any] = {}
        if self.rng.random() < 0.2:
            kw["vlans"] = self.vlans()
        if self.rng.random() < 0.2:
            kw["ip_options"] = self.ip_options()
        if r < 0.3 and flows:
            return self.followup(self.rng.choice(flows), **kw)
        if r < 0.5:
            return self.to_vip(TCP, flags=self.rng.randrange(256), **kw)
        return self.to_vip(**kw)

    # -- families ------------------------------------------------------------------------------

    def next(self, flows: Sequence[Flow]) -> Frame:
        if self.rng.random() < self._tc_share:
            family = self.rng.choices(self._tc_names, self._tc_weights)[0]
            return Frame(family, "tc", bytes(self._tc_family(family, flows)))
        family = self.rng.choices(self._xdp_names, self._xdp_weights)[0]
        return Frame(family, "xdp", bytes(self._xdp_family(family, flows)))

    def _xdp_family(self, family: str, flows: Sequence[Flow]) -> bytearray:
        rng = self.rng
        tcp_flows = [f for f in flows[-64:] if f.proto == TCP]
        udp_flows = [f for f in flows[-64:] if f.proto == UDP]
        if family == "tcp_syn":
            return self.to_vip(TCP, flags=rng.choice((0x02, 0x02, 0x02, 0x03, 0x06, 0x0A, 0xC2))).data
        if family == "tcp_flags":
            return self.to_vip(TCP, flags=rng.randrange(256)).data
        if family == "tcp_followup":
            if not tcp_flows:
                return self.to_vip(TCP).data
            return self.followup(rng.choice(tcp_flows)).data
        if family == "udp_vip":
            return self.to_vip(UDP).data
        if family == "udp_followup":
            if not udp_flows:
                return self.to_vip(UDP).data
            return self.followup(rng.choice(udp_flows)).data
        if family == "cross_service":
            # the same client address:port on another TCP service: reverse entries may collide
            if not tcp_flows:
                return self.to_vip(TCP).data
            flow = rng.choice(tcp_flows)
            other = 81 if flow.vip_port == 80 else 80
            return self.l4_frame(flow.client_ip, VIP_B, TCP, flow.client_port, other, flags=0x02).data
        if family == "non_vip_addr":
            dst = rng.choice((addr("10.0.0.2"), addr("10.0.0.99"), rng.randbytes(4), addr(BACKENDS[0][0])))
            proto = rng.choice((TCP, UDP))
            dport = rng.choice((80, 53, 81, 5353, self.port()))
            return self.l4_frame(self.client_ip(), dst, proto, self.port(), dport).data
        if family == "non_vip_port":
            proto = rng.choice((TCP, UDP))
            dport = (
                rng.choice((53, 5353, 8080, 443, self.port())) if proto == TCP else rng.choice((80, 81, 123))
            )
            if (VIP_B, dport, proto) in SERVICE_BY_KEY:
                dport = 443
            return self.l4_frame(self.client_ip(), VIP_B, proto, self.port(), dport).data
        if family == "vlan":
            return self.any_valid_with(flows, vlans=self.vlans())
        if family == "qinq":
            return self.any_valid_with(flows, vlans=self.vlans() + self.vlans())
        if family == "ip_options":
            return self.any_valid_with(flows, ip_options=self.ip_options())
        if family == "tcp_options":
            words = rng.randrange(1, 11)
            return self.to_vip(TCP, tcp_options=rng.randbytes(words * 4)).data
        if family == "fragment":
            offset = rng.choice((0, rng.randrange(1, 8192)))
            mf = 0x2000 if offset == 0 or rng.random() < 0.5 else 0
            return self.to_vip(frag=offset | mf | rng.choice((0, 0x4000))).data
        if family == "df_reserved":
            return self.to_vip(frag=rng.choice((0x4000, 0x8000, 0xC000))).data
        if family == "icmp":
            body = bytes((8, 0, 0, 0)) + rng.randbytes(rng.randrange(4, 60))
            return self.l4_frame(self.client_ip(), VIP_B, ICMP, 0, 0, payload=icmp_fix(body)).data
        if family == "icmp_error":
            return self.icmp_error()
        if family == "arp":
            arp = bytes.fromhex("0001080006040001") + ETH_SRC + self.client_ip() + bytes(6) + VIP_B
            return bytearray(ethernet(0x0806, rng.choice(((), self.vlans()))) + arp)
        if family == "ipv6":
            return bytearray(ethernet(0x86DD) + bytes((0x60,)) + rng.randbytes(rng.randrange(39, 100)))
        if family == "other_ethertype":
            ethertype = rng.choice((0x0806, 0x86DD, 0x8847, 0x88CC, 0x0000, rng.randrange(65536)))
            return bytearray(ethernet(ethertype) + rng.randbytes(rng.randrange(0, 80)))
        if family == "other_ipproto":
            proto = rng.choice((0, 2, 4, 41, 47, 50, 132, 136, 255, rng.randrange(256)))
            return self.l4_frame(self.client_ip(), VIP_B, proto, 0, 0).data
        if family == "truncated":
            frame = self.any_valid(flows).data
            return frame[: rng.randrange(14, len(frame))]
        if family == "byte_flip":
            return self.flip(self.any_valid(flows))
        if family == "bad_ihl":
            return self.bad_ihl(self.any_valid(flows))
        if family == "bad_version":
            built = self.any_valid(flows)
            built.data[built.l3] = (rng.choice((0, 1, 5, 6, 7, 15)) << 4) | (built.data[built.l3] & 15)
            return built.data
        if family == "bad_tot_len":
            return self.bad_tot_len(self.any_valid(flows))
        if family == "padded":
            # Ethernet padding after the IP packet: legal, the packet must still be served
            return self.any_valid(flows).data + bytearray(rng.randbytes(rng.randrange(1, 40)))
        if family == "tcp_bad_doff":
            return self.bad_doff(
                self.to_vip(TCP, flags=rng.choice((0x02, 0x10)), vlans=rng.choice(((), self.vlans())))
            )
        if family == "udp_bad_len":
            return self.bad_udp_len(self.to_vip(UDP, payload=self.rng.randbytes(self.rng.randrange(0, 40))))
        if family == "random_bytes":
            frame = bytearray(rng.randbytes(rng.randrange(14, 120)))
            if rng.random() < 0.7:
                frame[12:14] = b"\x08\x00"
                if rng.random() < 0.5 and len(frame) > 14:
                    frame[14] = 0x45
            return frame
        if family == "scapy":
            if not self._pool:
                return self.to_vip().data
            frame = bytearray(rng.choice(self._pool))
            if rng.random() < 0.5:
                frame[rng.randrange(14, len(frame))] ^= rng.randrange(1, 256)
            return frame
        raise ValueError(f"unknown family {family}")

    def _tc_family(self, family: str, flows: Sequence[Flow]) -> bytearray:
        rng = self.rng
        recent = flows[-64:]
        if family == "tc_reply" and recent:
            kw: dict[str, Any] = {}
            if rng.random() < 0.15:
                kw["vlans"] = self.vlans()
            if rng.random() < 0.15:
                kw["ip_options"] = self.ip_options()
            return self.reply(rng.choice(recent), **kw).data
        if family == "tc_reply_mutated" and recent:
            built = self.reply(rng.choice(recent), vlans=rng.choice(((), self.vlans())))
            how = rng.randrange(6)
            if how == 0:
                return built.data[: rng.randrange(14, len(built.data))]
            if how == 1:
                return self.flip(built)
            if how == 2:
                return self.bad_ihl(built)
            if how == 3:
                return self.bad_tot_len(built)
            if how == 4:
                frag = rng.choice((0x2000, rng.randrange(1, 8192), 0x4000, 0x8000))
                built.data[built.l3 + 6 : built.l3 + 8] = frag.to_bytes(2, "big")
                return built.data
            return built.data + bytearray(rng.randbytes(rng.randrange(1, 30)))
        if family == "tc_client_frame":
            return self._xdp_family(rng.choice(self._xdp_names), flows)
        # tc_unknown (and replies before any flow exists): from a backend to a client with no entry
        ip, port = BACKENDS[rng.randrange(len(BACKENDS))]
        proto = rng.choice((TCP, UDP))
        return self.l4_frame(addr(ip), self.client_ip(), proto, port, self.port(), flags=0x12).data

    def any_valid_with(self, flows: Sequence[Flow], **kw: Any) -> bytearray:
        if flows and self.rng.random() < 0.3:
            return self.followup(self.rng.choice(flows[-64:]), **kw).data
        return self.to_vip(**kw).data

    # -- mutations -----------------------------------------------------------------------------

    def maybe_fix(self, built: Built) -> bytearray:
        """Half of the mutated frames get checksums that fit their new header fields."""
        if self.rng.random() < 0.5:
            fix_checksums(built.data, built.l3)
        return built.data

    def flip(self, built: Built) -> bytearray:
        rng = self.rng
        end = min(len(built.data), built.l4 + 20)
        for _ in range(rng.randrange(1, 5)):
            built.data[rng.randrange(0, end)] ^= rng.randrange(1, 256)
        return self.maybe_fix(built)

    def bad_ihl(self, built: Built) -> bytearray:
        rng = self.rng
        ip_len = _u16(built.data, built.l3 + 2)
        current = built.data[built.l3] & 15
        choice = rng.choice((rng.randrange(0, 5), rng.randrange(current, 16), ip_len // 4 + 1, 15))
        built.data[built.l3] = 0x40 | (choice & 15)
        return self.maybe_fix(built)

    def bad_tot_len(self, built: Built) -> bytearray:
        rng = self.rng
        ip_len = _u16(built.data, built.l3 + 2)
        ihl_len = (built.data[built.l3] & 15) * 4
        avail = len(built.data) - built.l3
        value = rng.choice(
            (
                0,
                rng.randrange(0, ihl_len + 1),
                rng.randrange(ihl_len, ihl_len + 28),
                ip_len - 1,
                ip_len + 1,
                avail + rng.randrange(1, 100),
                rng.randrange(65536),
            )
        )
        _put16(built.data, built.l3 + 2, max(0, min(value, 65535)))
        return self.maybe_fix(built)

    def bad_doff(self, built: Built) -> bytearray:
        rng = self.rng
        doff = rng.choice((0, 1, 4, rng.randrange(5, 16), 15))
        built.data[built.l4 + 12] = (doff << 4) | (built.data[built.l4 + 12] & 15)
        return self.maybe_fix(built)

    def bad_udp_len(self, built: Built) -> bytearray:
        rng = self.rng
        ulen = _u16(built.data, built.l4 + 4)
        value = rng.choice((0, 7, 8, ulen - 1, ulen + 1, ulen + rng.randrange(1, 100), rng.randrange(65536)))
        _put16(built.data, built.l4 + 4, max(0, min(value, 65535)))
        return self.maybe_fix(built)

    def icmp_error(self) -> bytearray:
        """Destination unreachable / time exceeded quoting a TCP header to or from the VIP."""
        rng = self.rng
        client = self.client_ip()
        quoted_to_vip = rng.random() < 0.5
        qsrc, qdst = (client, VIP_B) if quoted_to_vip else (VIP_B, client)
        sport, dport = (self.port(), 80) if quoted_to_vip else (80, self.port())
        quoted_tcp = tcp_segment(qsrc, qdst, sport, dport, 0x12, b"")
        quoted = ipv4_header(qsrc, qdst, TCP, len(quoted_tcp)) + quoted_tcp[:8]
        icmp_type, code = rng.choice(((3, 4), (3, 3), (3, 1), (11, 0), (12, 0)))
        body = icmp_fix(bytes((icmp_type, code, 0, 0)) + b"\x00\x00\x05\xdc" + quoted)
        src = rng.choice((addr("10.0.9.1"), client))
        return self.l4_frame(src, VIP_B, ICMP, 0, 0, payload=body).data


def icmp_fix(body: bytes) -> bytes:
    out = bytearray(body)
    out[2:4] = b"\0\0"
    _put16(out, 2, internet_checksum(out))
    return bytes(out)


def build_scapy_pool(seed: int, count: int) -> list[bytes]:
    """Frames built by scapy, as templates for the `scapy` family (fragments, options, ICMP, v6)."""
    from scapy.layers.inet import ICMP as SICMP
    from scapy.layers.inet import IP, IPerror, TCPerror, fragment
    from scapy.layers.inet import TCP as STCP
    from scapy.layers.inet import UDP as SUDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Dot1Q, Ether
    from scapy.packet import Raw

    rng = random.Random(seed)
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    pool: list[bytes] = []
    for i in range(count):
        client = f"172.20.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        sport = rng.randrange(1024, 65536)
        kind = i % 8
        if kind == 0:
            pkt = eth / IP(src=client, dst=VIP, id=i) / STCP(sport=sport, dport=80, flags="S", seq=i)
        elif kind == 1:
            opts = [b"\x94\x04\x00\x00", b"\x01" * rng.choice((4, 8, 12))]
            pkt = eth / IP(src=client, dst=VIP, id=i, options=opts) / STCP(sport=sport, dport=80, flags="S")
        elif kind == 2:
            whole = (
                IP(src=client, dst=VIP, id=i)
                / SUDP(sport=sport, dport=53)
                / Raw(b"q" * rng.randrange(40, 200))
            )
            parts = fragment(whole, fragsize=32)
            pkt = eth / parts[rng.randrange(len(parts))]
        elif kind == 3:
            quoted = IPerror(src=VIP, dst=client) / TCPerror(sport=80, dport=sport, flags="SA")
            pkt = eth / IP(src="10.0.9.1", dst=VIP, id=i) / SICMP(type=3, code=4, nexthopmtu=1400) / quoted
        elif kind == 4:
            pkt = eth / IPv6(src="2001:db8::2", dst="2001:db8::1") / STCP(sport=sport, dport=80, flags="S")
        elif kind == 5:
            pkt = Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(
                hwsrc="02:00:00:00:00:01", psrc=client, pdst=VIP
            )
        elif kind == 6:
            pkt = (
                eth
                / Dot1Q(vlan=rng.randrange(4096))
                / IP(src=client, dst=VIP, id=i)
                / SUDP(sport=sport, dport=53)
                / Raw(b"dns")
            )
        else:
            pkt = eth / IP(src=client, dst=VIP, id=i) / SICMP(type=8, id=i, seq=1) / Raw(b"ping")
        pool.append(bytes(pkt))
    return pool


# ---- oracle -------------------------------------------------------------------------------------


@dataclass
class CtEntry:
    """The conntrack mirror's copy of one lb_ct_entry (the fields the oracle can predict)."""

    client_ip: bytes
    vip: bytes
    backend_ip: bytes
    client_port: int
    vip_port: int
    backend_port: int
    proto: int
    dir: int
    backend_id: int
    service_id: int
    flags: int = 0
    packets: int = 0
    octets: int = 0  # lb_ct_entry.bytes
    last_frame: bytes = b""  # the last input frame that changed this entry (for reports)

    def reverse_key(self) -> tuple[bytes, bytes, int, int, int]:
        return (self.backend_ip, self.client_ip, self.backend_port, self.client_port, self.proto)

    def forward_key(self) -> tuple[bytes, bytes, int, int, int]:
        return (self.client_ip, self.vip, self.client_port, self.vip_port, self.proto)

    def copy(self, **changes: Any) -> CtEntry:
        values = dict(self.__dict__)
        values.update(changes)
        return CtEntry(**values)


CtKey = tuple[bytes, bytes, int, int, int]  # saddr, daddr, sport, dport, proto (ports in host order)


@dataclass(frozen=True)
class View:
    """What the program parsed out of a frame that got as far as the conntrack lookup."""

    l3: int
    ihl_len: int
    ip_len: int
    l4: int
    proto: int
    saddr: bytes
    daddr: bytes
    sport: int
    dport: int
    tcp_flags: int

    @property
    def check_off(self) -> int:
        return self.l4 + (16 if self.proto == TCP else 6)


# outcome names (stats) and the global counter each one bumps
REFUSED = "refused"  # BPF_PROG_TEST_RUN rejects the frame (EINVAL): too short for the hook
RUNT = "runt"
NOT_OURS = "not_ours"
MALFORMED = "malformed"
FRAGMENT = "fragment"
MIDSTREAM = "midstream"
DNAT = "dnat"
SNAT = "snat"
TC_PASS = "tc_pass"
TC_MISS = "tc_miss"
DROPPED = "dropped"  # a new flow refused: every backend it could get already serves its client port
DROP_CONFLICT = "drop_conflict"
PICK_TRIES = 4  # lb.h LB_PICK_TRIES: slots tried when a pick clashes with another flow of the client port
COUNTER_OF = {
    NOT_OURS: "xdp_not_ours",
    MALFORMED: "xdp_malformed",
    FRAGMENT: "xdp_fragment",
    MIDSTREAM: "xdp_midstream",
    SNAT: "tc_snat",
    TC_MISS: "tc_miss",
}
FINDING_REVERSE_CLASH = "reverse-entry clash"
FINDING_STALE_REVERSE = "stale reverse entry"
FINDINGS = {
    FINDING_REVERSE_CLASH: (
        "a new flow overwrote the reverse conntrack entry of another live flow: same client "
        "address:port, same backend address:port, another VIP port or VIP"
    ),
    FINDING_STALE_REVERSE: (
        "a reply through the reverse entry of an earlier flow on a reused client port (SYN after "
        "close, new backend) changed the TCP state of the new flow"
    ),
}
CHECKED_COUNTERS = ("xdp_packets", *COUNTER_OF.values(), "xdp_ct_restored")


def parse_xdp(data: bytes) -> View | str:
    """lbtui_xdp's parser, step by step: a View, or the outcome name of an untouched frame."""
    n = len(data)
    if n < 14:
        return REFUSED
    ethertype = _u16(data, 12)
    l3 = 14
    if ethertype in (TPID_8021Q, TPID_8021AD):
        if n < 18:
            return MALFORMED
        ethertype = _u16(data, 16)
        l3 = 18
    if ethertype != ETH_IP:
        return NOT_OURS
    if n < l3 + 20:
        return MALFORMED
    ihl_len = (data[l3] & 15) * 4
    ip_len = _u16(data, l3 + 2)
    if data[l3] >> 4 != 4 or ihl_len < 20 or ip_len < ihl_len or l3 + ip_len > n:
        return MALFORMED
    proto = data[l3 + 9]
    if proto not in (TCP, UDP):
        return NOT_OURS
    if _u16(data, l3 + 6) & 0x3FFF:
        return FRAGMENT
    l4 = l3 + ihl_len
    flags = 0
    if proto == TCP:
        if l4 + 20 > n:
            return MALFORMED
        doff = data[l4 + 12] >> 4
        if doff < 5 or ip_len < ihl_len + doff * 4:
            return MALFORMED
        flags = data[l4 + 13]
    else:
        if l4 + 8 > n:
            return MALFORMED
        ulen = _u16(data, l4 + 4)
        if ulen < 8 or ulen > ip_len - ihl_len:
            return MALFORMED
    return View(
        l3,
        ihl_len,
        ip_len,
        l4,
        proto,
        bytes(data[l3 + 12 : l3 + 16]),
        bytes(data[l3 + 16 : l3 + 20]),
        _u16(data, l4),
        _u16(data, l4 + 2),
        flags,
    )


def parse_tc(data: bytes) -> View | str:
    """lbtui_tc's parser (it checks less than XDP: no length fields, no TCP doff)."""
    n = len(data)
    ethertype = _u16(data, 12) if n >= 14 else 0
    if n < 14 or (ethertype == ETH_IP and n < 34) or (ethertype == 0x86DD and n < 54):
        return REFUSED  # the kernel's test run wants the network header it announces
    l3 = 14
    if ethertype in (TPID_8021Q, TPID_8021AD):
        if n < 18:
            return TC_PASS
        ethertype = _u16(data, 16)
        l3 = 18
    if ethertype != ETH_IP or n < l3 + 20:
        return TC_PASS
    ihl_len = (data[l3] & 15) * 4
    if data[l3] >> 4 != 4 or ihl_len < 20 or _u16(data, l3 + 6) & 0x3FFF:
        return TC_PASS
    proto = data[l3 + 9]
    if proto not in (TCP, UDP):
        return TC_PASS
    l4 = l3 + ihl_len
    if l4 + (20 if proto == TCP else 8) > n:
        return TC_PASS
    return View(
        l3,
        ihl_len,
        _u16(data, l3 + 2),
        l4,
        proto,
        bytes(data[l3 + 12 : l3 + 16]),
        bytes(data[l3 + 16 : l3 + 20]),
        _u16(data, l4),
        _u16(data, l4 + 2),
        data[l4 + 13] if proto == TCP else 0,
    )


def _l4_cover(data: bytes, view: View) -> tuple[int, bool]:
    """(length the L4 checksum covers per the headers, whether that fits in the frame)."""
    if view.proto == TCP:
        length = view.ip_len - view.ihl_len
    else:
        length = _u16(data, view.l4 + 4)
    fits = length >= (20 if view.proto == TCP else 8) and view.l4 + length <= len(data)
    return length, fits


def _residuals(data: bytes, view: View) -> tuple[int, int, bool, bool]:
    """(IP header residual, L4 residual, IP header complete, L4 coverage complete).

    A residual is the one's complement sum over everything the checksum covers, checksum included:
    0xffff (or 0) when it verifies. Incomplete ranges (headers that claim more than the frame holds,
    only possible on the TC side) are summed as far as they go, which still contains every field a
    rewrite touches, so comparing residuals before and after is meaningful for them too.
    """
    end_ip = min(view.l3 + view.ihl_len, len(data))
    ip_res = ones_sum(data[view.l3 : end_ip])
    length, fits = _l4_cover(data, view)
    header = 20 if view.proto == TCP else 8
    end_l4 = view.l4 + max(header, min(max(length, 0), len(data) - view.l4))
    pseudo = pseudo_header_sum(
        data[view.l3 + 12 : view.l3 + 16], data[view.l3 + 16 : view.l3 + 20], view.proto, length
    )
    l4_res = ones_sum(data[view.l4 : end_l4], pseudo)
    return ip_res, l4_res, end_ip == view.l3 + view.ihl_len, fits


def _same_residual(a: int, b: int) -> bool:
    return a % 0xFFFF == b % 0xFFFF


def checksums_verify(data: bytes, view: View) -> tuple[bool, bool]:
    """(IP header checksum verifies, L4 checksum verifies or is an absent UDP checksum)."""
    ip_res, l4_res, ip_whole, l4_whole = _residuals(data, view)
    udp_none = view.proto == UDP and _u16(data, view.check_off) == 0
    return ip_whole and ip_res % 0xFFFF == 0, udp_none or (l4_whole and l4_res % 0xFFFF == 0)


@dataclass(frozen=True)
class Verdict:
    outcome: str
    problems: tuple[str, ...] = ()


class Oracle:
    """Predicts every frame's fate from the frame and a mirror of the conntrack map."""

    def __init__(self) -> None:
        self.ct: dict[CtKey, CtEntry] = {}
        self.counters: Counter[str] = Counter()
        self.flows: list[Flow] = []
        # behaviour that mirrors lb.c exactly but breaks docs/datapath.md: kind -> count, first examples
        self.findings: Counter[str] = Counter()
        self.finding_examples: dict[str, list[str]] = {}

    def _finding(self, kind: str, text: str) -> None:
        self.findings[kind] += 1
        examples = self.finding_examples.setdefault(kind, [])
        if len(examples) < 3:
            examples.append(text)

    def reset(self) -> None:
        """The real map was emptied: empty the mirror too (counters stay cumulative)."""
        self.ct.clear()
        self.flows.clear()

    # -- XDP -----------------------------------------------------------------------------------

    def check_xdp(self, data: bytes, verdict: int | None, out: bytes) -> Verdict:
        view = parse_xdp(data)
        if view == REFUSED:
            return _expect_refused(verdict)
        self.counters["xdp_packets"] += 1
        if isinstance(view, str):
            return self._untouched(view, data, verdict, out, XDP_PASS)
        svc = SERVICE_BY_KEY.get((view.daddr, view.dport, view.proto))
        if svc is None:
            return self._untouched(NOT_OURS, data, verdict, out, XDP_PASS)
        key: CtKey = (view.saddr, view.daddr, view.sport, view.dport, view.proto)
        is_tcp = view.proto == TCP
        is_syn = is_tcp and view.tcp_flags & 0x12 == 0x02
        fwd = self.ct.get(key)
        if fwd is not None and is_syn and fwd.flags & (CT_F_CLOSED | CT_F_RST):
            # a SYN reusing a closed flow's port starts a new flow; the old reverse entry goes too
            self.ct.pop(fwd.reverse_key(), None)
            del self.ct[key]
            fwd = None
        if fwd is not None:
            problems = _check_rewrite(data, verdict, out, view, "dst", {(fwd.backend_ip, fwd.backend_port)})
            fwd.packets += 1
            fwd.octets += view.ip_len
            fwd.last_frame = data
            rkey = fwd.reverse_key()
            if rkey not in self.ct:
                self.ct[rkey] = fwd.copy(dir=DIR_REVERSE, packets=0, octets=0, flags=0)
                self.counters["xdp_ct_restored"] += 1
            if is_tcp:
                _track_tcp(fwd, view.tcp_flags, from_backend=False)
            return Verdict(DNAT, tuple(problems))
        if is_tcp and not is_syn and svc.algorithm != "maglev":
            return self._untouched(MIDSTREAM, data, verdict, out, XDP_PASS)
        outcomes = self._outcomes(svc, view)
        if verdict == XDP_DROP and DROP_CONFLICT in outcomes:
            self.counters["drop_conflict"] += 1
            return Verdict(DROPPED, ())
        candidates = {o for o in outcomes if isinstance(o, tuple)}
        problems = _check_rewrite(data, verdict, out, view, "dst", candidates)
        if not problems:
            self._new_flow(svc, view, key, data, out)
        return Verdict(DNAT, tuple(problems))

    def _outcomes(self, svc: FuzzService, view: View) -> set[tuple[bytes, int] | str]:
        """Every backend (or DROP_CONFLICT) the pick can end with, mirroring lb.c's new_flow."""
        group = svc.group
        if svc.service_id == ROUTE_SERVICE and ipaddress.IPv4Address(view.saddr) in _ROUTE_NET:
            group = ROUTE_GROUP
        table = GROUP_TABLES[group]
        le = int.from_bytes
        if svc.algorithm == "maglev":
            sport, dport = view.sport.to_bytes(2, "big"), view.dport.to_bytes(2, "big")
            words = (le(sport, "little") << 16) | le(dport, "little")
            starts = [jhash_3words(le(view.saddr, "little"), le(view.daddr, "little"), words) % TABLE_SIZE]
        elif svc.algorithm == "source-hash":
            starts = [jhash_3words(le(view.saddr, "little"), svc.service_id, 0) % TABLE_SIZE]
        else:
            starts = list(range(TABLE_SIZE))
        outcomes: set[tuple[bytes, int] | str] = set()
        for start in starts:
            for i in range(PICK_TRIES):
                b = table[(start + i) % TABLE_SIZE]
                endpoint = (addr(BACKENDS[b][0]), BACKENDS[b][1])
                if not self._clashes(view, endpoint):
                    outcomes.add(endpoint)
                    break
            else:
                outcomes.add(DROP_CONFLICT)
        return outcomes

    def _clashes(self, view: View, endpoint: tuple[bytes, int]) -> bool:
        """lb.c's reverse_owned_by_other: the backend's reverse entry for this client port is taken."""
        old = self.ct.get((endpoint[0], view.saddr, endpoint[1], view.sport, view.proto))
        if old is None or old.dir != DIR_REVERSE:
            return False
        if (old.client_ip, old.vip, old.client_port, old.vip_port) == (
            view.saddr,
            view.daddr,
            view.sport,
            view.dport,
        ):
            return False
        owner = self.ct.get(old.forward_key())
        return owner is not None and (owner.backend_ip, owner.backend_port) == (
            old.backend_ip,
            old.backend_port,
        )

    def _new_flow(self, svc: FuzzService, view: View, key: CtKey, data: bytes, out: bytes) -> None:
        backend = (bytes(out[view.l3 + 16 : view.l3 + 20]), _u16(out, view.l4 + 2))
        entry = CtEntry(
            client_ip=view.saddr,
            vip=view.daddr,
            backend_ip=backend[0],
            client_port=view.sport,
            vip_port=view.dport,
            backend_port=backend[1],
            proto=view.proto,
            dir=DIR_FORWARD,
            backend_id=BACKEND_BY_ENDPOINT[backend],
            service_id=svc.service_id,
            packets=1,
            octets=view.ip_len,
            last_frame=data,
        )
        self.ct[key] = entry
        rkey = entry.reverse_key()
        old = self.ct.get(rkey)
        if old is not None and old.dir == DIR_REVERSE and old.forward_key() != key:
            owner = self.ct.get(old.forward_key())
            if owner is not None and owner.reverse_key() == rkey:
                self._finding(
                    FINDING_REVERSE_CLASH,
                    f"flow {_flow_text(old)} lost its reverse entry to {_flow_text(entry)}: "
                    f"replies of the first are now SNATed to port {entry.vip_port}",
                )
        self.ct[rkey] = entry.copy(dir=DIR_REVERSE, packets=0, octets=0)
        self.flows.append(Flow(view.saddr, view.sport, view.dport, view.proto, backend[0], backend[1]))

    # -- TC ------------------------------------------------------------------------------------

    def check_tc(self, data: bytes, verdict: int | None, out: bytes) -> Verdict:
        view = parse_tc(data)
        if view == REFUSED:
            return _expect_refused(verdict)
        if isinstance(view, str):
            return self._untouched(view, data, verdict, out, TC_ACT_OK)
        rev = self.ct.get((view.saddr, view.daddr, view.sport, view.dport, view.proto))
        if rev is None or rev.dir != DIR_REVERSE:
            return self._untouched(TC_MISS, data, verdict, out, TC_ACT_OK)
        problems = _check_rewrite(data, verdict, out, view, "src", {(rev.vip, rev.vip_port)})
        self.counters["tc_snat"] += 1
        rev.packets += 1
        rev.octets += view.ip_len
        rev.last_frame = data
        if view.proto == TCP and view.tcp_flags & 0x07:
            fwd = self.ct.get(rev.forward_key())
            # only the reverse entry's own flow (not a later flow on the same client port)
            if fwd is not None and (fwd.backend_ip, fwd.backend_port) == (rev.backend_ip, rev.backend_port):
                _track_tcp(fwd, view.tcp_flags, from_backend=True)
                fwd.last_frame = data
        return Verdict(SNAT, tuple(problems))

    # -- shared --------------------------------------------------------------------------------

    def _untouched(self, outcome: str, data: bytes, verdict: int | None, out: bytes, ok: int) -> Verdict:
        if outcome in COUNTER_OF:
            self.counters[COUNTER_OF[outcome]] += 1
        problems = []
        if verdict != ok:
            problems.append(
                f"{outcome}: expected verdict {ok} and the frame untouched, got verdict {verdict}"
            )
        elif out != data:
            changed = [i for i in range(min(len(out), len(data))) if out[i] != data[i]]
            problems.append(
                f"{outcome}: expected the frame untouched, but bytes {changed[:16]} changed"
                + (f" and the length went {len(data)} -> {len(out)}" if len(out) != len(data) else "")
            )
        return Verdict(outcome, tuple(problems))

    def conntrack_problems(self, entries: Sequence[Any]) -> list[str]:
        """Compare the real map (maps.FlowEntry values) with the mirror; [] when they agree."""
        real: dict[tuple[str, str, int, int, str], Any] = {}
        for entry in entries:
            k = entry.key
            real[(k.saddr, k.daddr, k.sport, k.dport, k.protocol)] = entry
        mine = {_key_text(k): e for k, e in self.ct.items()}
        problems = []
        for k in sorted(set(real) | set(mine)):
            want, got = mine.get(k), real.get(k)
            if want is None:
                problems.append(f"conntrack has an unexpected entry {k}: {got}")
                continue
            if got is None:
                problems.append(f"conntrack lacks entry {k}; last frame:\n{hexdump(want.last_frame)}")
                continue
            expected = (
                want.dir,
                (socket.inet_ntoa(want.client_ip), want.client_port),
                (socket.inet_ntoa(want.vip), want.vip_port),
                (socket.inet_ntoa(want.backend_ip), want.backend_port),
                want.backend_id,
                want.service_id,
                want.flags,
                want.packets,
                want.octets,
            )
            actual = (
                got.direction,
                got.client,
                got.vip,
                got.backend,
                got.backend_id,
                got.service_id,
                got.flags,
                got.packets,
                got.bytes,
            )
            if expected != actual:
                problems.append(
                    f"conntrack entry {k}: expected (dir, client, vip, backend, backend_id, service_id, "
                    f"flags, packets, bytes) = {expected}, map has {actual}; last frame:\n"
                    f"{hexdump(want.last_frame)}"
                )
        return problems


_ROUTE_NET = ipaddress.IPv4Network(ROUTE_CIDR)


def _key_text(k: CtKey) -> tuple[str, str, int, int, str]:
    return (socket.inet_ntoa(k[0]), socket.inet_ntoa(k[1]), k[2], k[3], "tcp" if k[4] == TCP else "udp")


def _flow_text(e: CtEntry) -> str:
    proto = "tcp" if e.proto == TCP else "udp"
    return (
        f"{socket.inet_ntoa(e.client_ip)}:{e.client_port} -> {socket.inet_ntoa(e.vip)}:{e.vip_port}/{proto}"
        f" (backend {socket.inet_ntoa(e.backend_ip)}:{e.backend_port})"
    )


def _expect_refused(verdict: int | None) -> Verdict:
    if verdict is not None:
        return Verdict(
            REFUSED, (f"expected the kernel to refuse this test run (EINVAL), got verdict {verdict}",)
        )
    return Verdict(REFUSED)


def _track_tcp(fwd: CtEntry, tcp_flags: int, from_backend: bool) -> None:
    """lb.c track_tcp(): the flag bits of the forward entry."""
    add = 0
    if tcp_flags & 0x04:
        add |= CT_F_RST
    if tcp_flags & 0x01:
        add |= CT_F_FIN_OUT if from_backend else CT_F_FIN_IN
    if from_backend and tcp_flags & 0x12 == 0x12:
        add |= CT_F_SYNACK
    if not add:
        return
    old = fwd.flags
    now = old | add
    fwd.flags = now
    if from_backend and add & CT_F_RST and not old & CT_F_SYNACK and not old & CT_F_FAILED:
        fwd.flags |= CT_F_FAILED
    closed = now & CT_F_RST or now & (CT_F_FIN_IN | CT_F_FIN_OUT) == (CT_F_FIN_IN | CT_F_FIN_OUT)
    if closed and not old & CT_F_CLOSED:
        fwd.flags |= CT_F_CLOSED


def _check_rewrite(
    data: bytes, verdict: int | None, out: bytes, view: View, side: str, targets: set[tuple[bytes, int]]
) -> list[str]:
    """A NAT rewrite: verdict PASS/OK, only the intended bytes changed, target endpoint, checksums."""
    ok = XDP_PASS if side == "dst" else TC_ACT_OK
    what = "DNAT" if side == "dst" else "SNAT"
    if verdict != ok:
        return [f"{what}: expected verdict {ok}, got {verdict}"]
    if len(out) != len(data):
        return [f"{what}: the frame length changed {len(data)} -> {len(out)}"]
    l3, l4 = view.l3, view.l4
    addr_off = l3 + (16 if side == "dst" else 12)
    port_off = l4 + (2 if side == "dst" else 0)
    allowed = {l3 + 10, l3 + 11, port_off, port_off + 1, view.check_off, view.check_off + 1}
    allowed.update(range(addr_off, addr_off + 4))
    problems = []
    stray = [i for i in range(len(data)) if data[i] != out[i] and i not in allowed]
    if stray:
        problems.append(f"{what}: bytes outside address/port/checksums changed: {stray[:16]}")
    endpoint = (bytes(out[addr_off : addr_off + 4]), _u16(out, port_off))
    if endpoint not in targets:
        want = sorted(f"{socket.inet_ntoa(a)}:{p}" for a, p in targets)
        problems.append(
            f"{what}: rewritten to {socket.inet_ntoa(endpoint[0])}:{endpoint[1]}, expected one of {want}"
        )
    ip_in, l4_in, _, l4_whole = _residuals(data, view)
    ip_out, l4_out, _, _ = _residuals(out, view)
    if not _same_residual(ip_in, ip_out):
        problems.append(
            f"{what}: IP header checksum residual {ip_in:#06x} -> {ip_out:#06x} "
            f"({'the input verified, the output does not' if ip_in % 0xFFFF == 0 else 'not kept'})"
        )
    check_in, check_out = _u16(data, view.check_off), _u16(out, view.check_off)
    if view.proto == UDP and check_in == 0:
        if check_out != 0:
            problems.append(f"{what}: a zero UDP checksum became {check_out:#06x}")
    elif view.proto == UDP and check_out == 0:
        problems.append(f"{what}: a UDP checksum became 0 (means 'no checksum'), expected 0xffff")
    elif not _same_residual(l4_in, l4_out):
        state = "the input verified, the output does not" if l4_whole and l4_in % 0xFFFF == 0 else "not kept"
        problems.append(f"{what}: L4 checksum residual {l4_in:#06x} -> {l4_out:#06x} ({state})")
    return problems


# ---- runner (needs root and BPF) ----------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    family: str
    hook: str
    problems: tuple[str, ...]
    frame_hex: str
    output_hex: str

    def __str__(self) -> str:
        lines = [f"[{self.hook}] {self.family}:", *(f"  {p}" for p in self.problems)]
        if self.frame_hex:
            lines += ["  input:", *("    " + line for line in self.frame_hex.splitlines())]
        if self.output_hex:
            lines += ["  output:", *("    " + line for line in self.output_hex.splitlines())]
        return "\n".join(lines)


@dataclass
class FuzzStats:
    frames: int = 0
    syncs: int = 0
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (family, outcome) -> count
    failures: list[Failure] = field(default_factory=list)
    failure_count: int = 0
    findings: Counter[str] = field(default_factory=Counter)
    finding_examples: dict[str, list[str]] = field(default_factory=dict)
    evictions: int = 0

    def merge(self, other: FuzzStats, keep: int = 50) -> None:
        self.frames += other.frames
        self.syncs += other.syncs
        self.outcomes.update(other.outcomes)
        self.failure_count += other.failure_count
        self.failures.extend(other.failures[: max(0, keep - len(self.failures))])
        self.findings.update(other.findings)
        for kind, examples in other.finding_examples.items():
            mine = self.finding_examples.setdefault(kind, [])
            mine.extend(examples[: max(0, 3 - len(mine))])
        self.evictions += other.evictions


def setup_maps(maps: Any) -> None:
    """Fill a fresh lbtui.dataplane.maps.Maps with the fuzz topology."""
    for bid, (ip, port) in BACKENDS.items():
        maps.set_backend(bid, ip, port, active=True)
    for svc in SERVICES:
        maps.set_service(
            VIP,
            svc.port,
            "tcp" if svc.proto == TCP else "udp",
            service_id=svc.service_id,
            default_group=svc.group,
            algorithm=svc.algorithm,
            events=svc.service_id == 0,
        )
    for group, table in GROUP_TABLES.items():
        maps.write_slots(group, list(enumerate(table)))
    maps.set_route(ROUTE_SERVICE, ROUTE_CIDR, ROUTE_GROUP)


def open_dataplane() -> tuple[Any, Any]:
    """Compile and load lb.c sized for fuzzing and fill its maps: (Loaded, Maps)."""
    from lbtui.dataplane.loader import DataplaneSpec, Loaded
    from lbtui.dataplane.maps import Maps

    loaded = Loaded(
        DataplaneSpec(
            table_size=TABLE_SIZE, conntrack_entries=CONNTRACK_ENTRIES, max_groups=4, max_backends=16
        )
    )
    maps = Maps(loaded)
    setup_maps(maps)
    return loaded, maps


def make_runner() -> Callable[[int, bytes], tuple[int | None, bytes]]:
    """run(prog_fd, frame) -> (verdict, output), verdict None when the kernel refuses the frame."""
    from lbtui.dataplane.progrun import run_program

    def run(prog_fd: int, frame: bytes) -> tuple[int | None, bytes]:
        try:
            result = run_program(prog_fd, frame)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return None, b""
            raise
        return result.retval, result.data

    return run


class PacketFuzzer:
    """Generator + oracle against one loaded copy of the programs."""

    def __init__(
        self,
        loaded: Any,
        maps: Any,
        seed: int,
        *,
        sync_every: int = 1000,
        keep_failures: int = 20,
        evict_rate: float = 0.005,
    ):
        self.loaded = loaded
        self.maps = maps
        self.evict_rate = evict_rate
        self.generator = FrameGenerator(seed)
        self.oracle = Oracle()
        self.sync_every = sync_every
        self.keep_failures = keep_failures
        self.stats = FuzzStats()
        self._run = make_runner()
        self._baseline: dict[str, int] = {}
        self._resync()

    def run(self, frames: int) -> FuzzStats:
        xdp_fd, tc_fd = self.loaded.xdp_fn.fd, self.loaded.tc_fn.fd
        rng = self.generator.rng
        for i in range(frames):
            if self.oracle.flows and rng.random() < self.evict_rate:
                self.evict(rng.choice(self.oracle.flows[-64:]), reverse=rng.random() < 0.7)
            frame = self.generator.next(self.oracle.flows)
            self.check_frame(frame, xdp_fd if frame.hook == "xdp" else tc_fd)
            if (i + 1) % self.sync_every == 0:
                self.sync()
        self.sync()
        self.stats.findings = Counter(self.oracle.findings)
        self.stats.finding_examples = {k: list(v) for k, v in self.oracle.finding_examples.items()}
        return self.stats

    def check_frame(self, frame: Frame, prog_fd: int) -> Verdict:
        verdict, out = self._run(prog_fd, frame.data)
        check = self.oracle.check_xdp if frame.hook == "xdp" else self.oracle.check_tc
        result = check(frame.data, verdict, out)
        self.stats.frames += 1
        self.stats.outcomes[(frame.family, result.outcome)] += 1
        if result.problems:
            self._fail(Failure(frame.family, frame.hook, result.problems, hexdump(frame.data), hexdump(out)))
            self._resync()
        return result

    def evict(self, flow: Flow, *, reverse: bool) -> None:
        """Delete one direction of a flow from the map and the mirror, as an LRU eviction would."""
        if reverse:
            key: CtKey = (flow.backend_ip, flow.client_ip, flow.backend_port, flow.client_port, flow.proto)
        else:
            key = (flow.client_ip, VIP_B, flow.client_port, flow.vip_port, flow.proto)
        if key not in self.oracle.ct:
            return
        table = self.loaded.table("lb_conntrack")
        raw = table.Key()
        raw.saddr = int.from_bytes(key[0], "little")
        raw.daddr = int.from_bytes(key[1], "little")
        raw.sport = socket.htons(key[2])
        raw.dport = socket.htons(key[3])
        raw.proto = key[4]
        self.maps.delete_conntrack([raw])
        del self.oracle.ct[key]
        self.stats.evictions += 1

    def sync(self) -> None:
        """Compare conntrack and counters with the mirror, then empty conntrack on both sides."""
        self.stats.syncs += 1
        entries = self.maps.conntrack()
        problems = self.oracle.conntrack_problems([e for _, e in entries])
        counters = self.maps.global_counters()
        for name in CHECKED_COUNTERS:
            got = counters[name] - self._baseline.get(name, 0)
            if got != self.oracle.counters[name]:
                problems.append(
                    f"global counter {name}: expected {self.oracle.counters[name]}, map has {got}"
                )
        if problems:
            self._fail(Failure("conntrack-sync", "-", tuple(problems[:10]), "", ""))
            self._resync()
            return
        self.maps.delete_conntrack([k for k, _ in entries])
        self.oracle.reset()

    def _resync(self) -> None:
        self.maps.delete_conntrack([k for k, _ in self.maps.conntrack()])
        self.oracle.reset()
        self.oracle.counters.clear()
        self._baseline = self.maps.global_counters()

    def _fail(self, failure: Failure) -> None:
        self.stats.failure_count += 1
        if len(self.stats.failures) < self.keep_failures:
            self.stats.failures.append(failure)
        log.error("fuzz failure: %s", failure)


def fuzz_packets(seed: int, frames: int, *, sync_every: int = 1000) -> FuzzStats:
    """Load a private copy of the programs, run `frames` frames, unload. Needs root."""
    loaded, maps = open_dataplane()
    try:
        return PacketFuzzer(loaded, maps, seed, sync_every=sync_every).run(frames)
    finally:
        loaded.close()


def summary_table(stats: FuzzStats) -> str:
    """Counts per family and outcome, as text."""
    outcomes = sorted({o for _, o in stats.outcomes})
    families = sorted({f for f, _ in stats.outcomes})
    width = max([len(f) for f in families] + [8])
    lines = [f"{'family':<{width}} " + " ".join(f"{o:>10}" for o in outcomes) + f" {'total':>9}"]
    for fam in families:
        row = [stats.outcomes.get((fam, o), 0) for o in outcomes]
        lines.append(f"{fam:<{width}} " + " ".join(f"{c:>10}" for c in row) + f" {sum(row):>9}")
    totals = [sum(c for (_, o), c in stats.outcomes.items() if o == out) for out in outcomes]
    lines.append(f"{'total':<{width}} " + " ".join(f"{c:>10}" for c in totals) + f" {sum(totals):>9}")
    return "\n".join(lines)
