# SPDX-License-Identifier: Apache-2.0
"""Bytes on the wire: one's complement checksums and frames built byte by byte.

The fuzzer builds frames here instead of with scapy (~1 ms per packet, too slow for a million) and
verifies checksums with this code, never with the program's own.
"""

from __future__ import annotations

import array
import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass

TCP, UDP, ICMP = 6, 17, 1
ICMP6 = 58
HOPOPTS, ROUTING, FRAGMENT6, DSTOPTS, NO_NEXT = 0, 43, 44, 60, 59  # IPv6 next-header values
ETH_DST = bytes.fromhex("020000000002")
ETH_SRC = bytes.fromhex("020000000001")
ETH_IP = 0x0800
ETH_IPV6 = 0x86DD
TPID_8021Q, TPID_8021AD = 0x8100, 0x88A8

_LITTLE = sys.byteorder == "little"


def addr(text: str) -> bytes:
    """An address of either family as bytes on the wire (4 or 16)."""
    return ipaddress.ip_address(text).packed


def ntop(raw: bytes) -> str:
    """Bytes of an address (4 or 16) as text."""
    return str(ipaddress.ip_address(bytes(raw)))


def endpoint_text(ip: bytes, port: int) -> str:
    """address:port, an IPv6 address in brackets."""
    return f"[{ntop(ip)}]:{port}" if len(ip) == 16 else f"{ntop(ip)}:{port}"


def u16(data: bytes | bytearray, off: int) -> int:
    return (data[off] << 8) | data[off + 1]


def put16(data: bytearray, off: int, value: int) -> None:
    data[off] = (value >> 8) & 0xFF
    data[off + 1] = value & 0xFF


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
    put16(hdr, 2, len(hdr) + payload_len)
    put16(hdr, 4, ident)
    put16(hdr, 6, frag)
    hdr[8] = ttl
    hdr[9] = proto
    hdr[12:16] = src
    hdr[16:20] = dst
    hdr[20:] = options
    put16(hdr, 10, internet_checksum(hdr))
    return hdr


def ipv6_header(
    src: bytes, dst: bytes, next_header: int, payload_len: int, *, hop_limit: int = 64, flow: int = 0
) -> bytearray:
    """The fixed IPv6 header; `payload_len` counts the extension headers too."""
    hdr = bytearray(40)
    hdr[0:4] = ((6 << 28) | (flow & 0xFFFFF)).to_bytes(4, "big")
    put16(hdr, 4, payload_len & 0xFFFF)
    hdr[6] = next_header
    hdr[7] = hop_limit
    hdr[8:24] = src
    hdr[24:40] = dst
    return hdr


def ipv6_ext(kind: int, next_header: int, body: bytes) -> bytes:
    """One extension header: `body` follows the two first bytes; hop-by-hop, routing and destination
    options are padded to 8-byte units (hdr ext len = units - 1); a fragment header is 8 bytes."""
    if kind == FRAGMENT6:
        return bytes((next_header, 0)) + bytes(body[:6]).ljust(6, b"\0")
    raw = bytes((next_header, 0)) + body
    units = max(1, (len(raw) + 7) // 8)
    raw = raw.ljust(units * 8, b"\0")
    return raw[:1] + bytes((units - 1,)) + raw[2:]


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
    put16(seg, 0, sport)
    put16(seg, 2, dport)
    seg[4:8] = seq.to_bytes(4, "big")
    seg[8:12] = ack.to_bytes(4, "big")
    seg[12] = (5 + len(options) // 4) << 4
    seg[13] = flags
    put16(seg, 14, window)
    seg[20:] = options
    seg += payload
    put16(seg, 16, internet_checksum(seg, pseudo_header_sum(src, dst, TCP, len(seg))))
    return seg


def udp_datagram(
    src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, *, zero_checksum: bool = False
) -> bytearray:
    dgram = bytearray(8) + payload
    put16(dgram, 0, sport)
    put16(dgram, 2, dport)
    put16(dgram, 4, len(dgram))
    if not zero_checksum:
        check = internet_checksum(dgram, pseudo_header_sum(src, dst, UDP, len(dgram)))
        put16(dgram, 6, check or 0xFFFF)  # RFC 768: a computed 0 is sent as all ones
    return dgram


def icmp_fix(body: bytes) -> bytes:
    """An ICMP message with its checksum computed."""
    out = bytearray(body)
    out[2:4] = b"\0\0"
    put16(out, 2, internet_checksum(out))
    return bytes(out)


def icmp6_fix(src: bytes, dst: bytes, body: bytes) -> bytes:
    """An ICMPv6 message with its checksum computed (it covers the pseudo header)."""
    out = bytearray(body)
    out[2:4] = b"\0\0"
    put16(out, 2, internet_checksum(out, pseudo_header_sum(src, dst, ICMP6, len(out))))
    return bytes(out)


def assemble(eth: bytes, ip: bytearray, l4: bytes | bytearray, proto: int) -> Built:
    return Built(bytearray(eth) + ip + l4, len(eth), len(eth) + len(ip), proto)


def fix_checksums(frame: bytearray, l3: int) -> None:
    """Recompute the IP and L4 checksums where the header fields say where they are and they fit."""
    n = len(frame)
    if n < l3 + 20:
        return
    ihl_len = (frame[l3] & 15) * 4
    if ihl_len >= 20 and l3 + ihl_len <= n:
        put16(frame, l3 + 10, 0)
        put16(frame, l3 + 10, internet_checksum(frame[l3 : l3 + ihl_len]))
    proto = frame[l3 + 9]
    ip_len = u16(frame, l3 + 2)
    l4 = l3 + ihl_len
    src, dst = bytes(frame[l3 + 12 : l3 + 16]), bytes(frame[l3 + 16 : l3 + 20])
    if ihl_len < 20:
        return
    if proto == TCP and l4 + 20 <= n and ihl_len <= ip_len and l3 + ip_len <= n:
        seg = frame[l4 : l3 + ip_len]
        if len(seg) >= 18:
            put16(frame, l4 + 16, 0)
            seg = frame[l4 : l3 + ip_len]
            put16(frame, l4 + 16, internet_checksum(seg, pseudo_header_sum(src, dst, TCP, len(seg))))
    elif proto == UDP and l4 + 8 <= n:
        ulen = u16(frame, l4 + 4)
        if 8 <= ulen and l4 + ulen <= n and u16(frame, l4 + 6) != 0:
            put16(frame, l4 + 6, 0)
            check = internet_checksum(frame[l4 : l4 + ulen], pseudo_header_sum(src, dst, UDP, ulen))
            put16(frame, l4 + 6, check or 0xFFFF)


def fix_checksums6(frame: bytearray, l3: int) -> None:
    """Recompute the TCP/UDP checksum of an IPv6 packet where its headers say where it is and it fits
    (the extension headers walked as lb_ipv6.h walks them)."""
    n = len(frame)
    if n < l3 + 40:
        return
    nxt, at = frame[l3 + 6], l3 + 40
    for _ in range(8):
        if nxt not in (HOPOPTS, ROUTING, DSTOPTS) or at + 2 > n:
            break
        nxt, at = frame[at], at + (frame[at + 1] + 1) * 8
    end = l3 + 40 + u16(frame, l3 + 4)
    src, dst = bytes(frame[l3 + 8 : l3 + 24]), bytes(frame[l3 + 24 : l3 + 40])
    if nxt == TCP and at + 20 <= end <= n:
        put16(frame, at + 16, 0)
        put16(frame, at + 16, internet_checksum(frame[at:end], pseudo_header_sum(src, dst, TCP, end - at)))
    elif nxt == UDP and at + 8 <= n:
        ulen = u16(frame, at + 4)
        if 8 <= ulen and at + ulen <= n and u16(frame, at + 6) != 0:
            put16(frame, at + 6, 0)
            check = internet_checksum(frame[at : at + ulen], pseudo_header_sum(src, dst, UDP, ulen))
            put16(frame, at + 6, check or 0xFFFF)
