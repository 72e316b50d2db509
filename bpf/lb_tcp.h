// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// TCP: the segment's fields the data path needs, per-direction sequence and window tracking, the
// window checks of RST and FIN (RFC 5961 style), and the flags that open and close a flow
// (docs/datapath.md#tcp-validation).
#ifndef LBTUI_LB_TCP_H
#define LBTUI_LB_TCP_H

#include "lb.h"
#include "lb_ct.h"

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

#define LB_NO_WSCALE 0xff
#define LB_MAX_WSCALE 14

// one segment, as parsed (host byte order)
struct lb_seg {
    __u32 seq;
    __u32 ack;
    __u32 end;                 // seq + data + SYN + FIN: where the next segment starts
    __u16 window;
    __u8 flags;
    __u8 wscale;               // SYN only: the shift offered, LB_NO_WSCALE if none
};

// The window-scale shift a SYN offers (capped at 14, RFC 7323), or LB_NO_WSCALE: a walk over the
// (at most 40) option bytes, unrolled by hand so that every read is at a constant offset from the
// header (a loop with a data-dependent index makes the verifier's work explode, and clang does not
// unroll one with several exits).
#define LB_WSCALE_STEP(j)                                                           \
    if (next == (j)) {                                                              \
        if ((j) >= len || (void *)(opt + (j) + 1) > data_end)                       \
            return LB_NO_WSCALE;                                                    \
        __u8 kind = opt[j];                                                         \
        if (kind == 0)                                                              \
            return LB_NO_WSCALE;                                                    \
        if (kind == 1) {                                                            \
            next = (j) + 1;                                                         \
        } else {                                                                    \
            if ((void *)(opt + (j) + 2) > data_end)                                 \
                return LB_NO_WSCALE;                                                \
            __u8 olen = opt[(j) + 1];                                               \
            if (olen < 2)                                                           \
                return LB_NO_WSCALE;                                                \
            if (kind == 3 && olen == 3) {                                           \
                if ((j) + 3 > len || (void *)(opt + (j) + 3) > data_end)            \
                    return LB_NO_WSCALE;                                            \
                __u8 shift = opt[(j) + 2];                                          \
                return shift > LB_MAX_WSCALE ? LB_MAX_WSCALE : shift;               \
            }                                                                       \
            next = (j) + olen;                                                      \
        }                                                                           \
    }
#define LB_WSCALE_STEP4(j) LB_WSCALE_STEP(j) LB_WSCALE_STEP((j) + 1) LB_WSCALE_STEP((j) + 2) \
    LB_WSCALE_STEP((j) + 3)

static __always_inline __u8 tcp_wscale(struct tcphdr *th, void *data_end)
{
    __u8 *opt = (__u8 *)(th + 1);
    __u32 len = th->doff * 4 - sizeof(*th);
    __u32 next = 0;
    LB_WSCALE_STEP4(0) LB_WSCALE_STEP4(4) LB_WSCALE_STEP4(8) LB_WSCALE_STEP4(12) LB_WSCALE_STEP4(16)
    LB_WSCALE_STEP4(20) LB_WSCALE_STEP4(24) LB_WSCALE_STEP4(28) LB_WSCALE_STEP4(32) LB_WSCALE_STEP4(36)
    return LB_NO_WSCALE;
}

static __always_inline void tcp_segment_of(struct tcphdr *th, __u32 payload, void *data_end, struct lb_seg *seg)
{
    seg->seq = ntohl(th->seq);
    seg->ack = ntohl(th->ack_seq);
    seg->flags = ((__u8 *)th)[13];
    seg->window = ntohs(th->window);
    seg->end = seg->seq + payload + ((seg->flags & TCP_SYN) ? 1 : 0) + ((seg->flags & TCP_FIN) ? 1 : 0);
    seg->wscale = (seg->flags & TCP_SYN) ? tcp_wscale(th, data_end) : LB_NO_WSCALE;
}

static __always_inline int seq_after(__u32 a, __u32 b)
{
    return (__s32)(a - b) > 0;
}

// This direction's sequence and window, from one of its segments (not a RST). `e` is the entry of
// the segment's direction, `other` the other direction's (0 if missing). Window scaling applies
// when both SYNs offered it: the client's SYN sets its own LB_CT_F_WSCALE; the backend's SYN-ACK
// sets it on the reverse entry only if the client's did too.
static __always_inline void tcp_track(struct lb_ct_entry *e, struct lb_ct_entry *other, struct lb_seg *seg)
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

#define LB_SEG_OUTSIDE 0       // outside the window: drop (RST) or ignore (FIN)
#define LB_SEG_INSIDE 1        // inside the window, not where the sender's next byte is
#define LB_SEG_EXACT 2         // exactly the sender's next sequence number (or nothing to check with)

// Where a RST or FIN lies: its sender's entry `e` knows the next sequence number, the other
// direction's entry `other` the window the receiver offers. Without both, the flow is not
// checkable and the segment counts as exact. The accepted range is the receiver's window on both
// sides of the next sequence number (the load balancer may be ahead of the receiver by up to one
// window of segments lost behind it).
static __always_inline int tcp_in_window(struct lb_ct_entry *e, struct lb_ct_entry *other, __u32 seq)
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
static __always_inline __u64 tcp_flow_flags(struct lb_ct_entry *fwd, struct lb_seg *seg, int from_backend,
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

static __always_inline int flow_closed(__u64 flags)
{
    return (flags & LB_CT_F_RST) ||
           ((flags & (LB_CT_F_FIN_IN | LB_CT_F_FIN_OUT)) == (LB_CT_F_FIN_IN | LB_CT_F_FIN_OUT));
}

// A flow that FIN both ways or an accepted RST just closed: account it once (closes, duration, an
// event for the access log) and, if it was established, move it to the transient table.
static __always_inline void tcp_close(int table, struct lb_ct_key *fk, struct lb_ct_entry *fwd,
                                      struct lb_ct_entry *rev, __u64 flags, __u64 now)
{
    __s64 old = ct_mark_closed(fwd);
    if (old < 0)
        return;                                     // another CPU (or the sweep) won the race
    if (old & LB_CT_F_EST) {
        struct lb_backend_stats *bs = backend_stats(fwd->backend_id);
        if (bs)
            bs->closes += 1;
        record_latency(fwd->backend_id, 1, now - fwd->created_ns);
    }
    if (service_wants(fwd, LB_SVC_F_EV_CLOSED))
        emit_event(LB_EV_CLOSED, fwd, rev, (flags & LB_CT_F_RST) ? LB_CLOSE_RST : LB_CLOSE_FIN, now);
    if (table == LB_TBL_ESTABLISHED)
        ct_demote(fk, fwd);
}

#endif
