// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// ICMP errors about NATed flows, both ways, and fragmented replies (docs/datapath.md#icmp-errors).
//
// An ICMP error (destination unreachable: frag-needed, port/host unreachable...; time exceeded)
// quotes the IP header and at least 8 bytes of the packet that caused it. For a NATed flow both the
// quoted packet and the outer addresses must be translated like the flow itself, or the error
// reaches the wrong host (PMTU discovery breaks behind the load balancer) and leaks the backend:
//   XDP: an error sent to the VIP about a reply (VIP:port -> client:port) goes to the backend, with
//        the quote as the backend sent it (backend:port -> client:port)
//   TC:  an error sent to a client about its packet to a backend (client:port -> backend:port)
//        leaves from the VIP, with the quote as the client sent it (client:port -> VIP:port)
// Every checksum involved is updated: the quoted IP header's, the quoted TCP/UDP checksum when the
// quote holds it, the ICMP checksum (it covers the quote) and the outer IP header's.
#ifndef LBTUI_LB_ICMP_H
#define LBTUI_LB_ICMP_H

#include "lb.h"
#include "lb_csum.h"
#include "lb_ct.h"
#include "lb_stats.h"

#define LB_IP_MF 0x0020                // htons(IP_MF)
#define LB_IP_OFFSET_BE 0xFF1F         // htons(IP_OFFSET)

// The quoted packet of an ICMP error behind `ic`: its IP header, its L4 header (8 bytes at least),
// or 0 when the error is not one we translate. `ip_end` is where the outer IP packet ends (padding
// after it is not part of the quote).
static __always_inline struct iphdr *icmp_quote(struct icmphdr *ic, void *ip_end, void *data_end, void **l4_out)
{
    if ((void *)(ic + 1) > data_end || (void *)(ic + 1) > ip_end)
        return 0;
    if (ic->type != ICMP_DEST_UNREACH && ic->type != ICMP_TIME_EXCEEDED)
        return 0;
    struct iphdr *in = (void *)(ic + 1);
    if ((void *)(in + 1) > data_end)
        return 0;
    if (in->version != 4 || in->ihl < 5 || (in->frag_off & LB_IP_OFFSET_BE))
        return 0;
    if (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP)
        return 0;
    void *l4 = (void *)in + ((in->ihl * 4) & 0x3c);
    if (l4 + 8 > data_end || l4 + 8 > ip_end)
        return 0;
    *l4_out = l4;
    return in;
}

// Rewrite the quoted packet's address (at quoted IP offset addr_off: 12 source, 16 destination)
// and port (at quoted L4 offset port_off: 0 source, 2 destination) to `ip`:`port`; the quoted
// checksums and the ICMP checksum follow.
static __always_inline void icmp_rewrite_quote(struct icmphdr *ic, struct iphdr *in, void *l4, int source,
                                               lb_addr_t ip, __u16 port, void *ip_end, void *data_end)
{
    __u32 *addr = source ? &in->saddr : &in->daddr;
    __u16 *port_p = source ? (__u16 *)l4 : (__u16 *)l4 + 1;
    __u32 old_ip = *addr;
    __u16 old_port = *port_p;
    __u16 old_ipcheck = in->check;
    __u16 icsum = ic->checksum;
    *addr = ip;
    in->check = lb_csum_replace4(in->check, old_ip, ip);
    icsum = lb_csum_replace4(icsum, old_ip, ip);
    icsum = lb_csum_replace2(icsum, old_ipcheck, in->check);
    *port_p = port;
    icsum = lb_csum_replace2(icsum, old_port, port);
    __u16 *l4check = in->protocol == IPPROTO_TCP ? (__u16 *)(l4 + 16) : (__u16 *)(l4 + 6);
    if ((void *)(l4check + 1) <= data_end && (void *)(l4check + 1) <= ip_end &&
        (in->protocol == IPPROTO_TCP || *l4check != 0)) {
        __u16 old_check = *l4check;
        __u16 c = lb_csum_replace4(old_check, old_ip, ip);
        c = lb_csum_replace2(c, old_port, port);
        if (in->protocol == IPPROTO_UDP)
            c = lb_udp_csum(old_check, c);
        *l4check = c;
        icsum = lb_csum_replace2(icsum, old_check, c);
    }
    ic->checksum = icsum;
}

// XDP: an ICMP error to the VIP about one of its replies goes to the flow's backend.
static __always_inline int xdp_icmp_error(struct iphdr *iph, __u32 ihl_len, __u32 ip_len, void *data_end)
{
    struct icmphdr *ic = (void *)iph + (ihl_len & 0x3c);
    void *ip_end = (void *)iph + (ip_len & 0xffff);
    void *l4 = 0;
    struct iphdr *in = icmp_quote(ic, ip_end, data_end, &l4);
    if (!in || in->saddr != iph->daddr)
        return 0;
    struct lb_ct_key fk = {};
    fk.saddr = in->daddr;
    fk.daddr = in->saddr;
    fk.sport = ((__u16 *)l4)[1];
    fk.dport = ((__u16 *)l4)[0];
    fk.proto = in->protocol;
    int table;
    struct lb_ct_entry *fwd = ct_lookup(&fk, &table);
    if (!fwd || fwd->dir != LB_DIR_FORWARD)
        return 0;
    lb_addr_t ip = fwd->backend_ip;
    icmp_rewrite_quote(ic, in, l4, 1, ip, fwd->backend_port, ip_end, data_end);
    __u32 old_dst = iph->daddr;
    iph->daddr = ip;
    iph->check = lb_csum_replace4(iph->check, old_dst, ip);
    global_inc(LB_G_XDP_ICMP);
    return 1;
}

// TC: an ICMP error to a client about its packet to a backend leaves from the VIP. The headers are
// linear and writable (bpf_skb_pull_data); returns 1 if translated.
static __always_inline int tc_icmp_error(struct iphdr *iph, __u32 ihl_len, void *data_end)
{
    struct icmphdr *ic = (void *)iph + (ihl_len & 0x3c);
    void *ip_end = (void *)iph + (ntohs(iph->tot_len) & 0xffff);
    void *l4 = 0;
    struct iphdr *in = icmp_quote(ic, ip_end, data_end, &l4);
    if (!in || in->saddr != iph->daddr)
        return 0;
    struct lb_ct_key rk = {};
    rk.saddr = in->daddr;
    rk.daddr = in->saddr;
    rk.sport = ((__u16 *)l4)[1];
    rk.dport = ((__u16 *)l4)[0];
    rk.proto = in->protocol;
    int table;
    struct lb_ct_entry *rev = ct_lookup(&rk, &table);
    if (!rev || rev->dir != LB_DIR_REVERSE)
        return 0;
    lb_addr_t vip = rev->vip;
    icmp_rewrite_quote(ic, in, l4, 0, vip, rev->vip_port, ip_end, data_end);
    __u32 old_src = iph->saddr;
    iph->saddr = vip;
    iph->check = lb_csum_replace4(iph->check, old_src, vip);
    global_inc(LB_G_TC_ICMP);
    return 1;
}

// TC: a fragment after the first of a reply whose first fragment was SNATed: the same source.
// Only the IP header changes (the ports and the L4 checksum are in the first fragment).
static __always_inline int tc_later_fragment(struct iphdr *iph)
{
    struct lb_frag_key fk = {};
    fk.saddr = iph->saddr;
    fk.daddr = iph->daddr;
    fk.id = iph->id;
    fk.proto = iph->protocol;
    struct lb_frag *f = lb_frags.lookup(&fk);
    if (!f)
        return 0;
    lb_addr_t vip = f->vip;
    __u32 old_src = iph->saddr;
    iph->saddr = vip;
    iph->check = lb_csum_replace4(iph->check, old_src, vip);
    global_inc(LB_G_TC_FRAGMENTS);
    return 1;
}

// TC: the first fragment of a reply was SNATed: remember where its other fragments go.
static __always_inline void tc_first_fragment(lb_addr_t backend, lb_addr_t client, __u16 id, __u8 proto,
                                              lb_addr_t vip)
{
    struct lb_frag_key fk = {};
    fk.saddr = backend;
    fk.daddr = client;
    fk.id = id;
    fk.proto = proto;
    struct lb_frag f = {};
    f.vip = vip;
    lb_frags.update(&fk, &f);
}

#endif
