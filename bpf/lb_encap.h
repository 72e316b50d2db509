// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// DSR forwarding over IPIP (docs/datapath.md#dsr-over-ipip): the client's packet, not rewritten,
// goes to its backend inside an outer IPv4 header (protocol 4); the backend strips it (bpf/decap.c
// or a tunnel device) and answers the client directly from the VIP.
#ifndef LBTUI_LB_ENCAP_H
#define LBTUI_LB_ENCAP_H

#include "lb.h"
#include "lb_csum.h"
#include "lb_stats.h"

#define LB_IP_DF_BE 0x0040         // htons(IP_DF)
#define LB_IPIP_TTL 64

// The outer header of an IPv4 packet `inner` (already read) going from src to dst: TOS (DSCP and
// ECN, RFC 6040's normal mode), DF and IP id copied (RFC 2003), TTL 64, protocol 4, checksum.
static __always_inline void lb_ipip_header(struct iphdr *outer, __u8 tos, __be16 id, __be16 frag_off,
                                           __u16 inner_len, __be32 src, __be32 dst)
{
    outer->version = 4;
    outer->ihl = 5;
    outer->tos = tos;
    outer->tot_len = htons(inner_len + sizeof(struct iphdr));
    outer->id = id;
    outer->frag_off = frag_off & LB_IP_DF_BE;
    outer->ttl = LB_IPIP_TTL;
    outer->protocol = IPPROTO_IPIP;
    outer->check = 0;
    outer->saddr = src;
    outer->daddr = dst;
    __u16 *w = (__u16 *)outer;
    __u32 sum = 0;
#pragma unroll
    for (int i = 0; i < 10; i++)
        sum += w[i];
    outer->check = ~lb_csum_fold(sum);
}

// Wrap the IPv4 packet at l3_off (behind an Ethernet header and at most one VLAN tag) in an outer
// IPv4 header src -> dst, and hand it to the kernel, which routes it toward the backend.
static __always_inline int xdp_ipip_encap(struct xdp_md *ctx, __u32 l3_off, __be32 src, __be32 dst)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    if (l3_off != 14 && l3_off != 18)
        return XDP_PASS;                            // cannot happen (lb.c parses at most one tag)
    struct iphdr *inner = data + l3_off;
    if ((void *)(inner + 1) > data_end)
        return XDP_PASS;
    __u8 tos = inner->tos;
    __be16 id = inner->id;
    __be16 frag_off = inner->frag_off;
    __u16 inner_len = ntohs(inner->tot_len);

    // Too big for this interface once encapsulated: counted, and passed on all the same (the kernel
    // fragments it, or drops it when DF is set); the backends' MSS or a larger MTU between the load
    // balancers and the backends must make room (docs/scale-out.md, MTU).
    __u32 mtu_len = 0;
    if (bpf_check_mtu(ctx, 0, &mtu_len, sizeof(struct iphdr), 0) != 0)
        global_inc(LB_G_IPIP_TOO_BIG);

    if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)) != 0) {
        global_inc(LB_G_IPIP_FAILED);
        return XDP_DROP;                            // routed as it is, it would loop back to the VIP
    }
    data = (void *)(long)ctx->data;
    data_end = (void *)(long)ctx->data_end;
    // the link-layer header moves to the new front; the outer IPv4 header goes behind it
    if (data + sizeof(struct iphdr) + 18 > data_end)
        return XDP_DROP;
    __builtin_memcpy(data, data + sizeof(struct iphdr), 14);
    if (l3_off == 18)
        __builtin_memcpy(data + 14, data + sizeof(struct iphdr) + 14, 4);
    struct iphdr *outer = data + l3_off;
    if ((void *)(outer + 1) > data_end)
        return XDP_DROP;
    lb_ipip_header(outer, tos, id, frag_off, inner_len, src, dst);
    global_inc(LB_G_IPIP_ENCAP);
    return XDP_PASS;
}

// Health checks through the tunnel (docs/scale-out.md#health-checks-through-the-tunnel): the engine's
// probe of a DSR backend is a TCP connection from this host to the VIP, its socket marked with
// LB_PROBE_MARK and its priority set to the backend's IPv4 address. At TC egress such a packet goes
// to that backend inside IPIP, as the XDP program sends clients' packets; the backend answers from
// the VIP straight to this host. The outer source is the probe's own (an address of this host).
#define LB_PROBE_MARK 0x4c42d5a0

static __always_inline int tc_ipip_probe(struct __sk_buff *skb)
{
    __be32 backend = htonl(skb->priority);
    struct iphdr inner;
    if (skb->protocol != htons(ETH_P_IP) || bpf_skb_load_bytes(skb, 14, &inner, sizeof(inner)) != 0 ||
        inner.version != 4 || backend == 0)
        return TC_ACT_OK;
    if (bpf_skb_adjust_room(skb, sizeof(struct iphdr), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4) != 0) {
        global_inc(LB_G_IPIP_FAILED);
        return TC_ACT_SHOT;
    }
    struct iphdr outer = {};
    lb_ipip_header(&outer, inner.tos, inner.id, inner.frag_off, ntohs(inner.tot_len), inner.saddr, backend);
    bpf_skb_store_bytes(skb, 14, &outer, sizeof(outer), 0);
    global_inc(LB_G_IPIP_PROBES);
    return TC_ACT_OK;
}

#endif
