// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// lbtui: per-family template (lb_fam.h)
// TCP state of a tracked flow: sequence and window tracking, the window checks of RST and FIN, the
// flags that open and close a flow (docs/datapath.md#tcp-validation). Segment parsing: lb_tcp.h.

// This direction's sequence and window, from one of its segments (not a RST). `e` is the entry of
// the segment's direction, `other` the other direction's (0 if missing). Window scaling applies
// when both SYNs offered it: the client's SYN sets its own LB_CT_F_WSCALE; the backend's SYN-ACK
// sets it on the reverse entry only if the client's did too.
static __always_inline void LB_F(tcp_track)(LB_CT_ENTRY *e, LB_CT_ENTRY *other, struct lb_seg *seg)
{
    __u64 set = LB_CT_F_SEQ | LB_CT_F_WIN;
    __u8 shift = 0;
    if (seg->flags & TCP_SYN) {
        e->seq_first = seg->seq;
        if (seg->wscale != LB_NO_WSCALE &&
            (e->dir == LB_DIR_FORWARD || (other && (other->flags & LB_CT_F_WSCALE)))) {
            e->wscale = seg->wscale;
            set |= LB_CT_F_WSCALE;
        }
    } else if (e->flags & LB_CT_F_WSCALE) {
        // the client's scaling counts only once the backend agreed (its reverse entry says so)
        if (e->dir == LB_DIR_REVERSE || (other && (other->flags & LB_CT_F_WSCALE)))
            shift = e->wscale;
    }
    if (!(e->flags & LB_CT_F_SEQ) || seq_after(seg->end, e->seq_next))
        e->seq_next = seg->end;
    e->window = seg->window;
    e->win_shift = shift;
    if ((e->flags & set) != set)
        __sync_fetch_and_or(&e->flags, set);
}

// A packet of an established flow that cannot change the flow's state: UDP, or a TCP segment
// without SYN, FIN or RST whose direction's sequence and window are known already (set by the
// handshake through tcp_track, which checked them against the other direction's window).
static __always_inline int LB_F(tcp_plain)(LB_CT_ENTRY *e, int is_tcp, struct lb_seg *seg)
{
    return !is_tcp || (!(seg->flags & (TCP_SYN | TCP_FIN | TCP_RST)) &&
                       (e->flags & (LB_CT_F_SEQ | LB_CT_F_WIN)) == (LB_CT_F_SEQ | LB_CT_F_WIN));
}

// tcp_track for such a segment, without the other direction's entry: the window scale is the one
// the handshake settled (win_shift stays), and instead of the receiver's window the segment must
// start no further than LB_PLAIN_MAX_ADVANCE beyond this direction's next sequence number (and end
// at or after it) to move the sequence and window. A blind segment lands there about as rarely as
// inside a real window; one behind it (a retransmission) changes nothing.
#ifndef LB_PLAIN_MAX_ADVANCE
#define LB_PLAIN_MAX_ADVANCE (16u << 20)
#endif
static __always_inline void LB_F(tcp_track_plain)(LB_CT_ENTRY *e, struct lb_seg *seg)
{
    __u32 next = e->seq_next;
    if (seg->seq - next > LB_PLAIN_MAX_ADVANCE && next - seg->seq > LB_PLAIN_MAX_ADVANCE)
        return;                                     // nowhere near the flow's sequence
    if (seq_after(next, seg->end))
        return;                                     // wholly behind: a retransmission
    if (seg->end != next)
        e->seq_next = seg->end;
    if (e->window != seg->window)
        e->window = seg->window;
}

// Where a RST or FIN lies: its sender's entry `e` knows the next sequence number, the other
// direction's entry `other` the window the receiver offers. Without both, the flow is not
// checkable and the segment counts as exact. The accepted range is the receiver's window on both
// sides of the next sequence number (the load balancer may be ahead of the receiver by up to one
// window of segments lost behind it).
static __always_inline int LB_F(tcp_in_window)(LB_CT_ENTRY *e, LB_CT_ENTRY *other, __u32 seq)
{
    if (!other || !(e->flags & LB_CT_F_SEQ) || !(other->flags & LB_CT_F_WIN))
        return LB_SEG_EXACT;
    __u32 next = e->seq_next;
    if (seq == next)
        return LB_SEG_EXACT;
    __u32 win = (__u32)other->window << (other->win_shift & 0x0f);
    if (seq - (next - win) <= 2 * win)
        return LB_SEG_INSIDE;
    return LB_SEG_OUTSIDE;
}

// Flow flags from one segment of a tracked flow that passed the checks; `from_backend` tells the
// direction. Returns the flags before and after in *old/*now (for the caller's close handling).
static __always_inline __u64 LB_F(tcp_flow_flags)(LB_CT_ENTRY *fwd, struct lb_seg *seg, int from_backend,
                                            int accept_rst, int accept_fin, __u64 now, __u64 *old_out)
{
    __u64 set = 0;
    if ((seg->flags & TCP_RST) && accept_rst)
        set |= LB_CT_F_RST;
    if ((seg->flags & TCP_FIN) && accept_fin)
        set |= from_backend ? LB_CT_F_FIN_OUT : LB_CT_F_FIN_IN;
    if (from_backend && (seg->flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK) && !(seg->flags & TCP_RST))
        set |= LB_CT_F_SYNACK;
    __u64 old = set ? __sync_fetch_and_or(&fwd->flags, set) : fwd->flags;
    *old_out = old;
    if ((set & LB_CT_F_SYNACK) && !(old & LB_CT_F_SYNACK))
        fwd->synack_ns = now;
    // a reset from the backend before any SYN-ACK to a client's SYN: the connection was refused
    if (from_backend && (set & LB_CT_F_RST) && (old & LB_CT_F_SYN) &&
        !(old & (LB_CT_F_SYNACK | LB_CT_F_FAILED))) {
        __u64 before = __sync_fetch_and_or(&fwd->flags, LB_CT_F_FAILED);
        struct lb_backend_stats *bs = backend_stats(fwd->backend_id);
        if (bs && !(before & LB_CT_F_FAILED))
            bs->conn_failures += 1;
    }
    return old | set;
}

// A flow that FIN both ways or an accepted RST just closed: account it once (closes, duration, an
// event for the access log) and, if it was established, move it to the transient table.
static __always_inline void LB_F(tcp_close)(int table, LB_CT_KEY *fk, LB_CT_ENTRY *fwd,
                                      LB_CT_ENTRY *rev, __u64 flags, __u64 now)
{
    __s64 old = LB_F(ct_mark_closed)(fwd);
    if (old < 0)
        return;                                     // another CPU (or the sweep) won the race
    if (old & LB_CT_F_EST) {
        struct lb_backend_stats *bs = backend_stats(fwd->backend_id);
        if (bs)
            bs->closes += 1;
        record_latency(fwd->backend_id, 1, now - fwd->created_ns);
    }
    if (LB_F(service_wants)(fwd, LB_SVC_F_EV_CLOSED))
        LB_F(emit_event)(LB_EV_CLOSED, fwd, rev, (flags & LB_CT_F_RST) ? LB_CLOSE_RST : LB_CLOSE_FIN, now);
    if (table == LB_TBL_ESTABLISHED)
        LB_F(ct_demote)(fk, fwd);
}

