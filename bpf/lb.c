// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// lbtui data path (docs/datapath.md#what-the-programs-do):
//   lbtui_xdp   XDP on the client-facing interfaces: parse, validate, conntrack lookup, backend pick
//               for new flows, DNAT with incremental checksum updates, counters, events; ICMP errors
//               about a flow go to its backend. XDP_PASS, except for what must not reach a backend
//               (counted per service by drop reason). DSR services (forwarding = "ipip") get the
//               client's packet inside an outer IPv4 header instead of the DNAT (lb_encap.h).
//   lbtui_tc    TC clsact egress (direct action) on the same interfaces: replies of tracked flows get
//               their source rewritten back to VIP:port (fragments too), ICMP errors about a flow
//               carry the VIP; TCP state of the reply side.
//   lbtui_reap  never attached: the engine runs it on records of flows to remove (lb_reap_rec).
//
//   lbtui_tc_reply  TC clsact ingress on the backend-facing interfaces, with settings.fast_path = "auto":
//               replies of tracked IPv4 flows SNATed there and redirected to the client's interface
//               when the kernel's tables allow it (lb_fastpath_reply.h); TC_ACT_OK otherwise (a packet
//               that is no reply of ours: TC_ACT_UNSPEC, the next filter decides). IPv6
//               replies go to lbtui_tc_reply6 by a tail call (lb_fastpath6.h).
//
//   With settings.fast_path = "auto" a DNATed packet is redirected to its backend's interface
//   from XDP when the kernel's tables allow it (lb_fastpath.h, lb_fastpath6.h); XDP_PASS otherwise.
// XDP checksum updates assume a complete L4 checksum (what a NIC delivers); see docs/datapath.md#checksums.
#include "lb.h"
#include "lb_csum.h"
#include "lb_stats.h"
#include "lb_tcp.h"
#include "lb_ratelimit.h"

// the flow logic, once per family (lb_fam.h)
#define LB_FAM 4
#include "lb_fam.h"
#include "lb_ct.h"
#include "lb_tcp_flow.h"
#include "lb_pick.h"
#include "lb_flow.h"
#undef LB_FAM
#define LB_FAM 6
#include "lb_fam.h"
#include "lb_ct.h"
#include "lb_tcp_flow.h"
#include "lb_pick.h"
#include "lb_flow.h"
#undef LB_FAM
// from here on, names without a 6 are the IPv4 ones (lb_icmp.h is IPv4 only)

#include "lb_icmp.h"
#include "lb_ipv6.h"
#include "lb_encap.h"
#include "lb_fastpath.h"
#include "lb_fastpath_reply.h"

// The program license the kernel sees (BCC's footer turns it into the "license" section): this file's
// dual license, which the kernel counts as GPL-compatible, so GPL-only helpers stay usable.
#define BPF_LICENSE Dual BSD/GPL

#define ETH_P_8021Q_BE  0x0081     // htons(0x8100)
#define ETH_P_8021AD_BE 0xA888     // htons(0x88A8)
#define IP_MF_OFFSET_BE 0xFF3F     // htons(IP_MF | IP_OFFSET)

struct vlan_hdr_lb {
    __be16 tci;
    __be16 proto;
};
int lbtui_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    global_inc(LB_G_XDP_PACKETS);

    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;                            // runt frame: the kernel drops it
    __be16 h_proto = eth->h_proto;
    void *l3 = (void *)(eth + 1);
    if (h_proto == ETH_P_8021Q_BE || h_proto == ETH_P_8021AD_BE) {
        struct vlan_hdr_lb *vh = l3;
        if ((void *)(vh + 1) > data_end) {
            global_inc(LB_G_XDP_MALFORMED);
            return XDP_PASS;
        }
        h_proto = vh->proto;
        l3 = (void *)(vh + 1);
    }
    if (h_proto != htons(ETH_P_IP)) {
        if (h_proto == htons(ETH_P_IPV6))
            lb_xdp6_prog.call(ctx, 0);              // returns only if lbtui_xdp6 is not there
        global_inc(LB_G_XDP_NOT_OURS);
        return XDP_PASS;
    }
    struct iphdr *iph = l3;
    if ((void *)(iph + 1) > data_end) {
        global_inc(LB_G_XDP_MALFORMED);
        return XDP_PASS;
    }
    __u32 ihl_len = iph->ihl * 4;
    __u32 ip_len = ntohs(iph->tot_len);
    if (iph->version != 4 || ihl_len < sizeof(*iph) || ip_len < ihl_len ||
        (void *)iph + ip_len > data_end) {
        global_inc(LB_G_XDP_MALFORMED);
        return XDP_PASS;
    }
    if (iph->protocol == IPPROTO_ICMP && !(iph->frag_off & IP_MF_OFFSET_BE)) {
        if (!xdp_icmp_error(iph, ihl_len, ip_len, data_end))
            global_inc(LB_G_XDP_NOT_OURS);
        return XDP_PASS;
    }
    if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP) {
        global_inc(LB_G_XDP_NOT_OURS);
        return XDP_PASS;
    }
    if (iph->frag_off & IP_MF_OFFSET_BE) {
        global_inc(LB_G_XDP_FRAGMENT);
        return XDP_PASS;
    }
    void *l4 = (void *)iph + ihl_len;
    __u16 *l4_check;
    __u16 *dport_p;
    __be16 sport;
    struct lb_seg seg = {};
    int is_tcp = iph->protocol == IPPROTO_TCP;
    if (is_tcp) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > data_end || th->doff < 5 || ip_len < ihl_len + th->doff * 4) {
            global_inc(LB_G_XDP_MALFORMED);
            return XDP_PASS;
        }
        l4_check = &th->check;
        dport_p = &th->dest;
        sport = th->source;
        tcp_segment_of(th, ip_len - ihl_len - th->doff * 4, data_end, &seg);
    } else {
        struct udphdr *uh = l4;
        if ((void *)(uh + 1) > data_end || ntohs(uh->len) < sizeof(*uh) ||
            ntohs(uh->len) > ip_len - ihl_len) {
            global_inc(LB_G_XDP_MALFORMED);
            return XDP_PASS;
        }
        l4_check = &uh->check;
        dport_p = &uh->dest;
        sport = uh->source;
    }

    struct lb_service_key sk = {};
    sk.vip = iph->daddr;
    sk.port = *dport_p;
    sk.proto = iph->protocol;
    struct lb_service *svc = lb_services.lookup(&sk);
    if (!svc) {
        global_inc(LB_G_XDP_NOT_OURS);
        return XDP_PASS;
    }
    struct lb_ct_key fk = {};
    fk.saddr = iph->saddr;
    fk.daddr = iph->daddr;
    fk.sport = sport;
    fk.dport = *dport_p;
    fk.proto = iph->protocol;
    struct lb_picked to = {};
    int verdict = xdp_flow(svc, &fk, l4, ip_len - ihl_len, ip_len, is_tcp, &seg, data_end, &to);
    if (verdict != LB_GO_NAT)
        return verdict;
    if (svc->flags & LB_SVC_F_IPIP)                 // DSR: the packet goes on unchanged, inside IPIP
        return xdp_ipip_encap(ctx, (__u32)(l3 - data), svc->ipip_src, to.ip);
    lb_addr_t new_ip = to.ip;
    __u16 new_port = to.port;

    // DNAT: destination address (IP header + L4 pseudo header) and port
    __u32 old_ip = iph->daddr;
    __u16 old_port = *dport_p;
    iph->daddr = new_ip;
    iph->check = lb_csum_replace4(iph->check, old_ip, new_ip);
    *dport_p = new_port;
    if (is_tcp || *l4_check != 0) {                 // a zero UDP checksum means "none": keep it
        __u16 c = lb_csum_replace4(*l4_check, old_ip, new_ip);
        c = lb_csum_replace2(c, old_port, new_port);
        *l4_check = is_tcp ? c : lb_udp_csum(*l4_check, c);
    }
#if LB_FAST_PATH
    return xdp_fast_forward4(ctx, eth, iph, ihl_len, ip_len, sport, new_port, l3 != (void *)(eth + 1));
#else
    return XDP_PASS;
#endif
}

int lbtui_tc(struct __sk_buff *skb)
{
    if (skb->mark == LB_PROBE_MARK)
        return tc_ipip_probe(skb);
    if (skb->mark == LB_FP_REPLY_MARK) {            // SNATed and redirected by lbtui_tc_reply already
        skb->mark = 0;
        return TC_ACT_OK;
    }
    // make the headers we read linear: ETH + VLAN + IP with options + TCP with options, or an ICMP
    // header with the quoted IP header (options too) and 20 bytes of its L4 header
    __u32 want = 14 + 4 + 60 + 8 + 60 + 20;         // IPv6: 40 + 48 of extension headers + 60 fit too
    if (want > skb->len)
        want = skb->len;
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    if (data + want > data_end) {                   // only when they are not linear already
        bpf_skb_pull_data(skb, want);
        data = (void *)(long)skb->data;
        data_end = (void *)(long)skb->data_end;
    }

    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return TC_ACT_OK;
    __be16 h_proto = eth->h_proto;
    __u32 l3_off = sizeof(*eth);
    if (h_proto == ETH_P_8021Q_BE || h_proto == ETH_P_8021AD_BE) {
        struct vlan_hdr_lb *vh = (void *)(eth + 1);
        if ((void *)(vh + 1) > data_end)
            return TC_ACT_OK;
        h_proto = vh->proto;
        l3_off += sizeof(*vh);
    }
    if (h_proto != htons(ETH_P_IP)) {
        if (h_proto == htons(ETH_P_IPV6))
            lb_tc6_prog.call(skb, 0);
        return TC_ACT_OK;
    }
    struct iphdr *iph = data + l3_off;
    if ((void *)(iph + 1) > data_end)
        return TC_ACT_OK;
    __u32 ihl_len = iph->ihl * 4;
    if (iph->version != 4 || ihl_len < sizeof(*iph))
        return TC_ACT_OK;
    __u16 frag = iph->frag_off & IP_MF_OFFSET_BE;
    if (iph->protocol == IPPROTO_ICMP) {
        if (!frag)
            tc_icmp_error(iph, ihl_len, data_end);
        return TC_ACT_OK;
    }
    if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP)
        return TC_ACT_OK;
    if (frag & LB_IP_OFFSET_BE) {                   // a later fragment: no ports to look at
        tc_later_fragment(iph);
        return TC_ACT_OK;
    }
    __u32 l4_off = l3_off + ihl_len;
    void *l4 = data + l4_off;
    __u32 csum_off;
    __be16 sport, dport;
    struct lb_seg seg = {};
    int is_tcp = iph->protocol == IPPROTO_TCP;
    if (is_tcp) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > data_end)
            return TC_ACT_OK;
        sport = th->source;
        dport = th->dest;
        __u32 hdr = th->doff * 4;
        __u32 total = ntohs(iph->tot_len);
        __u32 payload = total > ihl_len + hdr ? total - ihl_len - hdr : 0;
        tcp_segment_of(th, payload, data_end, &seg);
        csum_off = l4_off + offsetof(struct tcphdr, check);
    } else {
        struct udphdr *uh = l4;
        if ((void *)(uh + 1) > data_end)
            return TC_ACT_OK;
        sport = uh->source;
        dport = uh->dest;
        csum_off = l4_off + offsetof(struct udphdr, check);
    }
    __u16 ip_id = iph->id;

    struct lb_ct_key rk = {};
    rk.saddr = iph->saddr;
    rk.daddr = iph->daddr;
    rk.sport = sport;
    rk.dport = dport;
    rk.proto = iph->protocol;
    lb_addr_t old_ip = iph->saddr, new_ip = 0, client_ip = iph->daddr;
    __u16 old_port = sport, new_port = 0;
    int verdict = tc_flow(&rk, is_tcp, &seg, ntohs(iph->tot_len), &new_ip, &new_port);
    if (verdict != LB_GO_NAT)
        return verdict;


    // SNAT: the address, the IP header checksum and the port are written in place (the headers were
    // pulled linear; the IP checksum is always complete); the L4 checksum goes through the helper,
    // whose pseudo-header flag keeps CHECKSUM_PARTIAL skbs right (a partial checksum covers the
    // pseudo header only, the port is summed later by whoever completes it). A zero UDP checksum
    // ("none") stays zero: BPF_F_MARK_MANGLED_0. The helper invalidates packet pointers: it comes last.
    iph->saddr = new_ip;
    iph->check = lb_csum_replace4(iph->check, old_ip, new_ip);
    *(__u16 *)l4 = new_port;                        // source port: the first L4 field
    __u64 l4_flags = is_tcp ? 0 : BPF_F_MARK_MANGLED_0;
    bpf_l4_csum_replace(skb, csum_off, old_ip, new_ip, l4_flags | BPF_F_PSEUDO_HDR | sizeof(new_ip));
    if (old_port != new_port)
        bpf_l4_csum_replace(skb, csum_off, old_port, new_port, l4_flags | sizeof(new_port));
    if (frag)                                      // the first fragment of a reply: the others follow it
        tc_first_fragment(old_ip, client_ip, ip_id, is_tcp ? IPPROTO_TCP : IPPROTO_UDP, new_ip);
    global_inc(LB_G_TC_SNAT);
    return TC_ACT_OK;
}

// TC ingress on the backend-facing interfaces with settings.fast_path = "auto" (lb_fastpath_reply.h):
// replies of tracked IPv4 flows SNATed and redirected to the client's interface; the rest passes.
int lbtui_tc_reply(struct __sk_buff *skb)
{
#if LB_FAST_PATH
    if (skb->protocol == htons(ETH_P_IPV6))
        lb_tc_reply6_prog.call(skb, 0);             // returns only if lbtui_tc_reply6 is not there
    return tc_reply4(skb);
#else
    return TC_ACT_OK;
#endif
}

// IPv6 replies, from lbtui_tc_reply's tail call (lb_fastpath6.h): a program of its own, so that each
// stays under the verifier's limit
int lbtui_tc_reply6(struct __sk_buff *skb)
{
#if LB_FAST_PATH
    return tc_reply6(skb);
#else
    return TC_ACT_OK;
#endif
}

// IPv6 frames, from lbtui_xdp's tail call (the frame is as lbtui_xdp got it)
int lbtui_xdp6(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    __u32 l3_off = sizeof(*eth);
    if (eth->h_proto == ETH_P_8021Q_BE || eth->h_proto == ETH_P_8021AD_BE)
        l3_off += sizeof(struct vlan_hdr_lb);
    return xdp_ipv6(ctx, l3_off);
}

// IPv6 frames, from lbtui_tc's tail call (their headers already pulled linear)
int lbtui_tc6(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return TC_ACT_OK;
    __u32 l3_off = sizeof(*eth);
    if (eth->h_proto == ETH_P_8021Q_BE || eth->h_proto == ETH_P_8021AD_BE)
        l3_off += sizeof(struct vlan_hdr_lb);
    return tc_ipv6(skb, l3_off, data, data_end);
}

// Not attached anywhere: the engine runs it with BPF_PROG_TEST_RUN on a buffer of lb_reap_rec to
// remove flows (expired, or a drain cut) without racing the data path, because a userspace delete
// by key cannot tell the flow it meant from a new flow on the same tuple (see ct_reap).
int lbtui_reap(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct lb_reap_rec *rec = data;
    for (int i = 0; i < LB_REAP_BATCH; i++) {
        if ((void *)(rec + 1) > data_end)
            break;
        ct_reap(rec);
        rec++;
    }
    return XDP_PASS;
}

// lbtui_reap for IPv6 flows: records are lb_reap6_rec
int lbtui_reap6(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct lb_reap6_rec *rec = data;
    for (int i = 0; i < LB_REAP6_BATCH; i++) {
        if ((void *)(rec + 1) > data_end)
            break;
        ct_reap6(rec);
        rec++;
    }
    return XDP_PASS;
}
