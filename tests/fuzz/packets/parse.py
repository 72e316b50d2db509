# SPDX-License-Identifier: Apache-2.0
"""What lb.c's parsers make of a frame, step by step, as the oracle needs it.

`parse_xdp` mirrors lbtui_xdp and `parse_tc` mirrors lbtui_tc (which checks less: no length fields,
no TCP data offset). Each returns a View of the headers, an IcmpView (an ICMP message the program
may translate), a Fragment (TC: a fragment after the first), or the outcome name of a frame the
program passes untouched. IPv6 has its own (`_parse_xdp6`, `_parse_tc6`, lb_ipv6.h, lb_icmp6.h): the
View of an IPv6 packet has `v6` set, `ihl_len` is the offset of its upper-layer header (the fixed
header, the extension headers walked and, for a first fragment at TC, its fragment header) and
`ip_len` 40 + the payload length; an ICMPv6 message or a later fragment has `v6` set too. Everything
after the parse (the service lookup, conntrack, the pick) is the same for both families, as in lb.c
(lb_fam.h).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tests.fuzz.packets.wire import ETH_IP, ETH_IPV6, ICMP, ICMP6, TCP, TPID_8021AD, TPID_8021Q, UDP, u16

# outcomes of frames the programs pass untouched (stats names)
REFUSED = "refused"  # BPF_PROG_TEST_RUN rejects the frame (EINVAL): too short for the hook
NOT_OURS = "not_ours"
MALFORMED = "malformed"
FRAGMENT = "fragment"
TC_PASS = "tc_pass"
V6_NO_L4 = "v6_no_l4"  # IPv6 whose upper-layer header lies beyond the extension headers walked

V6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options
V6_FRAGMENT = 44
V6_EXT_MAX = 4  # lb_ipv6.h LB_V6_EXT_MAX


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
    frag: int = 0  # TC: a first fragment with more to follow (IPv4: its flags and offset, MF set)
    ip_id: int = 0  # its identification (IPv6: the fragment header's 32 bits)
    v6: bool = False

    @property
    def check_off(self) -> int:
        return self.l4 + (16 if self.proto == TCP else 6)

    @property
    def src_off(self) -> int:
        return self.l3 + (8 if self.v6 else 12)

    @property
    def dst_off(self) -> int:
        return self.l3 + (24 if self.v6 else 16)

    @property
    def alen(self) -> int:
        """Bytes of an address."""
        return 16 if self.v6 else 4


@dataclass(frozen=True)
class IcmpView:
    """An ICMP message that is not a fragment: l3, the outer header length, where the outer IP
    packet ends (XDP: its validated total length; TC: what the header says). IPv6: `ihl_len` is the
    ICMPv6 header's offset from l3."""

    l3: int
    ihl_len: int
    ip_end: int
    v6: bool = False


@dataclass(frozen=True)
class Fragment:
    """TC: a TCP/UDP fragment after the first (no ports)."""

    l3: int
    saddr: bytes
    daddr: bytes
    ip_id: int
    proto: int
    v6: bool = False


def parse_xdp(data: bytes) -> View | str:
    """lbtui_xdp's parser, step by step: a View, or the outcome name of an untouched frame."""
    n = len(data)
    if n < 14:
        return REFUSED
    ethertype = u16(data, 12)
    l3 = 14
    if ethertype in (TPID_8021Q, TPID_8021AD):
        if n < 18:
            return MALFORMED
        ethertype = u16(data, 16)
        l3 = 18
    if ethertype == ETH_IPV6:
        return _parse_xdp6(data, l3)
    if ethertype != ETH_IP:
        return NOT_OURS
    if n < l3 + 20:
        return MALFORMED
    ihl_len = (data[l3] & 15) * 4
    ip_len = u16(data, l3 + 2)
    if data[l3] >> 4 != 4 or ihl_len < 20 or ip_len < ihl_len or l3 + ip_len > n:
        return MALFORMED
    proto = data[l3 + 9]
    if proto == ICMP and not u16(data, l3 + 6) & 0x3FFF:
        return IcmpView(l3, ihl_len, l3 + ip_len)
    if proto not in (TCP, UDP):
        return NOT_OURS
    if u16(data, l3 + 6) & 0x3FFF:
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
        ulen = u16(data, l4 + 4)
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
        u16(data, l4),
        u16(data, l4 + 2),
        flags,
    )


def parse_tc(data: bytes) -> View | IcmpView | Fragment | str:
    """lbtui_tc's parser (it checks less than XDP: no length fields, no TCP doff)."""
    n = len(data)
    ethertype = u16(data, 12) if n >= 14 else 0
    if n < 14 or (ethertype == ETH_IP and n < 34) or (ethertype == ETH_IPV6 and n < 54):
        return REFUSED  # the kernel's test run wants the network header it announces
    l3 = 14
    if ethertype in (TPID_8021Q, TPID_8021AD):
        if n < 18:
            return TC_PASS
        ethertype = u16(data, 16)
        l3 = 18
    if ethertype == ETH_IPV6:
        return _parse_tc6(data, l3)
    if ethertype != ETH_IP or n < l3 + 20:
        return TC_PASS
    ihl_len = (data[l3] & 15) * 4
    if data[l3] >> 4 != 4 or ihl_len < 20:
        return TC_PASS
    frag = u16(data, l3 + 6) & 0x3FFF
    proto = data[l3 + 9]
    if proto == ICMP:
        return TC_PASS if frag else IcmpView(l3, ihl_len, l3 + u16(data, l3 + 2))
    if proto not in (TCP, UDP):
        return TC_PASS
    if frag & 0x1FFF:
        return Fragment(
            l3, bytes(data[l3 + 12 : l3 + 16]), bytes(data[l3 + 16 : l3 + 20]), u16(data, l3 + 4), proto
        )
    l4 = l3 + ihl_len
    if l4 + (20 if proto == TCP else 8) > n:
        return TC_PASS
    return View(
        l3,
        ihl_len,
        u16(data, l3 + 2),
        l4,
        proto,
        bytes(data[l3 + 12 : l3 + 16]),
        bytes(data[l3 + 16 : l3 + 20]),
        u16(data, l4),
        u16(data, l4 + 2),
        data[l4 + 13] if proto == TCP else 0,
        frag,
        u16(data, l3 + 4),
    )


def _upper6(data: bytes, l3: int) -> tuple[int | str, int]:
    """lb_ipv6.h ipv6_upper: (upper-layer protocol, its offset from l3), or an outcome name."""
    nxt, at = data[l3 + 6], 40
    for _ in range(V6_EXT_MAX):
        if nxt == V6_FRAGMENT:
            return FRAGMENT, at
        if nxt not in V6_EXT:
            return nxt, at
        if l3 + at + 2 > len(data):
            return MALFORMED, at
        nxt, at = data[l3 + at], at + (data[l3 + at + 1] + 1) * 8
    if nxt == V6_FRAGMENT:
        return FRAGMENT, at
    return (nxt, at) if nxt not in V6_EXT else (V6_NO_L4, at)


def _parse_xdp6(data: bytes, l3: int) -> View | str:
    """lbtui_xdp6's parser (lb_ipv6.h xdp_ipv6) up to the service lookup."""
    n = len(data)
    if n < l3 + 40 or data[l3] >> 4 != 6:
        return MALFORMED
    ip_len = 40 + u16(data, l3 + 4)
    if l3 + ip_len > n:
        return MALFORMED
    proto, off = _upper6(data, l3)
    if isinstance(proto, str):
        return proto
    if proto == ICMP6:  # errors about our flows (lb_icmp6.h); the rest is not ours
        return NOT_OURS if off > ip_len else IcmpView(l3, off & 0x1FFF, l3 + ip_len, v6=True)
    if proto not in (TCP, UDP):
        return NOT_OURS
    if off > ip_len:
        return MALFORMED
    off &= 0x1FFF
    l4, l4_len = l3 + off, ip_len - off
    if proto == TCP:
        if l4 + 20 > n:
            return MALFORMED
        doff = data[l4 + 12] >> 4
        if doff < 5 or l4_len < doff * 4:
            return MALFORMED
    else:
        if l4 + 8 > n:
            return MALFORMED
        ulen = u16(data, l4 + 4)
        if ulen < 8 or ulen > l4_len or u16(data, l4 + 6) == 0:
            return MALFORMED
    return _view6(data, l3, ip_len, off, l4, proto)


def _view6(data: bytes, l3: int, ip_len: int, off: int, l4: int, proto: int) -> View:
    return View(
        l3,
        off,
        ip_len,
        l4,
        proto,
        bytes(data[l3 + 8 : l3 + 24]),
        bytes(data[l3 + 24 : l3 + 40]),
        u16(data, l4),
        u16(data, l4 + 2),
        data[l4 + 13] if proto == TCP else 0,
        v6=True,
    )


def _parse_tc6(data: bytes, l3: int) -> View | IcmpView | Fragment | str:
    """lbtui_tc6's parser (lb_ipv6.h tc_ipv6, lb_icmp6.h): no length fields checked. A fragment header
    right behind the headers walked: a later TCP/UDP fragment is a Fragment, a first one is parsed
    as a whole reply with its upper-layer header behind the fragment header."""
    n = len(data)
    if n < l3 + 40 or data[l3] >> 4 != 6:
        return TC_PASS
    proto, off = _upper6(data, l3)
    off &= 0x1FFF
    plen = u16(data, l3 + 4)
    if proto == ICMP6:
        return IcmpView(l3, off, l3 + 40 + plen, v6=True)
    frag = ident = 0
    if proto == FRAGMENT:  # lb_icmp6.h tc_fragment6
        fh = l3 + off
        if fh + 8 > n or data[fh] not in (TCP, UDP):
            return TC_PASS
        proto, ident = data[fh], int.from_bytes(data[fh + 4 : fh + 8], "big")
        if u16(data, fh + 2) & 0xFFF8:
            return Fragment(
                l3, bytes(data[l3 + 8 : l3 + 24]), bytes(data[l3 + 24 : l3 + 40]), ident, proto, True
            )
        frag, off = u16(data, fh + 2) & 1, off + 8
    if proto not in (TCP, UDP):
        return TC_PASS
    l4 = l3 + off
    if l4 + (20 if proto == TCP else 8) > n:
        return TC_PASS
    view = _view6(data, l3, 40 + plen, off, l4, proto)
    return replace(view, frag=frag, ip_id=ident) if frag else view
