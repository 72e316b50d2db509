// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// IPv6 headers (docs/datapath.md#ipv6): the extension-header walk, and both programs' IPv6 halves
// around the shared flow logic (xdp_flow6, tc_flow6): parse, then DNAT or SNAT. IPv6 has no header
// checksum; the TCP and UDP checksums cover the addresses through the pseudo header, and a UDP
// checksum is mandatory (a datagram without one is malformed; a computed 0 is sent as 0xffff).
#ifndef LBTUI_LB_IPV6_H
#define LBTUI_LB_IPV6_H

#include "lb.h"
#include "lb_csum.h"
#include "lb_stats.h"
#include "lb_tcp.h"
#include "lb_icmp6.h"

#define LB_NH_HOPOPTS 0
#define LB_NH_ROUTING 43
#define LB_NH_FRAGMENT 44
#define LB_NH_DSTOPTS 60
#define LB_V6_EXT_MAX 4            // extension headers walked before the upper-layer header
#define LB_V6_NO_L4 (-2)           // ipv6_upper: the upper-layer header lies beyond LB_V6_EXT_MAX
#define LB_V6_TRUNCATED (-1)

// The upper-layer protocol behind the fixed header and the hop-by-hop, routing and destination
// options headers; its offset from the IPv6 header in *off. *frag is set when a fragment header
// comes first (XDP passes it untouched, as IPv4 fragments are); *off is then the fragment header's.
static __always_inline int ipv6_upper(struct ipv6hdr *ip6, void *data_end, __u32 *off, int *frag)
{
    __u8 next = ip6->nexthdr;
    __u32 at = sizeof(*ip6);
#pragma unroll
    for (int i = 0; i < LB_V6_EXT_MAX; i++) {
        if (next == LB_NH_FRAGMENT) {
            *off = at;
            *frag = 1;
            return next;
        }
        if (next != LB_NH_HOPOPTS && next != LB_NH_ROUTING && next != LB_NH_DSTOPTS) {
            *off = at;
            return next;
        }
        struct ipv6_opt_hdr *o = (void *)ip6 + at;
        if ((void *)(o + 1) > data_end)
            return LB_V6_TRUNCATED;
        next = o->nexthdr;
        at += ((__u32)o->hdrlen + 1) * 8;
    }
    if (next == LB_NH_FRAGMENT) {
        *off = at;
        *frag = 1;
        return next;
    }
    if (next != LB_NH_HOPOPTS && next != LB_NH_ROUTING && next != LB_NH_DSTOPTS) {
        *off = at;
        return next;
    }
    return LB_V6_NO_L4;
}

static __always_inline void addr6_of(struct lb_addr6 *out, struct in6_addr *a)
{
    __builtin_memcpy(out, a, sizeof(*out));
}

#include "lb_fastpath6.h"                           // uses ipv6_upper and addr6_of

// XDP, IPv6 at l3_off
static __always_inline int xdp_ipv6(struct xdp_md *ctx, __u32 l3_off)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    void *l3 = data + l3_off;
    struct ipv6hdr *ip6 = l3;
    if ((void *)(ip6 + 1) > data_end || ip6->version != 6) {
        global_inc(LB_G_XDP_MALFORMED);
        return XDP_PASS;
    }
    __u32 ip_len = sizeof(*ip6) + ntohs(ip6->payload_len);
    if (l3 + ip_len > data_end) {
        global_inc(LB_G_XDP_MALFORMED);
        return XDP_PASS;
    }
    __u32 off = 0;
    int frag = 0;
    int proto = ipv6_upper(ip6, data_end, &off, &frag);
    if (proto == LB_V6_TRUNCATED) {
        global_inc(LB_G_XDP_MALFORMED);
        return XDP_PASS;
    }
    if (proto == LB_V6_NO_L4) {
        global_inc(LB_G_XDP_V6_NO_L4);
        return XDP_PASS;
    }
    if (frag) {
        global_inc(LB_G_XDP_FRAGMENT);
        return XDP_PASS;
    }
    if (proto == IPPROTO_ICMPV6) {         // errors about our flows; neighbour discovery passes
        if (off > ip_len || !xdp_icmp6_error(ip6, off, ip_len, data_end))
            global_inc(LB_G_XDP_NOT_OURS);
        return XDP_PASS;
    }
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
        global_inc(LB_G_XDP_NOT_OURS);
        return XDP_PASS;
    }
    if (off > ip_len) {
        global_inc(LB_G_XDP_MALFORMED);
        return XDP_PASS;
    }
    off &= 0x1fff;                         // bounded for the verifier (the walk adds at most 4 * 2048)
    void *l4 = l3 + off;
    __u32 l4_len = ip_len - off;
    __u16 *l4_check;
    __u16 *dport_p;
    __be16 sport;
    struct lb_seg seg = {};
    int is_tcp = proto == IPPROTO_TCP;
    if (is_tcp) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > data_end || th->doff < 5 || l4_len < th->doff * 4) {
            global_inc(LB_G_XDP_MALFORMED);
            return XDP_PASS;
        }
        l4_check = &th->check;
        dport_p = &th->dest;
        sport = th->source;
        tcp_segment_of(th, l4_len - th->doff * 4, data_end, &seg);
    } else {
        struct udphdr *uh = l4;
        if ((void *)(uh + 1) > data_end || ntohs(uh->len) < sizeof(*uh) || ntohs(uh->len) > l4_len ||
            uh->check == 0) {
            global_inc(LB_G_XDP_MALFORMED);
            return XDP_PASS;
        }
        l4_check = &uh->check;
        dport_p = &uh->dest;
        sport = uh->source;
    }

    struct lb_service6_key sk = {};
    addr6_of(&sk.vip, &ip6->daddr);
    sk.port = *dport_p;
    sk.proto = proto;
    struct lb_service *svc = lb_services6.lookup(&sk);
    if (!svc) {
        global_inc(LB_G_XDP_NOT_OURS);
        return XDP_PASS;
    }
    struct lb_ct6_key fk = {};
    addr6_of(&fk.saddr, &ip6->saddr);
    fk.daddr = sk.vip;
    fk.sport = sport;
    fk.dport = *dport_p;
    fk.proto = proto;
    struct lb_picked6 to = {};
    int verdict = xdp_flow6(svc, &fk, l4, l4_len, ip_len, is_tcp, &seg, data_end, &to);
    if (verdict != LB_GO_NAT)
        return verdict;

    // The flow logic's many paths leave the packet pointers with different verified ranges, and
    // live pointers keep the verifier from merging those paths (it would pass its limit): the
    // rewrite works on pointers fetched anew.
    data = (void *)(long)ctx->data;
    data_end = (void *)(long)ctx->data_end;
    ip6 = data + (l3_off & 0x1f);
    if ((void *)(ip6 + 1) > data_end)
        return XDP_PASS;
    l4 = (void *)ip6 + off;
    if (l4 + (is_tcp ? sizeof(struct tcphdr) : sizeof(struct udphdr)) > data_end)
        return XDP_PASS;
    dport_p = (__u16 *)l4 + 1;
    l4_check = is_tcp ? &((struct tcphdr *)l4)->check : &((struct udphdr *)l4)->check;

    // DNAT: destination address (only the L4 pseudo header covers it) and port
    __u16 old_port = *dport_p;
    __builtin_memcpy(&ip6->daddr, &to.ip, sizeof(to.ip));
    *dport_p = to.port;
    __u16 c = lb_csum_replace16(*l4_check, &fk.daddr, &to.ip);
    c = lb_csum_replace2(c, old_port, to.port);
    *l4_check = is_tcp ? c : (c ? c : 0xffff);
#if LB_FAST_PATH
    return xdp_fast_forward6(ctx);
#else
    return XDP_PASS;
#endif
}

// TC egress, IPv6 at l3_off: a reply of a tracked flow leaves from its VIP:port
static __always_inline int tc_ipv6(struct __sk_buff *skb, __u32 l3_off, void *data, void *data_end)
{
    struct ipv6hdr *ip6 = data + l3_off;
    if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
        return TC_ACT_OK;
    __u32 off = 0;
    int frag = 0;
    int proto = ipv6_upper(ip6, data_end, &off, &frag);
    off &= 0x1fff;
    if (proto == IPPROTO_ICMPV6) {
        tc_icmp6_error(ip6, off, data_end);
        return TC_ACT_OK;
    }
    __u32 frag_id = 0;
    int frag_more = 0;
    if (frag) {                            // a later fragment is done here; a first one is SNATed below
        proto = tc_fragment6(skb, l3_off, ip6, off, data_end, &frag_id, &frag_more);
        off += sizeof(struct lb_ip6_frag);
    }
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
        return TC_ACT_OK;
    __u32 ip_len = sizeof(*ip6) + ntohs(ip6->payload_len);
    __u32 l4_off = l3_off + off;
    void *l4 = (void *)ip6 + off;
    __u32 csum_off;
    __be16 sport, dport;
    struct lb_seg seg = {};
    int is_tcp = proto == IPPROTO_TCP;
    if (is_tcp) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > data_end)
            return TC_ACT_OK;
        sport = th->source;
        dport = th->dest;
        __u32 hdr = th->doff * 4;
        __u32 payload = ip_len > off + hdr ? ip_len - off - hdr : 0;
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
    struct lb_ct6_key rk = {};
    addr6_of(&rk.saddr, &ip6->saddr);
    addr6_of(&rk.daddr, &ip6->daddr);
    rk.sport = sport;
    rk.dport = dport;
    rk.proto = proto;
    struct lb_addr6 vip = {};
    __u16 vip_port = 0;
    int verdict = tc_flow6(&rk, is_tcp, &seg, ip_len, &vip, &vip_port);
    if (verdict != LB_GO_NAT)
        return verdict;

    // SNAT: address and port written in place (the headers were pulled linear), then the L4
    // checksum by the difference of the addresses (pseudo header: CHECKSUM_PARTIAL skbs stay right)
    // and of the ports; a UDP result of 0 becomes 0xffff (BPF_F_MARK_MANGLED_0). The helper
    // invalidates packet pointers: it comes last.
    __builtin_memcpy(&ip6->saddr, &vip, sizeof(vip));
    *(__u16 *)l4 = vip_port;                        // source port: the first L4 field
    __u64 l4_flags = is_tcp ? 0 : BPF_F_MARK_MANGLED_0;
    bpf_l4_csum_replace(skb, csum_off, 0, lb_csum_diff16(&rk.saddr, &vip), l4_flags | BPF_F_PSEUDO_HDR);
    if (sport != vip_port)
        bpf_l4_csum_replace(skb, csum_off, sport, vip_port, l4_flags | sizeof(vip_port));
    if (frag_more)                         // the first fragment of a reply: the others follow it
        tc_first_fragment6(&rk.saddr, &rk.daddr, frag_id, proto, &vip);
    global_inc(LB_G_TC_SNAT);
    return TC_ACT_OK;
}

#endif
