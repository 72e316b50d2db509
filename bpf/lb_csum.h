// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// Checksums in XDP: incremental updates of a complete checksum, and a full check of short segments.
// (TC uses the kernel's helpers instead: they also handle CHECKSUM_PARTIAL skbs; docs/datapath.md#checksums.)
#ifndef LBTUI_LB_CSUM_H
#define LBTUI_LB_CSUM_H

#include "lb.h"

// segments up to this many bytes (TCP/UDP header + payload) get their checksum verified when they
// would change state (SYN, RST, FIN, a datagram starting a flow); longer ones are too costly here
#define LB_CSUM_VERIFY_MAX 128

// RFC 1624: HC' = ~(~HC + ~m + m') over raw 16-bit words (byte order does not matter for
// one's complement sums as long as every word is read the same way).
static __always_inline __u16 lb_csum_fold(__u32 s)
{
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (__u16)s;
}

static __always_inline __u16 lb_csum_replace4(__u16 check, __u32 from, __u32 to)
{
    __u32 s = (__u16)~check;
    s += (__u16)~(from & 0xffff);
    s += (__u16)~(from >> 16);
    s += to & 0xffff;
    s += to >> 16;
    return ~lb_csum_fold(s);
}

static __always_inline __u16 lb_csum_replace2(__u16 check, __u16 from, __u16 to)
{
    __u32 s = (__u16)~check;
    s += (__u16)~from;
    s += to;
    return ~lb_csum_fold(s);
}

// A new UDP checksum: a zero one means "none" and stays zero; a computed zero is sent as 0xffff.
static __always_inline __u16 lb_udp_csum(__u16 old, __u16 computed)
{
    if (old == 0)
        return 0;
    return computed ? computed : 0xffff;
}

// 1 if the TCP/UDP checksum of a segment of l4_len bytes at l4 verifies (a UDP checksum of 0:
// none, verifies; IPv6 never gets here with one), 0 if not, -1 if the segment is too long to check
// here or exceeds the frame. addr_sum: the pseudo header's addresses summed as 16-bit words.
static __always_inline int lb_l4_csum_ok(__u32 addr_sum, void *l4, __u32 l4_len, __u8 proto,
                                         void *data_end)
{
    if (l4_len > LB_CSUM_VERIFY_MAX)
        return -1;
    if (proto == IPPROTO_UDP) {
        struct udphdr *uh = l4;
        if ((void *)(uh + 1) > data_end)
            return -1;
        if (uh->check == 0)
            return 1;
    }
    __u32 s = addr_sum;
    s += bpf_htons(proto) + bpf_htons((__u16)l4_len);
    __u8 *p = l4;
    for (int i = 0; i < LB_CSUM_VERIFY_MAX / 2; i++) {
        if (2 * i + 1 >= l4_len)
            break;
        __u16 *w = (__u16 *)(p + 2 * i);
        if ((void *)(w + 1) > data_end)
            return -1;
        s += *w;
    }
    if (l4_len & 1) {
        __u8 *last = p + (l4_len & (LB_CSUM_VERIFY_MAX - 1)) - 1;
        if (l4_len > LB_CSUM_VERIFY_MAX || (void *)(last + 1) > data_end)
            return -1;
        // the odd byte is the high byte of a zero-padded word in network order
        __u16 word = 0;
        *(__u8 *)&word = *last;
        s += word;
    }
    return lb_csum_fold(s) == 0xffff;
}

// The checksum difference from one IPv6 address to another (what bpf_csum_diff returns, folded to
// 16 bits), for bpf_l4_csum_replace with BPF_F_PSEUDO_HDR and size 0
static __always_inline __u32 lb_csum_diff16(struct lb_addr6 *from, struct lb_addr6 *to)
{
    __u32 s = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        s += (__u16)~(from->w[i] & 0xffff);
        s += (__u16)~(from->w[i] >> 16);
        s += to->w[i] & 0xffff;
        s += to->w[i] >> 16;
    }
    return lb_csum_fold(s);
}

// An IPv6 address changed in a checksummed pseudo header: the eight 16-bit words
static __always_inline __u16 lb_csum_replace16(__u16 check, struct lb_addr6 *from, struct lb_addr6 *to)
{
    __u32 s = (__u16)~check;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        s += (__u16)~(from->w[i] & 0xffff);
        s += (__u16)~(from->w[i] >> 16);
        s += to->w[i] & 0xffff;
        s += to->w[i] >> 16;
    }
    return ~lb_csum_fold(s);
}

#endif
