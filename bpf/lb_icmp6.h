// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// ICMPv6 errors about NATed IPv6 flows, both ways, and fragmented IPv6 replies: lb_icmp.h for IPv6
// (docs/datapath.md#icmpv6-errors).
//
// An ICMPv6 error (destination unreachable, packet too big, time exceeded) quotes as much of the
// offending packet as fits in 1280 bytes. Translated like the IPv4 ones:
//   XDP: an error sent to the VIP about a reply (VIP:port -> client:port) goes to the backend, with
//        the quote as the backend sent it (backend:port -> client:port); Packet Too Big above all,
//        or path-MTU discovery toward a client behind a narrow link never converges
//   TC:  an error sent to a client about its packet to a backend (client:port -> backend:port)
//        leaves from the VIP, with the quote as the client sent it (client:port -> VIP:port)
// IPv6 has no header checksum, but the ICMPv6 checksum covers a pseudo header with the outer
// addresses (ICMPv4's does not): it follows the outer address, the quoted address and port, and the
// quoted TCP/UDP checksum when the quote holds it.
//
// Fragments: only the source fragments in IPv6, so a backend's UDP reply larger than its path MTU
// leaves the backend as fragments. TC SNATs the first (it carries the ports) like a whole reply and
// remembers (backend, client, identification, protocol) -> VIP in lb_frags6 for the later ones,
// which only need their source address changed (there is no IP header checksum to fix).
#ifndef LBTUI_LB_ICMP6_H
#define LBTUI_LB_ICMP6_H

#include "lb.h"
#include "lb_csum.h"
#include "lb_stats.h"

#define LB_ICMP6_DEST_UNREACH 1
#define LB_ICMP6_PKT_TOOBIG 2
#define LB_ICMP6_TIME_EXCEED 3
#define LB_NH_FRAGMENT6 44
#define LB_FRAG6_OFFSET_BE 0xF8FF      // htons(0xFFF8): the fragment offset bits
#define LB_FRAG6_MORE_BE 0x0100        // htons(1): more fragments follow

struct lb_icmp6hdr {
    __u8 type;
    __u8 code;
    __u16 checksum;
    __u32 data;                        // Packet Too Big: the MTU
};

struct lb_ip6_frag {
    __u8 nexthdr;
    __u8 reserved;
    __u16 frag_off;                    // offset in 8-byte units << 3 | more fragments
    __u32 id;
};

// The quoted packet of an ICMPv6 error behind `ic`: its IPv6 header, its TCP/UDP header (8 bytes
// at least) in *l4_out and the protocol in *proto, or 0 when the error is not one we translate. A
// quote of a first fragment has its fragment header skipped; a later fragment has no ports.
static __always_inline struct ipv6hdr *icmp6_quote(struct lb_icmp6hdr *ic, void *ip_end, void *data_end,
                                                   void **l4_out, __u8 *proto)
{
    if ((void *)(ic + 1) > data_end || (void *)(ic + 1) > ip_end)
        return 0;
    if (ic->type != LB_ICMP6_DEST_UNREACH && ic->type != LB_ICMP6_PKT_TOOBIG &&
        ic->type != LB_ICMP6_TIME_EXCEED)
        return 0;
    struct ipv6hdr *in = (void *)(ic + 1);
    if ((void *)(in + 1) > data_end || in->version != 6)
        return 0;
    __u8 next = in->nexthdr;
    void *l4 = (void *)(in + 1);
    if (next == LB_NH_FRAGMENT6) {
        struct lb_ip6_frag *fh = l4;
        if ((void *)(fh + 1) > data_end || (fh->frag_off & LB_FRAG6_OFFSET_BE))
            return 0;
        next = fh->nexthdr;
        l4 = (void *)(fh + 1);
    }
    if (next != IPPROTO_TCP && next != IPPROTO_UDP)
        return 0;
    if (l4 + 8 > data_end || l4 + 8 > ip_end)
        return 0;
    *l4_out = l4;
    *proto = next;
    return in;
}

// Rewrite the quoted packet's source (source=1) or destination address and port to `ip`:`port`;
// the quoted TCP/UDP checksum and the ICMPv6 checksum follow.
static __always_inline void icmp6_rewrite_quote(struct lb_icmp6hdr *ic, struct ipv6hdr *in, void *l4,
                                                __u8 proto, int source, struct lb_addr6 *ip, __u16 port,
                                                void *ip_end, void *data_end)
{
    struct lb_addr6 old_ip = {};
    __builtin_memcpy(&old_ip, source ? &in->saddr : &in->daddr, sizeof(old_ip));
    __builtin_memcpy(source ? &in->saddr : &in->daddr, ip, sizeof(*ip));
    __u16 *port_p = source ? (__u16 *)l4 : (__u16 *)l4 + 1;
    __u16 old_port = *port_p;
    *port_p = port;
    __u16 icsum = lb_csum_replace16(ic->checksum, &old_ip, ip);
    icsum = lb_csum_replace2(icsum, old_port, port);
    __u16 *l4check = proto == IPPROTO_TCP ? (__u16 *)(l4 + 16) : (__u16 *)(l4 + 6);
    if ((void *)(l4check + 1) <= data_end && (void *)(l4check + 1) <= ip_end &&
        (proto == IPPROTO_TCP || *l4check != 0)) {
        __u16 old_check = *l4check;
        __u16 c = lb_csum_replace16(old_check, &old_ip, ip);
        c = lb_csum_replace2(c, old_port, port);
        if (proto == IPPROTO_UDP && c == 0)
            c = 0xffff;                // a computed 0 is sent as 0xffff (0: no checksum)
        *l4check = c;
        icsum = lb_csum_replace2(icsum, old_check, c);
    }
    ic->checksum = icsum;
}

// XDP: an ICMPv6 error to the VIP about one of its replies goes to the flow's backend. `off` is
// the ICMPv6 header's offset from the IPv6 header; returns 1 if translated.
static __always_inline int xdp_icmp6_error(struct ipv6hdr *ip6, __u32 off, __u32 ip_len, void *data_end)
{
    struct lb_icmp6hdr *ic = (void *)ip6 + (off & 0x1fff);
    void *ip_end = (void *)ip6 + (ip_len & 0x1ffff);
    void *l4 = 0;
    __u8 proto = 0;
    struct ipv6hdr *in = icmp6_quote(ic, ip_end, data_end, &l4, &proto);
    if (!in)
        return 0;
    struct lb_ct6_key fk = {};
    __builtin_memcpy(&fk.saddr, &in->daddr, sizeof(fk.saddr));
    __builtin_memcpy(&fk.daddr, &in->saddr, sizeof(fk.daddr));
    struct lb_addr6 outer_dst = {};
    __builtin_memcpy(&outer_dst, &ip6->daddr, sizeof(outer_dst));
    if (!lb_addr6_eq(&fk.daddr, &outer_dst))
        return 0;                      // the quote is not a packet from the address the error went to
    fk.sport = ((__u16 *)l4)[1];
    fk.dport = ((__u16 *)l4)[0];
    fk.proto = proto;
    int table;
    struct lb_ct6_entry *fwd = ct_lookup6(&fk, &table);
    if (!fwd || fwd->dir != LB_DIR_FORWARD)
        return 0;
    struct lb_addr6 backend = fwd->backend_ip;
    icmp6_rewrite_quote(ic, in, l4, proto, 1, &backend, fwd->backend_port, ip_end, data_end);
    __builtin_memcpy(&ip6->daddr, &backend, sizeof(backend));
    ic->checksum = lb_csum_replace16(ic->checksum, &outer_dst, &backend);
    global_inc(LB_G_XDP_ICMP);
    return 1;
}

// TC: an ICMPv6 error to a client about its packet to a backend leaves from the VIP. The headers
// are linear and writable (bpf_skb_pull_data); returns 1 if translated.
static __always_inline int tc_icmp6_error(struct ipv6hdr *ip6, __u32 off, void *data_end)
{
    struct lb_icmp6hdr *ic = (void *)ip6 + (off & 0x1fff);
    void *ip_end = (void *)ip6 + sizeof(*ip6) + (ntohs(ip6->payload_len) & 0xffff);
    void *l4 = 0;
    __u8 proto = 0;
    struct ipv6hdr *in = icmp6_quote(ic, ip_end, data_end, &l4, &proto);
    if (!in)
        return 0;
    struct lb_ct6_key rk = {};
    __builtin_memcpy(&rk.saddr, &in->daddr, sizeof(rk.saddr));
    __builtin_memcpy(&rk.daddr, &in->saddr, sizeof(rk.daddr));
    struct lb_addr6 outer_dst = {};
    __builtin_memcpy(&outer_dst, &ip6->daddr, sizeof(outer_dst));
    if (!lb_addr6_eq(&rk.daddr, &outer_dst))
        return 0;
    rk.sport = ((__u16 *)l4)[1];
    rk.dport = ((__u16 *)l4)[0];
    rk.proto = proto;
    int table;
    struct lb_ct6_entry *rev = ct_lookup6(&rk, &table);
    if (!rev || rev->dir != LB_DIR_REVERSE)
        return 0;
    struct lb_addr6 vip = rev->vip;
    icmp6_rewrite_quote(ic, in, l4, proto, 0, &vip, rev->vip_port, ip_end, data_end);
    struct lb_addr6 old_src = {};
    __builtin_memcpy(&old_src, &ip6->saddr, sizeof(old_src));
    __builtin_memcpy(&ip6->saddr, &vip, sizeof(vip));
    ic->checksum = lb_csum_replace16(ic->checksum, &old_src, &vip);
    global_inc(LB_G_TC_ICMP);
    return 1;
}

// TC: a fragment of an IPv6 packet whose fragment header is at `off` from the IPv6 header. A later
// fragment of a reply whose first fragment was SNATed gets the VIP as source here (returns 0: done
// with it, as with anything we do not handle); a first fragment returns its TCP/UDP protocol and
// its identification in *id and whether more follow in *more, to be SNATed like a whole reply and
// remembered (tc_first_fragment6).
static __always_inline int tc_fragment6(struct __sk_buff *skb, __u32 l3_off, struct ipv6hdr *ip6, __u32 off,
                                        void *data_end, __u32 *id, int *more)
{
    struct lb_ip6_frag *fh = (void *)ip6 + (off & 0x1fff);
    if ((void *)(fh + 1) > data_end)
        return 0;
    if (fh->nexthdr != IPPROTO_TCP && fh->nexthdr != IPPROTO_UDP)
        return 0;
    if (!(fh->frag_off & LB_FRAG6_OFFSET_BE)) {
        *id = fh->id;
        *more = (fh->frag_off & LB_FRAG6_MORE_BE) != 0;
        return fh->nexthdr;
    }
    struct lb_frag6_key fk = {};
    __builtin_memcpy(&fk.saddr, &ip6->saddr, sizeof(fk.saddr));
    __builtin_memcpy(&fk.daddr, &ip6->daddr, sizeof(fk.daddr));
    fk.id = fh->id;
    fk.proto = fh->nexthdr;
    struct lb_frag6 *f = lb_frags6.lookup(&fk);
    if (!f)
        return 0;
    struct lb_addr6 vip = f->vip;
    bpf_skb_store_bytes(skb, l3_off + offsetof(struct ipv6hdr, saddr), &vip, sizeof(vip), 0);
    global_inc(LB_G_TC_FRAGMENTS);
    return 0;
}

// TC: the first fragment of a reply was SNATed: remember where its other fragments go.
static __always_inline void tc_first_fragment6(struct lb_addr6 *backend, struct lb_addr6 *client, __u32 id,
                                               __u8 proto, struct lb_addr6 *vip)
{
    struct lb_frag6_key fk = {};
    fk.saddr = *backend;
    fk.daddr = *client;
    fk.id = id;
    fk.proto = proto;
    struct lb_frag6 f = {};
    f.vip = *vip;
    lb_frags6.update(&fk, &f);
}

#endif
