// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// The reply half of the fast path (docs/datapath.md#fast-path): lbtui_tc_reply at TC ingress (clsact)
// of the backend-facing interfaces. A reply of a tracked IPv4 flow gets VIP:port as its source, the
// next hop's MAC, TTL - 1, and leaves through the client's interface (bpf_redirect); the kernel's
// forwarding (netfilter, conntrack, rp_filter) is skipped. TC has the skb, so the L4 checksum goes
// through the kernel's helpers, which keep CHECKSUM_PARTIAL and GSO skbs (a local backend's replies)
// right, as the TC egress SNAT in lb.c does.
//
// A packet that is no reply of this instance's flows passes to the hook's next filter (FP_NOT_OURS).
// Every reply the fast path is not sure about passes untouched (TC_ACT_OK): the kernel forwards it
// and lbtui_tc SNATs it at the client interface's egress, as without the fast path. The flow is only
// looked at until the way out is known; its state moves (tc_flow) just before the rewrite, so each
// reply is counted once, here or there. An established flow's entry found first is the one the flow
// logic moves (no second lookup); a transient one is looked up again, as it may have moved meanwhile.
// A redirected reply still passes lbtui_tc on its way out: it carries LB_FP_REPLY_MARK, which lbtui_tc
// clears and lets through untouched.
// Compiled only with LB_FAST_PATH=1 (settings.fast_path = "auto").
#ifndef LBTUI_LB_FASTPATH_REPLY_H
#define LBTUI_LB_FASTPATH_REPLY_H

#include "lb.h"
#include "lb_csum.h"
#include "lb_stats.h"
#include "lb_tcp.h"
#include "lb_nexthop.h"
#include "lb_fastpath.h"                            // fp_question4, fp_ttl_dec4

#ifndef PACKET_HOST
#define PACKET_HOST 0
#endif

// skb->mark of a reply redirected by lbtui_tc_reply, for lbtui_tc on the client interface (set only on
// skbs without a mark of their own; lbtui_tc puts the 0 back)
#define LB_FP_REPLY_MARK 0x4c42fa57

// The verdict for a packet that is no reply of this instance's flows: TC_ACT_UNSPEC runs the hook's
// next filter (another instance's lbtui_tc_reply on a shared interface, anyone's), and the packet
// passes when none is left; TC_ACT_OK would end the chain here (docs/datapath.md#fast-path)
#define FP_NOT_OURS TC_ACT_UNSPEC

#if LB_FAST_PATH
static __always_inline int tc_reply4(struct __sk_buff *skb)
{
    if (skb->pkt_type != PACKET_HOST || skb->protocol != htons(ETH_P_IP))
        return FP_NOT_OURS;                         // not for this host to route, or not IPv4
    // the headers we read linear: Ethernet, IP with options, a TCP header without
    fp_pull_headers(skb, sizeof(struct ethhdr) + 60 + sizeof(struct tcphdr));
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *iph = (void *)(eth + 1);
    if ((void *)(iph + 1) > data_end || eth->h_proto != htons(ETH_P_IP) || iph->version != 4)
        return FP_NOT_OURS;
    if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP)
        return FP_NOT_OURS;                         // ICMP errors: lb_icmp.h at TC egress
    if (iph->frag_off & htons(0x3FFF))              // IP_MF | IP_OFFSET
        return FP_NOT_OURS;                         // fragments: lb_frags at TC egress
    __u32 ihl_len = iph->ihl * 4;
    __be16 *ports = (void *)iph + ihl_len;          // source, destination: the first L4 fields
    if (ihl_len < sizeof(*iph) || (void *)(ports + 2) > data_end)
        return FP_NOT_OURS;
    int is_tcp = iph->protocol == IPPROTO_TCP;
    struct lb_ct_key rk = {};
    rk.saddr = iph->saddr;
    rk.daddr = iph->daddr;
    rk.sport = ports[0];
    rk.dport = ports[1];
    rk.proto = iph->protocol;
    int table;
    struct lb_ct_entry *peek = ct_lookup(&rk, &table);
    if (!peek || peek->dir != LB_DIR_REVERSE)
        return FP_NOT_OURS;                         // not a reply of ours
    // a reply of ours from here on: every fallback is counted
    if (skb->vlan_present) {                        // the tag would go out on the client's side
        global_inc(LB_G_FP_VLAN);
        return TC_ACT_OK;
    }
    if (ihl_len != sizeof(*iph)) {
        global_inc(LB_G_FP_IP_OPTIONS);
        return TC_ACT_OK;
    }
    __u32 ip_len = ntohs(iph->tot_len);             // 0 for a BIG TCP skb: left to the kernel
    if (ip_len < sizeof(*iph) + sizeof(struct udphdr) || ip_len > skb->len)
        return TC_ACT_OK;
    if (iph->ttl <= 1) {
        global_inc(LB_G_FP_TTL);
        return TC_ACT_OK;
    }
    struct lb_seg seg = {};
    __u32 l4_hdr = sizeof(struct udphdr);
    if ((void *)(iph + 1) + sizeof(struct udphdr) > data_end)
        return TC_ACT_OK;                           // malformed: TC egress decides as without us
    if (is_tcp) {
        struct tcphdr *th = (void *)(iph + 1);
        if ((void *)(th + 1) > data_end)
            return TC_ACT_OK;
        l4_hdr = th->doff * 4;
        if (l4_hdr < sizeof(*th) || ip_len < sizeof(*iph) + l4_hdr)
            return TC_ACT_OK;
        tcp_segment_of(th, ip_len - sizeof(*iph) - l4_hdr, data_end, &seg);
    }

    struct bpf_fib_lookup fib = {};
    fp_question4(&fib, iph, peek->vip, peek->vip_port, ports[1],
                 fp_wire_len(skb, ip_len, sizeof(*iph) + l4_hdr), skb->ifindex);   // per segment for GSO
    struct lb_nh way;
    if (!fp_next_hop(skb, AF_INET, 1, 0, &fib, &way))
        return TC_ACT_OK;

    // sure of the way: the flow moves (as lbtui_tc would move it) and the reply is rewritten here
    __be32 new_ip = 0;
    __u16 new_port = 0;
    // a transient entry may have been promoted meanwhile (an established one stays put)
    if (table != LB_TBL_ESTABLISHED && !(peek = ct_reverse(&rk, &table)))
        return TC_ACT_OK;
    int verdict = tc_flow_of(peek, table, &rk, is_tcp, &seg, ip_len, &new_ip, &new_port);
    if (verdict != LB_GO_NAT)
        return verdict;
    __be32 old_ip = iph->saddr;
    __u16 old_port = ports[0];
    // the IP header in place (its checksum is always complete): source, then TTL - 1
    iph->saddr = new_ip;
    iph->check = lb_csum_replace4(iph->check, old_ip, new_ip);
    fp_ttl_dec4(iph);
    ports[0] = new_port;
    fp_set_macs(eth, &way);
    // the L4 checksum last (the helper invalidates packet pointers): the address with the pseudo-header
    // flag, then the port; a zero UDP checksum stays zero
    __u32 csum_off = sizeof(struct ethhdr) + sizeof(struct iphdr) +
                     (is_tcp ? offsetof(struct tcphdr, check) : offsetof(struct udphdr, check));
    __u64 l4_flags = is_tcp ? 0 : BPF_F_MARK_MANGLED_0;
    bpf_l4_csum_replace(skb, csum_off, old_ip, new_ip, l4_flags | BPF_F_PSEUDO_HDR | sizeof(new_ip));
    if (old_port != new_port)
        bpf_l4_csum_replace(skb, csum_off, old_port, new_port, l4_flags | sizeof(new_port));
    if (skb->mark == 0)
        skb->mark = LB_FP_REPLY_MARK;
    global_inc(LB_G_TC_SNAT);
    global_inc(LB_G_FP_REPLY_FORWARDED);
    return bpf_redirect(way.ifindex, 0);
}
#endif

#endif
