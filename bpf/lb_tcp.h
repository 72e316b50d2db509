// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// TCP: the segment's fields the data path needs, per-direction sequence and window tracking, the
// window checks of RST and FIN (RFC 5961 style), and the flags that open and close a flow
// (docs/datapath.md#tcp-validation).
#ifndef LBTUI_LB_TCP_H
#define LBTUI_LB_TCP_H

#include "lb.h"

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

#define LB_SEG_OUTSIDE 0       // outside the window: drop (RST) or ignore (FIN)
#define LB_SEG_INSIDE 1        // inside the window, not where the sender's next byte is
#define LB_SEG_EXACT 2         // exactly the sender's next sequence number (or nothing to check with)

static __always_inline int flow_closed(__u64 flags)
{
    return (flags & LB_CT_F_RST) ||
           ((flags & (LB_CT_F_FIN_IN | LB_CT_F_FIN_OUT)) == (LB_CT_F_FIN_IN | LB_CT_F_FIN_OUT));
}

#endif
