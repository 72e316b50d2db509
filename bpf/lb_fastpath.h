// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// The fast path (docs/datapath.md#fast-path): a DNATed IPv4 packet leaves through the backend's
// interface straight from XDP: bpf_fib_lookup finds the egress interface and the next hop's MAC,
// the frame gets new MACs and TTL - 1, and bpf_redirect sends it, so the kernel's forwarding path
// (netfilter FORWARD, conntrack, tc on the way in) is skipped. Whenever the fast path cannot be sure
// it returns XDP_PASS with the packet as the DNAT left it (today's path) and counts why:
//   no neighbour entry yet   the kernel resolves it (ARP) and the next packets go fast
//   larger than egress MTU   the kernel fragments or sends "fragmentation needed" to the client
//   TTL <= 1, IP options     the kernel sends time exceeded / processes the options
//   egress not in lb_fp_ifaces   an interface lbtui does not manage (or one XDP cannot send on)
//   VLAN tag, other fib answers  (no route, forwarding off on the ingress interface, blackhole...)
// Replies take the same way back from TC ingress on the backend-facing interfaces (lb_fastpath_reply.h).
// Compiled only with LB_FAST_PATH=1 (settings.fast_path = "auto").
#ifndef LBTUI_LB_FASTPATH_H
#define LBTUI_LB_FASTPATH_H

#include "lb.h"
#include "lb_csum.h"
#include "lb_stats.h"

#ifndef AF_INET
#define AF_INET 2
#endif

#if LB_FAST_PATH
// bpf_fib_lookup for an IPv4 packet from saddr:sport to daddr:dport arriving on the context's
// interface; SUCCESS with a managed egress: 1 and *fib filled, else 0 with the reason counted
static __always_inline int fp_lookup4(struct xdp_md *ctx, struct bpf_fib_lookup *fib, struct iphdr *iph,
                                      __be32 saddr, __be32 daddr, __be16 sport, __be16 dport, __u32 ip_len)
{
    fib->family = AF_INET;
    fib->tos = iph->tos;
    fib->l4_protocol = iph->protocol;
    fib->sport = sport;
    fib->dport = dport;
    fib->tot_len = ip_len;                          // the lookup checks it against the route's MTU
    fib->ipv4_src = saddr;
    fib->ipv4_dst = daddr;
    fib->ifindex = ctx->ingress_ifindex;
    int rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
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

// the frame leaves as the kernel's forwarding would send it: next hop's MAC, TTL - 1 (with the
// incremental checksum update of the kernel's ip_decrease_ttl)
static __always_inline int fp_send4(struct ethhdr *eth, struct iphdr *iph, struct bpf_fib_lookup *fib)
{
    __u32 check = iph->check;
    check += htons(0x0100);
    iph->check = (__u16)(check + (check >= 0xFFFF));
    iph->ttl--;
    __builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
    __builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
    return bpf_redirect(fib->ifindex, 0);
}

// `tagged`: the frame has a VLAN tag (l3 is not right after the Ethernet header)
static __always_inline int xdp_fast_forward4(struct xdp_md *ctx, struct ethhdr *eth, struct iphdr *iph,
                                             __u32 ihl_len, __u32 ip_len, __be16 sport, __be16 dport,
                                             int tagged)
{
    if (tagged) {
        global_inc(LB_G_FP_VLAN);
        return XDP_PASS;
    }
    if (ihl_len != sizeof(*iph)) {
        global_inc(LB_G_FP_IP_OPTIONS);
        return XDP_PASS;
    }
    if (iph->ttl <= 1) {
        global_inc(LB_G_FP_TTL);
        return XDP_PASS;
    }
    struct bpf_fib_lookup fib = {};
    if (!fp_lookup4(ctx, &fib, iph, iph->saddr, iph->daddr, sport, dport, ip_len))
        return XDP_PASS;
    global_inc(LB_G_FP_FORWARDED);
    return fp_send4(eth, iph, &fib);
}
#endif

#endif
