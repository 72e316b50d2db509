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
// Replies (tc_reply6, lbtui_tc_reply6 at TC ingress of the backend-facing interfaces) take the same
// way back with the source rewritten to VIP:port, under the rules of the IPv4 reply (lb_fastpath_reply.h).
// Compiled only with LB_FAST_PATH=1; included by lb_ipv6.h, whose xdp_ipv6 calls xdp_fast_forward6.
#ifndef LBTUI_LB_FASTPATH6_H
#define LBTUI_LB_FASTPATH6_H

#include "lb.h"
#include "lb_stats.h"
#include "lb_nexthop.h"
#include "lb_fastpath_reply.h"                      // LB_FP_REPLY_MARK

#if LB_FAST_PATH
// the question for bpf_fib_lookup about an IPv6 packet from saddr:sport to daddr:dport (no extension
// headers), flow label and traffic class from ip6 (the kernel's multipath hash uses the label)
static __always_inline void fp_question6(struct bpf_fib_lookup *fib, struct ipv6hdr *ip6, void *saddr,
                                         void *daddr, __u8 proto, __be16 sport, __be16 dport,
                                         __u32 len, __u32 ifindex)
{
    fib->family = AF_INET6;
    fib->flowinfo = *(__be32 *)ip6 & LB_IPV6_FLOWINFO_MASK_BE;
    fib->l4_protocol = proto;
    fib->sport = sport;
    fib->dport = dport;
    fib->tot_len = len;                             // the lookup checks it against the route's MTU
    __builtin_memcpy(fib->ipv6_src, saddr, sizeof(fib->ipv6_src));
    __builtin_memcpy(fib->ipv6_dst, daddr, sizeof(fib->ipv6_dst));
    fib->ifindex = ifindex;
}

// 1 for a multicast, link-local or loopback address: bpf_fib_lookup never forwards from or to one
// (rt6_need_strict, BPF_FIB_LKUP_RET_NOT_FWDED). The forward cache is keyed per backend, without the
// client's address, so xdp_fast_forward6 answers for a client source of those kinds as the lookup
// would, before the cache is asked.
static __always_inline int fp_never_forwarded6(struct in6_addr *addr)
{
    __u32 *w = (__u32 *)addr;
    if ((w[0] & htonl(0xFF000000)) == htonl(0xFF000000))           // ff00::/8
        return 1;
    if ((w[0] & htonl(0xFFC00000)) == htonl(0xFE800000))           // fe80::/10
        return 1;
    return (w[0] | w[1] | w[2]) == 0 && w[3] == htonl(1);           // ::1
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
    if (fp_never_forwarded6(&ip6->saddr)) {
        global_inc(LB_G_FP_FIB_OTHER);
        return XDP_PASS;
    }
    struct bpf_fib_lookup fib = {};
    fp_question6(&fib, ip6, &ip6->saddr, &ip6->daddr, ip6->nexthdr, ports[0], ports[1],
                 sizeof(*ip6) + ntohs(ip6->payload_len), ctx->ingress_ifindex);
    struct lb_nh way;
    if (!fp_next_hop(ctx, AF_INET6, 0, eth, &fib, &way))
        return XDP_PASS;
    // the frame leaves as the kernel's forwarding would send it: next hop's MAC, hop limit - 1
    ip6->hop_limit--;
    fp_set_macs(eth, &way);
    global_inc(LB_G_FP_FORWARDED);
    return bpf_redirect(way.ifindex, 0);
}

// TC ingress of a backend-facing interface (lbtui_tc_reply6, tail-called by lbtui_tc_reply for IPv6):
// a reply of a tracked IPv6 flow without extension headers gets VIP:port as its source, the next
// hop's MAC and hop limit - 1, and leaves through the client's interface; a packet that is no reply of
// ours goes to the hook's next filter (FP_NOT_OURS), a reply the fast path is not sure about passes
// untouched (TC_ACT_OK) to the kernel's forwarding and lbtui_tc6 at the client interface's egress.
// The flow's state moves (tc_flow6) only once the way out is known, so each reply is counted once.
// The L4 checksum goes through the kernel's helper, which keeps CHECKSUM_PARTIAL and GSO skbs right.
static __always_inline int tc_reply6(struct __sk_buff *skb)
{
    if (skb->pkt_type != PACKET_HOST || skb->protocol != htons(ETH_P_IPV6))
        return FP_NOT_OURS;
    fp_pull_headers(skb, sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + 48 + sizeof(struct tcphdr));
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct ipv6hdr *ip6 = (void *)(eth + 1);
    if ((void *)(ip6 + 1) > data_end || eth->h_proto != htons(ETH_P_IPV6) || ip6->version != 6)
        return FP_NOT_OURS;
    __u32 off = 0;
    int frag = 0;
    int proto = ipv6_upper(ip6, data_end, &off, &frag);
    if (frag || (proto != IPPROTO_TCP && proto != IPPROTO_UDP))
        return FP_NOT_OURS;                         // fragments, ICMPv6 errors: lbtui_tc6 at egress
    off &= 0xff;                                    // at most 48 bytes of extension headers pulled
    __be16 *ports = (void *)ip6 + off;              // source, destination: the first L4 fields
    if ((void *)(ports + 2) > data_end)
        return FP_NOT_OURS;
    int is_tcp = proto == IPPROTO_TCP;
    struct lb_ct6_key rk = {};
    addr6_of(&rk.saddr, &ip6->saddr);
    addr6_of(&rk.daddr, &ip6->daddr);
    rk.sport = ports[0];
    rk.dport = ports[1];
    rk.proto = proto;
    int table;
    struct lb_ct6_entry *peek = ct_lookup6(&rk, &table);
    if (!peek || peek->dir != LB_DIR_REVERSE)
        return FP_NOT_OURS;                         // not a reply of ours
    // a reply of ours from here on: every fallback is counted
    if (skb->vlan_present) {                        // the tag would go out on the client's side
        global_inc(LB_G_FP_VLAN);
        return TC_ACT_OK;
    }
    if (off != sizeof(*ip6)) {
        global_inc(LB_G_FP_IP_OPTIONS);
        return TC_ACT_OK;
    }
    __u32 ip_len = sizeof(*ip6) + ntohs(ip6->payload_len);
    if (ip_len < sizeof(*ip6) + sizeof(struct udphdr) || ip_len > skb->len)
        return TC_ACT_OK;                           // a jumbogram (payload length 0): the kernel's
    if (ip6->hop_limit <= 1) {
        global_inc(LB_G_FP_TTL);
        return TC_ACT_OK;
    }
    struct lb_seg seg = {};
    __u32 l4_hdr = sizeof(struct udphdr);
    if ((void *)(ip6 + 1) + sizeof(struct udphdr) > data_end)
        return TC_ACT_OK;
    if (is_tcp) {
        struct tcphdr *th = (void *)(ip6 + 1);
        if ((void *)(th + 1) > data_end)
            return TC_ACT_OK;
        l4_hdr = th->doff * 4;
        if (l4_hdr < sizeof(*th) || ip_len < sizeof(*ip6) + l4_hdr)
            return TC_ACT_OK;
        tcp_segment_of(th, ip_len - sizeof(*ip6) - l4_hdr, data_end, &seg);
    }

    struct bpf_fib_lookup fib = {};
    fp_question6(&fib, ip6, &peek->vip, &ip6->daddr, proto, peek->vip_port, ports[1],
                 fp_wire_len(skb, ip_len, sizeof(*ip6) + l4_hdr), skb->ifindex);   // per segment for GSO
    struct lb_nh way;
    if (!fp_next_hop(skb, AF_INET6, 1, 0, &fib, &way))
        return TC_ACT_OK;

    // sure of the way: the flow moves (as lbtui_tc6 would move it) and the reply is rewritten here
    struct lb_addr6 vip = {};
    __u16 vip_port = 0;
    __be16 old_port = rk.sport;
    // a transient entry may have been promoted meanwhile (as lb_fastpath_reply.h)
    if (table != LB_TBL_ESTABLISHED && !(peek = ct_reverse6(&rk, &table)))
        return TC_ACT_OK;
    int verdict = tc_flow_of6(peek, table, &rk, is_tcp, &seg, ip_len, &vip, &vip_port);
    if (verdict != LB_GO_NAT)
        return verdict;
    // pointers fetched anew: the flow logic's many paths leave them with different verified ranges
    data = (void *)(long)skb->data;
    data_end = (void *)(long)skb->data_end;
    eth = data;
    ip6 = (void *)(eth + 1);
    ports = (void *)(ip6 + 1);
    if ((void *)(ports + 2) > data_end)
        return TC_ACT_OK;
    __builtin_memcpy(&ip6->saddr, &vip, sizeof(vip));
    ports[0] = vip_port;
    ip6->hop_limit--;
    fp_set_macs(eth, &way);
    // the L4 checksum last (the helper invalidates packet pointers): the address with the
    // pseudo-header flag, then the port; a UDP result of 0 is sent as 0xffff
    __u32 csum_off = sizeof(struct ethhdr) + sizeof(struct ipv6hdr) +
                     (is_tcp ? offsetof(struct tcphdr, check) : offsetof(struct udphdr, check));
    __u64 l4_flags = is_tcp ? 0 : BPF_F_MARK_MANGLED_0;
    bpf_l4_csum_replace(skb, csum_off, 0, lb_csum_diff16(&rk.saddr, &vip), l4_flags | BPF_F_PSEUDO_HDR);
    if (old_port != vip_port)
        bpf_l4_csum_replace(skb, csum_off, old_port, vip_port, l4_flags | sizeof(vip_port));
    if (skb->mark == 0)
        skb->mark = LB_FP_REPLY_MARK;
    global_inc(LB_G_TC_SNAT);
    global_inc(LB_G_FP_REPLY_FORWARDED);
    return bpf_redirect(way.ifindex, 0);
}
#endif

#endif
