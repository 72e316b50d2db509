# SPDX-License-Identifier: Apache-2.0
"""The oracle's ICMP and fragment rules (bpf/lb_icmp.h): which ICMP errors quote a tracked flow, and
what a correct translation of one (or of a later fragment of a reply) looks like.

Checks follow rewrite.py's approach: only the intended bytes change, the rewritten addresses and
ports are the flow's, and every checksum keeps its residual (so a verifying checksum still verifies).
The quoted TCP/UDP checksum cannot be verified (the quote is not the whole segment): the sum of the
fields it covers that change, plus the checksum itself, must stay the same.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from tests.fuzz.packets.parse import Fragment, IcmpView
from tests.fuzz.packets.rewrite import same_residual
from tests.fuzz.packets.wire import TCP, UDP, ones_sum, u16

ICMP_TYPES = (3, 11)  # destination unreachable, time exceeded


@dataclass(frozen=True)
class Quote:
    icmp: int  # offset of the ICMP header
    inner: int  # the quoted IP header
    inner_ihl: int
    l4: int  # the quoted TCP/UDP header
    proto: int
    saddr: bytes
    daddr: bytes
    sport: int
    dport: int
    check_off: int | None  # the quoted L4 checksum, when the quote holds it (and a UDP one is set)


def quote_of(data: bytes, icmp: IcmpView) -> Quote | None:
    """lb_icmp.h icmp_quote: the quoted packet of an ICMP error, or None."""
    n = len(data)
    ic = icmp.l3 + (icmp.ihl_len & 0x3C)
    if ic + 8 > n or ic + 8 > icmp.ip_end:
        return None
    if data[ic] not in ICMP_TYPES:
        return None
    inner = ic + 8
    if inner + 20 > n:
        return None
    ihl = data[inner] & 15
    if data[inner] >> 4 != 4 or ihl < 5 or u16(data, inner + 6) & 0x1FFF:
        return None
    proto = data[inner + 9]
    if proto not in (TCP, UDP):
        return None
    l4 = inner + ((ihl * 4) & 0x3C)
    if l4 + 8 > n or l4 + 8 > icmp.ip_end:
        return None
    check_off: int | None = l4 + (16 if proto == TCP else 6)
    assert check_off is not None
    if check_off + 2 > n or check_off + 2 > icmp.ip_end or (proto == UDP and u16(data, check_off) == 0):
        check_off = None
    return Quote(
        ic,
        inner,
        ihl * 4,
        l4,
        proto,
        bytes(data[inner + 12 : inner + 16]),
        bytes(data[inner + 16 : inner + 20]),
        u16(data, l4),
        u16(data, l4 + 2),
        check_off,
    )


def verdict_or_length(what: str, data: bytes, verdict: int | None, out: bytes, ok: int) -> list[str]:
    """A translation's first checks: the verdict, and a frame of the same length."""
    if verdict != ok:
        return [f"{what}: expected verdict {ok}, got {verdict}"]
    if len(out) != len(data):
        return [f"{what}: the frame length changed {len(data)} -> {len(out)}"]
    return []


def check_icmp_rewrite(
    data: bytes,
    verdict: int | None,
    out: bytes,
    icmp: IcmpView,
    q: Quote,
    to_backend: bool,
    ip: bytes,
    port: int,
    ok: int,
) -> list[str]:
    """to_backend (XDP): outer destination and quoted source become the backend's; else (TC): outer
    source and quoted destination become the VIP's."""
    what = "ICMP to the backend" if to_backend else "ICMP to the client"
    if wrong := verdict_or_length(what, data, verdict, out, ok):
        return wrong
    l3 = icmp.l3
    outer_addr = l3 + (16 if to_backend else 12)
    quoted_addr = q.inner + (12 if to_backend else 16)
    quoted_port = q.l4 + (0 if to_backend else 2)
    allowed = {
        l3 + 10,
        l3 + 11,
        q.icmp + 2,
        q.icmp + 3,
        q.inner + 10,
        q.inner + 11,
        quoted_port,
        quoted_port + 1,
    }
    allowed.update(range(outer_addr, outer_addr + 4))
    allowed.update(range(quoted_addr, quoted_addr + 4))
    if q.check_off is not None:
        allowed.update((q.check_off, q.check_off + 1))
    problems = []
    stray = [i for i in range(len(data)) if data[i] != out[i] and i not in allowed]
    if stray:
        problems.append(f"{what}: bytes outside the translated fields changed: {stray[:16]}")
    for off, name in ((outer_addr, "outer address"), (quoted_addr, "quoted address")):
        if out[off : off + 4] != ip:
            problems.append(
                f"{what}: {name} {socket.inet_ntoa(out[off : off + 4])}, expected {socket.inet_ntoa(ip)}"
            )
    if u16(out, quoted_port) != port:
        problems.append(f"{what}: quoted port {u16(out, quoted_port)}, expected {port}")
    ihl = icmp.ihl_len
    end = min(icmp.ip_end, len(data))
    inner_end = min(q.inner + q.inner_ihl, len(data))
    for name, lo, hi in (
        ("outer IP header", l3, l3 + ihl),
        ("ICMP", q.icmp, end),
        ("quoted IP header", q.inner, inner_end),
    ):
        before, after = ones_sum(data[lo:hi]), ones_sum(out[lo:hi])
        if not same_residual(before, after):
            problems.append(f"{what}: {name} checksum residual {before:#06x} -> {after:#06x}")
    if q.check_off is not None:
        before, after = _covered(data, q), _covered(out, q)
        if not same_residual(before, after):
            problems.append(f"{what}: quoted L4 checksum residual {before:#06x} -> {after:#06x}")
        if q.proto == UDP and u16(out, q.check_off) == 0:
            problems.append(f"{what}: a quoted UDP checksum became 0 (means 'none')")
    return problems


def _covered(data: bytes, q: Quote) -> int:
    """The quoted checksum with the fields it covers that a translation changes."""
    assert q.check_off is not None
    fields = data[q.inner + 12 : q.inner + 20] + data[q.l4 : q.l4 + 4] + data[q.check_off : q.check_off + 2]
    return ones_sum(fields)


def check_fragment_rewrite(
    data: bytes, verdict: int | None, out: bytes, frag: Fragment, vip: bytes, ok: int
) -> list[str]:
    """A later fragment of a reply: only its source address (and the IP checksum) change."""
    if wrong := verdict_or_length("fragment", data, verdict, out, ok):
        return wrong
    l3 = frag.l3
    allowed = {l3 + 10, l3 + 11, *range(l3 + 12, l3 + 16)}
    problems = []
    stray = [i for i in range(len(data)) if data[i] != out[i] and i not in allowed]
    if stray:
        problems.append(f"fragment: bytes outside the source address and checksum changed: {stray[:16]}")
    if out[l3 + 12 : l3 + 16] != vip:
        problems.append(f"fragment: source {socket.inet_ntoa(out[l3 + 12 : l3 + 16])}, expected the VIP")
    ihl = (data[l3] & 15) * 4
    hi = min(l3 + ihl, len(data))
    if not same_residual(ones_sum(data[l3:hi]), ones_sum(out[l3:hi])):
        problems.append("fragment: IP header checksum residual not kept")
    return problems
