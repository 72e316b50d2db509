// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// The fast path for IPv6 (docs/datapath.md#fast-path): a DNATed IPv6 packet leaves through the
// backend's interface straight from XDP, as lb_fastpath.h does for IPv4: bpf_fib_lookup (AF_INET6,
// with the flow label for multipath routes) finds the egress interface and the next hop's MAC, the
// frame gets new MACs and hop limit - 1 (IPv6 has no header checksum to update) and bpf_redirect
// sends it. Whenever it cannot be sure it returns XDP_PASS with the packet as the DNAT left it and
// counts why, with the IPv4 counters:
//   no neighbour entry yet       the kernel resolves it (neighbour discovery)
//   larger than egress MTU       the kernel sends Packet Too Big to the client (IPv6 routers never
//                                fragment; the TC program makes the error about the VIP)
//   hop limit <= 1               the kernel sends Time Exceeded
//   any extension header         fast_path_ip_options: the kernel's forwarding processes them
//   egress not in lb_fp_ifaces, VLAN tag, other fib answers: as IPv4
// Compiled only with LB_FAST_PATH=1; included by lb_ipv6.h, whose xdp_ipv6 calls xdp_fast_forward6.
#ifndef LBTUI_LB_FASTPATH6_H
#define LBTUI_LB_FASTPATH6_H

#include "lb.h"
#include "lb_stats.h"

#ifndef AF_INET6
#define AF_INET6 10
#endif
#define LB_IPV6_FLOWINFO_MASK_BE 0xFFFFFF0F      // htonl(0x0FFFFFFF): traffic class and flow label

#if LB_FAST_PATH
// What a bpf_fib_lookup answer allows: 1 when the packet may leave through fib->ifindex (SUCCESS and
// an interface lbtui manages), else 0 with the reason counted.
static __always_inline int fp_fib_usable(int rc, struct bpf_fib_lookup *fib)
{
    if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
        if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
            global_inc(LB_G_FP_NO_NEIGH);
        else if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
            global_inc(LB_G_FP_FRAG_NEEDED);
        else
            global_inc(LB_G_FP_FIB_OTHER);
        return 0;
    }
    __u32 out = fib->ifindex;
    if (!lb_fp_ifaces.lookup(&out)) {
        global_inc(LB_G_FP_UNMANAGED);
        return 0;
    }
    return 1;
}

// bpf_fib_lookup for the IPv6 packet ip6 (no extension headers: nexthdr is the L4 protocol) with
// ports sport, dport, arriving on the context's interface
static __always_inline int fp_lookup6(struct xdp_md *ctx, struct bpf_fib_lookup *fib, struct ipv6hdr *ip6,
                                      __be16 sport, __be16 dport, __u32 ip_len)
{
    fib->family = AF_INET6;
    fib->flowinfo = *(__be32 *)ip6 & LB_IPV6_FLOWINFO_MASK_BE;
    fib->l4_protocol = ip6->nexthdr;
    fib->sport = sport;
    fib->dport = dport;
    fib->tot_len = ip_len;                          // the lookup checks it against the route's MTU
    __builtin_memcpy(fib->ipv6_src, &ip6->saddr, sizeof(fib->ipv6_src));
    __builtin_memcpy(fib->ipv6_dst, &ip6->daddr, sizeof(fib->ipv6_dst));
    fib->ifindex = ctx->ingress_ifindex;
    return fp_fib_usable(bpf_fib_lookup(ctx, fib, sizeof(*fib), 0), fib);
}

// the frame leaves as the kernel's forwarding would send it: next hop's MAC, hop limit - 1
static __always_inline int fp_send6(struct ethhdr *eth, struct ipv6hdr *ip6, struct bpf_fib_lookup *fib)
{
    ip6->hop_limit--;
    __builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
    __builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
    return bpf_redirect(fib->ifindex, 0);
}

// After xdp_ipv6's DNAT. It takes nothing but the context and reads what it needs from the packet
// again: lbtui_xdp6 reaches this point along very many verifier paths (the flow logic's), and with
// no value carried over they all end in the same state here, so the verifier walks this code once
// instead of once per path (1M instruction limit).
static __always_inline int xdp_fast_forward6(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    if (eth->h_proto != htons(ETH_P_IPV6)) {        // xdp_ipv6 DNATs IPv6 only: a VLAN tag is in front
        global_inc(LB_G_FP_VLAN);
        return XDP_PASS;
    }
    struct ipv6hdr *ip6 = (void *)(eth + 1);
    if ((void *)(ip6 + 1) > data_end)
        return XDP_PASS;
    if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP) {
        global_inc(LB_G_FP_IP_OPTIONS);             // extension headers before TCP/UDP
        return XDP_PASS;
    }
    __be16 *ports = (void *)(ip6 + 1);              // source, destination: the first L4 fields
    if ((void *)(ports + 2) > data_end)
        return XDP_PASS;
    if (ip6->hop_limit <= 1) {
        global_inc(LB_G_FP_TTL);
        return XDP_PASS;
    }
    struct bpf_fib_lookup fib = {};
    if (!fp_lookup6(ctx, &fib, ip6, ports[0], ports[1], sizeof(*ip6) + ntohs(ip6->payload_len)))
        return XDP_PASS;
    global_inc(LB_G_FP_FORWARDED);
    return fp_send6(eth, ip6, &fib);
}
#endif

#endif
