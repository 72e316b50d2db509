# SPDX-License-Identifier: Apache-2.0
"""The oracle's ICMPv6 and IPv6 fragment rules (bpf/lb_icmp6.h): which ICMPv6 errors quote a tracked
flow, and what a correct translation of one (or of a later fragment of a reply) looks like.

Checked two ways, byte for byte: the output must equal the frame lb_icmp6.h's rules make (the outer
address, the quoted address and port replaced, every checksum updated by RFC 1624 in the order the
program does it), and, independently of that model, every checksum must keep its residual: the
ICMPv6 one over its pseudo header (it covers the outer addresses), the quoted TCP/UDP one over the
fields it covers that change. A later fragment only gets the VIP as its source (no checksum).
"""

from __future__ import annotations

from tests.fuzz.packets.icmp import Quote, verdict_or_length
from tests.fuzz.packets.parse import Fragment, IcmpView
from tests.fuzz.packets.rewrite import same_residual
from tests.fuzz.packets.wire import ICMP6, TCP, UDP, ntop, ones_sum, pseudo_header_sum, put16, u16

ICMP6_TYPES = (1, 2, 3)  # destination unreachable, packet too big, time exceeded
FRAGMENT_HEADER = 44


def quote6_of(data: bytes, icmp: IcmpView) -> Quote | None:
    """lb_icmp6.h icmp6_quote: the quoted packet of an ICMPv6 error, or None."""
    n = len(data)
    ic = icmp.l3 + icmp.ihl_len
    if ic + 8 > n or ic + 8 > icmp.ip_end or data[ic] not in ICMP6_TYPES:
        return None
    inner = ic + 8
    if inner + 40 > n or data[inner] >> 4 != 6:
        return None
    proto, l4 = data[inner + 6], inner + 40
    if proto == FRAGMENT_HEADER:  # a first fragment's quote: its fragment header skipped
        if l4 + 8 > n or u16(data, l4 + 2) & 0xFFF8:
            return None
        proto, l4 = data[l4], l4 + 8
    if proto not in (TCP, UDP) or l4 + 8 > n or l4 + 8 > icmp.ip_end:
        return None
    check_off: int | None = l4 + (16 if proto == TCP else 6)
    assert check_off is not None
    if check_off + 2 > n or check_off + 2 > icmp.ip_end or (proto == UDP and u16(data, check_off) == 0):
        check_off = None
    return Quote(
        ic,
        inner,
        l4 - inner,
        l4,
        proto,
        bytes(data[inner + 8 : inner + 24]),
        bytes(data[inner + 24 : inner + 40]),
        u16(data, l4),
        u16(data, l4 + 2),
        check_off,
    )


def csum_replace(check: int, old: bytes, new: bytes) -> int:
    """lb_csum.h lb_csum_replace2/16: RFC 1624 HC' = ~(~HC + ~m + m') over the 16-bit words."""
    s = ~check & 0xFFFF
    for i in range(0, len(old), 2):
        s += (~u16(old, i) & 0xFFFF) + u16(new, i)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def translated6(data: bytes, icmp: IcmpView, q: Quote, to_backend: bool, ip: bytes, port: int) -> bytes:
    """The frame lb_icmp6.h makes of an error: to_backend (XDP) the quoted source and the outer
    destination become the backend's, else (TC) the quoted destination and the outer source the VIP's."""
    out = bytearray(data)
    addr_off = q.inner + (8 if to_backend else 24)
    port_off = q.l4 + (0 if to_backend else 2)
    old_ip, old_port = bytes(data[addr_off : addr_off + 16]), bytes(data[port_off : port_off + 2])
    new_port = port.to_bytes(2, "big")
    out[addr_off : addr_off + 16], out[port_off : port_off + 2] = ip, new_port
    icsum = csum_replace(csum_replace(u16(data, q.icmp + 2), old_ip, ip), old_port, new_port)
    if q.check_off is not None:
        old_check = bytes(data[q.check_off : q.check_off + 2])
        c = csum_replace(csum_replace(u16(old_check, 0), old_ip, ip), old_port, new_port)
        c = c or (0xFFFF if q.proto == UDP else 0)
        put16(out, q.check_off, c)
        icsum = csum_replace(icsum, old_check, c.to_bytes(2, "big"))
    outer = icmp.l3 + (24 if to_backend else 8)
    out[outer : outer + 16] = ip
    put16(out, q.icmp + 2, csum_replace(icsum, bytes(data[outer : outer + 16]), ip))
    return bytes(out)


def check_icmp6_rewrite(
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
    what = "ICMPv6 to the backend" if to_backend else "ICMPv6 to the client"
    if wrong := verdict_or_length(what, data, verdict, out, ok):
        return wrong
    problems = []
    want = translated6(data, icmp, q, to_backend, ip, port)
    wrong = [i for i in range(len(data)) if out[i] != want[i]]
    if wrong:
        fields = _field_names(icmp, q, to_backend)
        named = sorted({fields.get(i, "outside the translated fields") for i in wrong})
        problems.append(
            f"{what}: bytes {wrong[:16]} differ from lb_icmp6.h's translation ({', '.join(named)})"
        )
    outer = icmp.l3 + (24 if to_backend else 8)
    if out[outer : outer + 16] != ip:
        problems.append(f"{what}: outer address {ntop(out[outer : outer + 16])}, expected {ntop(ip)}")
    for name, before, after in (
        ("ICMPv6", _icmp_residual(data, icmp, q), _icmp_residual(out, icmp, q)),
        ("quoted L4", _covered(data, q), _covered(out, q)),
    ):
        if (name == "ICMPv6" or q.check_off is not None) and not same_residual(before, after):
            problems.append(f"{what}: {name} checksum residual {before:#06x} -> {after:#06x}")
    if q.check_off is not None and q.proto == UDP and u16(out, q.check_off) == 0:
        problems.append(f"{what}: a quoted UDP checksum became 0 (means 'none')")
    return problems


def _field_names(icmp: IcmpView, q: Quote, to_backend: bool) -> dict[int, str]:
    names: dict[int, str] = {q.icmp + 2: "ICMPv6 checksum", q.icmp + 3: "ICMPv6 checksum"}
    outer = icmp.l3 + (24 if to_backend else 8)
    quoted = q.inner + (8 if to_backend else 24)
    port = q.l4 + (0 if to_backend else 2)
    names.update({i: "outer address" for i in range(outer, outer + 16)})
    names.update({i: "quoted address" for i in range(quoted, quoted + 16)})
    names.update({port: "quoted port", port + 1: "quoted port"})
    if q.check_off is not None:
        names.update({q.check_off: "quoted L4 checksum", q.check_off + 1: "quoted L4 checksum"})
    return names


def _icmp_residual(data: bytes, icmp: IcmpView, q: Quote) -> int:
    """The ICMPv6 checksum's residual: its pseudo header (the outer addresses) and the message, as
    far as the frame holds it (that still contains every field a translation touches)."""
    end = min(icmp.ip_end, len(data))
    l3 = icmp.l3
    pseudo = pseudo_header_sum(data[l3 + 8 : l3 + 24], data[l3 + 24 : l3 + 40], ICMP6, icmp.ip_end - q.icmp)
    return ones_sum(data[q.icmp : end], pseudo)


def _covered(data: bytes, q: Quote) -> int:
    """The quoted checksum with the fields it covers that a translation changes."""
    if q.check_off is None:
        return 0
    fields = data[q.inner + 8 : q.inner + 40] + data[q.l4 : q.l4 + 4] + data[q.check_off : q.check_off + 2]
    return ones_sum(fields)


def check_fragment6_rewrite(
    data: bytes, verdict: int | None, out: bytes, frag: Fragment, vip: bytes, ok: int
) -> list[str]:
    """A later fragment of a SNATed IPv6 reply: only its source address changes, to the VIP."""
    if wrong := verdict_or_length("IPv6 fragment", data, verdict, out, ok):
        return wrong
    want = bytearray(data)
    want[frag.l3 + 8 : frag.l3 + 24] = vip
    differ = [i for i in range(len(data)) if out[i] != want[i]]
    if not differ:
        return []
    return [f"IPv6 fragment: bytes {differ[:16]} differ from the source address set to the VIP {ntop(vip)}"]
