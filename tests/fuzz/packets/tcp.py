# SPDX-License-Identifier: Apache-2.0
"""The oracle's TCP rules (bpf/lb_tcp.h): a segment's fields, sequence and window tracking per
direction, where a RST or FIN lies in the window, and the flow flags a segment sets."""

from __future__ import annotations

from dataclasses import dataclass

from tests.fuzz.packets.wire import u16

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
NO_WSCALE = 0xFF
MAX_WSCALE = 14
OUTSIDE, INSIDE, EXACT = 0, 1, 2
MASK32 = 0xFFFFFFFF

CT_F_SYNACK, CT_F_FIN_IN, CT_F_FIN_OUT, CT_F_RST, CT_F_CLOSED, CT_F_FAILED = 1, 2, 4, 8, 0x10, 0x20
CT_F_SYN, CT_F_EST, CT_F_SYN_RETX = 0x40, 0x80, 0x100
CT_F_SEQ, CT_F_WIN, CT_F_WSCALE = 0x200, 0x400, 0x800


@dataclass(frozen=True)
class Segment:
    seq: int
    ack: int
    end: int  # seq + data + SYN + FIN
    window: int
    flags: int
    wscale: int  # SYN only: the shift offered (NO_WSCALE: none)


def wscale_of(data: bytes, l4: int, doff: int) -> int:
    """lb_tcp.h tcp_wscale: the window-scale option of a SYN, walked option by option."""
    opt = l4 + 20
    length = doff * 4 - 20
    j = 0
    while j < 40:
        if j >= length or opt + j + 1 > len(data):
            return NO_WSCALE
        kind = data[opt + j]
        if kind == 0:
            return NO_WSCALE
        if kind == 1:
            j += 1
            continue
        if opt + j + 2 > len(data):
            return NO_WSCALE
        olen = data[opt + j + 1]
        if olen < 2:
            return NO_WSCALE
        if kind == 3 and olen == 3:
            if j + 3 > length or opt + j + 3 > len(data):
                return NO_WSCALE
            return min(data[opt + j + 2], MAX_WSCALE)
        j += olen
    return NO_WSCALE


def segment_of(data: bytes, l4: int, payload: int) -> Segment:
    flags = data[l4 + 13]
    seq = int.from_bytes(data[l4 + 4 : l4 + 8], "big")
    end = (seq + payload + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)) & MASK32
    doff = data[l4 + 12] >> 4
    return Segment(
        seq=seq,
        ack=int.from_bytes(data[l4 + 8 : l4 + 12], "big"),
        end=end,
        window=u16(data, l4 + 14),
        flags=flags,
        wscale=wscale_of(data, l4, doff) if flags & SYN else NO_WSCALE,
    )


def seq_after(a: int, b: int) -> bool:
    diff = (a - b) & MASK32
    return diff != 0 and diff < 0x80000000


def track(e, other, seg: Segment) -> None:  # type: ignore[no-untyped-def]
    """lb_tcp.h tcp_track: the sender's entry `e` (the other direction's `other`, or None)."""
    from tests.fuzz.packets.conntrack import DIR_FORWARD, DIR_REVERSE

    add = CT_F_SEQ | CT_F_WIN
    shift = 0
    if seg.flags & SYN:
        e.seq_first = seg.seq
        if seg.wscale != NO_WSCALE and (
            e.dir == DIR_FORWARD or (other is not None and other.flags & CT_F_WSCALE)
        ):
            e.wscale = seg.wscale
            add |= CT_F_WSCALE
    elif e.flags & CT_F_WSCALE:
        if e.dir == DIR_REVERSE or (other is not None and other.flags & CT_F_WSCALE):
            shift = e.wscale
    if not e.flags & CT_F_SEQ or seq_after(seg.end, e.seq_next):
        e.seq_next = seg.end
    e.window = seg.window
    e.win_shift = shift
    e.flags |= add


PLAIN_MAX_ADVANCE = 16 << 20  # lb_tcp_flow.h LB_PLAIN_MAX_ADVANCE


def is_plain(e, seg: Segment | None) -> bool:  # type: ignore[no-untyped-def]
    """lb_tcp_flow.h tcp_plain: UDP, or a segment without SYN/FIN/RST whose sequence and window are known."""
    if seg is None:
        return True
    both = CT_F_SEQ | CT_F_WIN
    return not seg.flags & (SYN | FIN | RST) and e.flags & both == both


def track_plain(e, seg: Segment) -> None:  # type: ignore[no-untyped-def]
    """lb_tcp_flow.h tcp_track_plain: tracking without the other direction's entry."""
    nxt = e.seq_next
    if (seg.seq - nxt) & MASK32 > PLAIN_MAX_ADVANCE and (nxt - seg.seq) & MASK32 > PLAIN_MAX_ADVANCE:
        return
    if seq_after(nxt, seg.end):
        return
    e.seq_next = seg.end
    e.window = seg.window


def in_window(e, other, seq: int) -> int:  # type: ignore[no-untyped-def]
    """lb_tcp.h tcp_in_window: where a RST or FIN from `e`'s side lies."""
    if other is None or not e.flags & CT_F_SEQ or not other.flags & CT_F_WIN:
        return EXACT
    nxt = e.seq_next
    if seq == nxt:
        return EXACT
    win = (other.window << (other.win_shift & 0x0F)) & MASK32
    if ((seq - (nxt - win)) & MASK32) <= (2 * win) & MASK32:
        return INSIDE
    return OUTSIDE


def flow_flags(
    fwd, seg: Segment, from_backend: bool, accept_rst: bool, accept_fin: bool
) -> tuple[int, int, bool]:  # type: ignore[no-untyped-def]
    """lb_tcp.h tcp_flow_flags: (flags before, flags after, a connection failure was counted)."""
    add = 0
    if seg.flags & RST and accept_rst:
        add |= CT_F_RST
    if seg.flags & FIN and accept_fin:
        add |= CT_F_FIN_OUT if from_backend else CT_F_FIN_IN
    if from_backend and seg.flags & (SYN | ACK) == SYN | ACK and not seg.flags & RST:
        add |= CT_F_SYNACK
    old = fwd.flags
    fwd.flags |= add
    failed = False
    if from_backend and add & CT_F_RST and old & CT_F_SYN and not old & (CT_F_SYNACK | CT_F_FAILED):
        fwd.flags |= CT_F_FAILED
        failed = True
    return old, old | add, failed


def closed(flags: int) -> bool:
    return bool(flags & CT_F_RST) or flags & (CT_F_FIN_IN | CT_F_FIN_OUT) == CT_F_FIN_IN | CT_F_FIN_OUT
