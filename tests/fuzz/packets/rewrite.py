# SPDX-License-Identifier: Apache-2.0
"""What a correct output looks like: a NAT rewrite that touches only its fields and keeps every
checksum's residual, or a frame passed through untouched.

Checksums are verified with wire.py's one's complement code, not the program's: a rewrite must keep
every checksum's residual (so a frame whose checksums verified still verifies, and a broken one stays
exactly as broken), and a zero UDP checksum stays zero. IPv6 has no header checksum: its residual is
left out, and the L4 pseudo header takes the 16-byte addresses.
"""

from __future__ import annotations

from tests.fuzz.packets.parse import View
from tests.fuzz.packets.topology import Endpoint
from tests.fuzz.packets.wire import TCP, UDP, endpoint_text, ones_sum, pseudo_header_sum, u16

XDP_DROP, XDP_PASS = 1, 2
TC_ACT_OK = 0
TC_ACT_UNSPEC = 0xFFFFFFFF  # -1 as a test run's retval (lbtui_tc_reply: a packet that is no reply of ours)
TC_ACT_SHOT = 2


def l4_cover(data: bytes, view: View) -> tuple[int, bool]:
    """(length the L4 checksum covers per the headers, whether that fits in the frame)."""
    if view.proto == TCP:
        length = view.ip_len - view.ihl_len
    else:
        length = u16(data, view.l4 + 4)
    fits = length >= (20 if view.proto == TCP else 8) and view.l4 + length <= len(data)
    return length, fits


def residuals(data: bytes, view: View) -> tuple[int, int, bool, bool]:
    """(IP header residual, L4 residual, IP header complete, L4 coverage complete).

    A residual is the one's complement sum over everything the checksum covers, checksum included:
    0xffff (or 0) when it verifies. Incomplete ranges (headers that claim more than the frame holds,
    only possible on the TC side) are summed as far as they go, which still contains every field a
    rewrite touches, so comparing residuals before and after is meaningful for them too.
    """
    if view.v6:
        ip_res, ip_whole = 0, True  # no header checksum
    else:
        end_ip = min(view.l3 + view.ihl_len, len(data))
        ip_res, ip_whole = ones_sum(data[view.l3 : end_ip]), end_ip == view.l3 + view.ihl_len
    length, fits = l4_cover(data, view)
    header = 20 if view.proto == TCP else 8
    end_l4 = view.l4 + max(header, min(max(length, 0), len(data) - view.l4))
    l4_res = ones_sum(data[view.l4 : end_l4], _pseudo(data, view, length))
    return ip_res, l4_res, ip_whole, fits


def _pseudo(data: bytes, view: View, length: int) -> int:
    """The pseudo header's sum (the IPv6 one sums the same: the addresses, the protocol, the length)."""
    src, dst = view.src_off, view.dst_off
    return pseudo_header_sum(data[src : src + view.alen], data[dst : dst + view.alen], view.proto, length)


def same_residual(a: int, b: int) -> bool:
    return a % 0xFFFF == b % 0xFFFF


def checksums_verify(data: bytes, view: View) -> tuple[bool, bool]:
    """(IP header checksum verifies, L4 checksum verifies or is an absent UDP checksum)."""
    ip_res, l4_res, ip_whole, l4_whole = residuals(data, view)
    udp_none = view.proto == UDP and u16(data, view.check_off) == 0
    return ip_whole and ip_res % 0xFFFF == 0, udp_none or (l4_whole and l4_res % 0xFFFF == 0)


def check_untouched(outcome: str, data: bytes, verdict: int | None, out: bytes, ok: int) -> list[str]:
    """The program must return `ok` with the frame exactly as it came in."""
    if verdict != ok:
        return [f"{outcome}: expected verdict {ok} and the frame untouched, got verdict {verdict}"]
    if out != data:
        changed = [i for i in range(min(len(out), len(data))) if out[i] != data[i]]
        return [
            f"{outcome}: expected the frame untouched, but bytes {changed[:16]} changed"
            + (f" and the length went {len(data)} -> {len(out)}" if len(out) != len(data) else "")
        ]
    return []


def check_refused(verdict: int | None) -> list[str]:
    """The kernel must refuse the test run (EINVAL: the frame is too short for the hook)."""
    if verdict is not None:
        return [f"expected the kernel to refuse this test run (EINVAL), got verdict {verdict}"]
    return []


def check_rewrite(
    data: bytes, verdict: int | None, out: bytes, view: View, side: str, targets: set[Endpoint]
) -> list[str]:
    """A NAT rewrite: verdict PASS/OK, only the intended bytes changed, target endpoint, checksums."""
    ok = XDP_PASS if side == "dst" else TC_ACT_OK
    what = "DNAT" if side == "dst" else "SNAT"
    if verdict != ok:
        return [f"{what}: expected verdict {ok}, got {verdict}"]
    if len(out) != len(data):
        return [f"{what}: the frame length changed {len(data)} -> {len(out)}"]
    l3, l4, alen = view.l3, view.l4, view.alen
    addr_off = view.dst_off if side == "dst" else view.src_off
    port_off = l4 + (2 if side == "dst" else 0)
    allowed = {port_off, port_off + 1, view.check_off, view.check_off + 1}
    if not view.v6:
        allowed.update((l3 + 10, l3 + 11))
    allowed.update(range(addr_off, addr_off + alen))
    problems = []
    stray = [i for i in range(len(data)) if data[i] != out[i] and i not in allowed]
    if stray:
        problems.append(f"{what}: bytes outside address/port/checksums changed: {stray[:16]}")
    endpoint = (bytes(out[addr_off : addr_off + alen]), u16(out, port_off))
    if endpoint not in targets:
        want = sorted(endpoint_text(a, p) for a, p in targets)
        problems.append(f"{what}: rewritten to {endpoint_text(*endpoint)}, expected one of {want}")
    ip_in, l4_in, _, l4_whole = residuals(data, view)
    ip_out, l4_out, _, _ = residuals(out, view)
    if not same_residual(ip_in, ip_out):
        problems.append(
            f"{what}: IP header checksum residual {ip_in:#06x} -> {ip_out:#06x} "
            f"({'the input verified, the output does not' if ip_in % 0xFFFF == 0 else 'not kept'})"
        )
    check_in, check_out = u16(data, view.check_off), u16(out, view.check_off)
    if view.proto == UDP and check_in == 0:
        if check_out != 0:
            problems.append(f"{what}: a zero UDP checksum became {check_out:#06x}")
    elif view.proto == UDP and check_out == 0:
        problems.append(f"{what}: a UDP checksum became 0 (means 'no checksum'), expected 0xffff")
    elif not same_residual(l4_in, l4_out):
        state = "the input verified, the output does not" if l4_whole and l4_in % 0xFFFF == 0 else "not kept"
        problems.append(f"{what}: L4 checksum residual {l4_in:#06x} -> {l4_out:#06x} ({state})")
    return problems


CSUM_VERIFY_MAX = 128  # lb_csum.h LB_CSUM_VERIFY_MAX


def l4_csum_ok(data: bytes, view: View) -> int:
    """lb_csum.h lb_l4_csum_ok: 1 the TCP/UDP checksum verifies (an absent UDP one does), 0 it does
    not, -1 the segment is too long to check in the data path."""
    length = view.ip_len - view.ihl_len
    if length > CSUM_VERIFY_MAX:
        return -1
    if view.proto == UDP and u16(data, view.l4 + 6) == 0:
        return 1
    return 1 if ones_sum(data[view.l4 : view.l4 + length], _pseudo(data, view, length)) == 0xFFFF else 0
