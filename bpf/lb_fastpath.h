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
// The way out comes from fp_next_hop (lb_nexthop.h), which remembers it per (ingress interface,
// backend, TOS): an established flow's packet costs a cache hit instead of bpf_fib_lookup
// (docs/datapath.md#next-hop-cache).
// Compiled only with LB_FAST_PATH=1 (settings.fast_path = "auto").
#ifndef LBTUI_LB_FASTPATH_H
#define LBTUI_LB_FASTPATH_H

#include "lb.h"
#include "lb_csum.h"
#include "lb_stats.h"
#include "lb_nexthop.h"

#if LB_FAST_PATH
// TTL - 1 with the incremental checksum update of the kernel's ip_decrease_ttl (both directions)
static __always_inline void fp_ttl_dec4(struct iphdr *iph)
{
    __u32 check = iph->check;
    check += htons(0x0100);
    iph->check = (__u16)(check + (check >= 0xFFFF));
    iph->ttl--;
}

// the question for bpf_fib_lookup about the IPv4 packet iph sent from saddr:sport to its daddr:dport
// (both directions: a reply is asked about as it will leave, from the VIP)
static __always_inline void fp_question4(struct bpf_fib_lookup *fib, struct iphdr *iph, __be32 saddr,
                                         __be16 sport, __be16 dport, __u32 len, __u32 ifindex)
{
    fib->family = AF_INET;
    fib->tos = iph->tos;
    fib->l4_protocol = iph->protocol;
    fib->sport = sport;
    fib->dport = dport;
    fib->tot_len = len;                             // the lookup checks it against the route's MTU
    fib->ipv4_src = saddr;
    fib->ipv4_dst = iph->daddr;
    fib->ifindex = ifindex;
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
    fp_question4(&fib, iph, iph->saddr, sport, dport, ip_len, ctx->ingress_ifindex);
    struct lb_nh way;
    if (!fp_next_hop(ctx, AF_INET, 0, eth, &fib, &way))
        return XDP_PASS;
    // the frame leaves as the kernel's forwarding would send it: next hop's MAC, TTL - 1
    fp_ttl_dec4(iph);
    fp_set_macs(eth, &way);
    global_inc(LB_G_FP_FORWARDED);
    return bpf_redirect(way.ifindex, 0);
}
#endif

#endif
