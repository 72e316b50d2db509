// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// The fast path's way out (docs/datapath.md#next-hop-cache), one implementation for both directions
// and both families: fp_next_hop asks bpf_fib_lookup for the egress interface and the next hop's MAC,
// counts why an answer cannot be used, and remembers a usable one for LB_FP_NH_TTL_NS or until
// userspace bumps lb_fp_gen (a neighbour, route, address or link change, or a new lb_fp_ifaces:
// lbtui/dataplane/fastpath.py NextHopWatch), so that most packets cost a hash lookup instead of a
// fib lookup. The callers (lb_fastpath.h, lb_fastpath_reply.h, lb_fastpath6.h) fill the lookup's
// question and rewrite the frame.
// Compiled only with LB_FAST_PATH=1.
#ifndef LBTUI_LB_NEXTHOP_H
#define LBTUI_LB_NEXTHOP_H

#include "lb.h"
#include "lb_stats.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

#define LB_IPV6_FLOWINFO_MASK_BE 0xFFFFFF0F      // htonl(0x0FFFFFFF): traffic class and flow label
#define LB_IPV6_TCLASS_MASK_BE 0x0000F00F        // htonl(0x0FF00000): the traffic class alone

#if LB_FAST_PATH
#ifndef LB_FP_NH_ENTRIES
#define LB_FP_NH_ENTRIES 8192       // forward: (ingress interface, backend, TOS) remembered
#endif
#ifndef LB_FP_REPLY_NH_ENTRIES
#define LB_FP_REPLY_NH_ENTRIES 65536    // replies: (ingress interface, VIP, client, TOS/flow, protocol)
#endif
#define LB_FP_NH_TTL_NS 1000000000ULL   // a remembered next hop is asked again after 1 s at the latest

// What a remembered answer is valid for, in one map per family and direction (IPv4 keys hash 16
// bytes, IPv6 keys 44: the implementation below is one). Forward (lb_fp_nexthops, lb_fp_nexthops6),
// per backend as IPVS keeps a route
// per real server: the ingress interface, the backend address, the TOS (IPv6: traffic class); the
// client's address, the flow label and the ports are left out, so a new flow to a known backend costs
// no fib lookup either, and source policy routing and multipath toward one backend are not followed
// per client. Replies (lb_fp_reply_nexthops, lb_fp_reply_nexthops6): everything the kernel's
// routing and its default multipath hash look at (ingress interface, source = VIP, destination = client, TOS or traffic
// class and flow label, protocol), so a remembered answer is the one bpf_fib_lookup gives for that
// packet; only the ports are left out (multipath hash policy 1, port rules: docs/datapath.md).
struct lb_nh_key {                  // IPv4
    __u32 ifindex;
    __be32 daddr;
    __be32 saddr;                   // replies only: the VIP
    __u8 tos;
    __u8 proto;                     // replies only
    __u8 pad[2];
};

struct lb_nh_key6 {
    __u32 ifindex;
    __be32 flowinfo;                // traffic class (+ flow label for replies)
    struct lb_addr6 daddr;
    struct lb_addr6 saddr;          // replies only: the VIP
    __u8 proto;                     // replies only
    __u8 pad[3];
};

struct lb_nh {
    __u64 expires_ns;               // bpf_ktime_get_coarse_ns of the lookup + LB_FP_NH_TTL_NS
    __u32 gen;                      // lb_fp_gen when it was looked up: another value = stale
    __u32 ifindex;                  // egress interface (in lb_fp_ifaces when looked up)
    __u8 imac[ETH_ALEN];            // forward only: the ingress interface's MAC (lb_fp_ifaces) then
    __u16 len_ok;                   // the IP length the lookup's MTU check passed: larger ones ask again
    __u8 smac[ETH_ALEN];
    __u8 dmac[ETH_ALEN];
    __u32 pad;
};

// Not pinned: a restarted lbtui starts with empty caches and generation 0.
BPF_F_TABLE("lru_hash", struct lb_nh_key, struct lb_nh, lb_fp_nexthops, LB_FP_NH_ENTRIES, 0);
BPF_F_TABLE("lru_hash", struct lb_nh_key6, struct lb_nh, lb_fp_nexthops6, LB_FP_NH_ENTRIES, 0);
BPF_F_TABLE("lru_hash", struct lb_nh_key, struct lb_nh, lb_fp_reply_nexthops, LB_FP_REPLY_NH_ENTRIES, 0);
BPF_F_TABLE("lru_hash", struct lb_nh_key6, struct lb_nh, lb_fp_reply_nexthops6, LB_FP_REPLY_NH_ENTRIES, 0);
BPF_ARRAY(lb_fp_gen, __u32, 1);     // bumped by userspace (lbtui/dataplane/maps.py forget_next_hops)

// the fallback reason of a bpf_fib_lookup answer other than SUCCESS
static __always_inline void fp_count_fib_failure(int rc)
{
    if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
        global_inc(LB_G_FP_NO_NEIGH);
    else if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
        global_inc(LB_G_FP_FRAG_NEEDED);
    else
        global_inc(LB_G_FP_FIB_OTHER);
}

// What a bpf_fib_lookup answer allows: 1 when the packet may leave through fib->ifindex (SUCCESS and
// an interface lbtui manages; for an XDP frame (`reply` 0) one it may redirect XDP frames into), else
// 0 with the reason counted.
static __always_inline int fp_fib_usable(int reply, int rc, struct bpf_fib_lookup *fib)
{
    if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
        fp_count_fib_failure(rc);
        return 0;
    }
    __u32 out = fib->ifindex;
    struct lb_fp_iface *iface = lb_fp_ifaces.lookup(&out);
    if (!iface || (!reply && !iface->xdp_out)) {
        global_inc(LB_G_FP_UNMANAGED);
        return 0;
    }
    return 1;
}

// 1 when the two MACs are equal (a: the frame's, 2-byte aligned; b: a map value's, 4-byte aligned)
static __always_inline int fp_mac_eq(const __u8 *a, const __u8 *b)
{
    return ((*(__u32 *)a ^ *(__u32 *)b) | (*(__u16 *)(a + 4) ^ *(__u16 *)(b + 4))) == 0;
}

// The kernel forwards only frames addressed to the ingress interface (ip_forward and ip6_forward drop
// any other pkt_type: a frame a switch flooded for another host, one seen in promiscuous mode, an L2
// broadcast or multicast carrying a unicast address), so the forward fast path redirects only those
// too: 1 when eth's destination is the MAC lb_fp_ifaces holds for the ingress interface, which is
// copied to way->imac for the cache; else 0 with the reason counted (an interface lbtui does not
// manage: unmanaged).
static __always_inline int fp_ingress_ok(struct ethhdr *eth, __u32 ifindex, struct lb_nh *way)
{
    struct lb_fp_iface *iface = lb_fp_ifaces.lookup(&ifindex);
    if (!iface) {
        global_inc(LB_G_FP_UNMANAGED);
        return 0;
    }
    if (!fp_mac_eq(eth->h_dest, iface->mac)) {
        global_inc(LB_G_FP_OTHER_HOST);
        return 0;
    }
    __builtin_memcpy(way->imac, iface->mac, ETH_ALEN);
    return 1;
}

// The cache of a family and direction (`family`, `reply`: the caller's constants, so each call
// site keeps one map). BCC rewrites a map call only where the map's name is written out.
static __always_inline struct lb_nh *fp_nh_lookup(int family, int reply, void *k)
{
    if (family == AF_INET)
        return reply ? lb_fp_reply_nexthops.lookup(k) : lb_fp_nexthops.lookup(k);
    return reply ? lb_fp_reply_nexthops6.lookup(k) : lb_fp_nexthops6.lookup(k);
}

static __always_inline void fp_nh_update(int family, int reply, void *k, struct lb_nh *nh)
{
    if (family == AF_INET) {
        if (reply)
            lb_fp_reply_nexthops.update(k, nh);
        else
            lb_fp_nexthops.update(k, nh);
    } else if (reply) {
        lb_fp_reply_nexthops6.update(k, nh);
    } else {
        lb_fp_nexthops6.update(k, nh);
    }
}

static __always_inline void fp_nh_delete(int family, int reply, void *k)
{
    if (family == AF_INET) {
        if (reply)
            lb_fp_reply_nexthops.delete(k);
        else
            lb_fp_nexthops.delete(k);
    } else if (reply) {
        lb_fp_reply_nexthops6.delete(k);
    } else {
        lb_fp_nexthops6.delete(k);
    }
}

// The way out for the question in fib (family, addresses, TOS/flow info, protocol, ports, tot_len =
// the packet's IP length, ifindex = the ingress interface, all filled; `family` and `reply` are
// constants of the caller; eth: the frame, forward only, replies pass 0: TC checked skb->pkt_type).
// 1: *way holds the egress interface and MACs, from the family's and
// direction's cache when remembered, current and the packet no longer than
// the length known to fit, else from bpf_fib_lookup, whose usable answer is remembered. 0: the packet
// must take the kernel's way, the reason counted; a failed lookup forgets the remembered way, unless
// only this packet was too large for it (FRAG_NEEDED leaves the MTU in tot_len's place, below len).
// Forward, a frame not addressed to the ingress interface's MAC falls back (fp_ingress_ok): on a miss
// before the lookup, on a hit against the MAC the entry keeps, so nothing a foreign frame does is
// remembered.
static __always_inline int fp_next_hop(void *ctx, int family, int reply, struct ethhdr *eth,
                                       struct bpf_fib_lookup *fib, struct lb_nh *way)
{
    // the key, read from the question before the lookup overwrites it
    struct lb_nh_key k4 = {};
    struct lb_nh_key6 k6 = {};
    void *k = &k4;
    if (family == AF_INET) {
        k4.ifindex = fib->ifindex;
        k4.daddr = fib->ipv4_dst;
        k4.tos = fib->tos;
        if (reply) {
            k4.saddr = fib->ipv4_src;
            k4.proto = fib->l4_protocol;
        }
    } else {
        k = &k6;
        k6.ifindex = fib->ifindex;
        k6.flowinfo = fib->flowinfo & (reply ? LB_IPV6_FLOWINFO_MASK_BE : LB_IPV6_TCLASS_MASK_BE);
        __builtin_memcpy(&k6.daddr, fib->ipv6_dst, sizeof(k6.daddr));
        if (reply) {
            __builtin_memcpy(&k6.saddr, fib->ipv6_src, sizeof(k6.saddr));
            k6.proto = fib->l4_protocol;
        }
    }
    __u32 len = fib->tot_len;
    __u32 zero = 0;
    __u32 *genp = lb_fp_gen.lookup(&zero);           // read before the lookup: see docs
    __u32 gen = genp ? *genp : 0;
    __u64 now = bpf_ktime_get_coarse_ns();
    struct lb_nh *nh = fp_nh_lookup(family, reply, k);
    if (nh && nh->gen == gen && now < nh->expires_ns && len <= nh->len_ok) {
        if (!reply && !fp_mac_eq(eth->h_dest, nh->imac)) {
            global_inc(LB_G_FP_OTHER_HOST);
            return 0;
        }
        __builtin_memcpy(way, nh, sizeof(*way));
        return 1;
    }
    if (reply)
        __builtin_memset(way->imac, 0, ETH_ALEN);
    else if (!fp_ingress_ok(eth, fib->ifindex, way))
        return 0;
    if (!fp_fib_usable(reply, bpf_fib_lookup(ctx, fib, sizeof(*fib), 0), fib)) {
        if (nh && fib->tot_len >= len)
            fp_nh_delete(family, reply, k);
        return 0;
    }
    way->expires_ns = now + LB_FP_NH_TTL_NS;
    way->gen = gen;
    way->ifindex = fib->ifindex;
    __builtin_memcpy(way->smac, fib->smac, ETH_ALEN);
    __builtin_memcpy(way->dmac, fib->dmac, ETH_ALEN);
    way->len_ok = len;
    way->pad = 0;
    fp_nh_update(family, reply, k, way);
    return 1;
}

// the frame's new MACs: from the egress interface to the next hop
static __always_inline void fp_set_macs(struct ethhdr *eth, struct lb_nh *way)
{
    __builtin_memcpy(eth->h_dest, way->dmac, ETH_ALEN);
    __builtin_memcpy(eth->h_source, way->smac, ETH_ALEN);
}

// TC: the first `want` bytes of the skb (at most its length) linear, pulled only when they are not
// already; the caller reads skb->data and data_end afterwards
static __always_inline void fp_pull_headers(struct __sk_buff *skb, __u32 want)
{
    if (want > skb->len)
        want = skb->len;
    if ((void *)(long)skb->data + want > (void *)(long)skb->data_end)
        bpf_skb_pull_data(skb, want);
}

// The L3 length of the largest packet this skb leaves as: a GSO skb is cut into segments of gso_size
// bytes of payload after the headers (the kernel's forwarding checks those against the MTU:
// skb_gso_validate_network_len), any other one is sent whole. bpf_fib_lookup with a skb and tot_len 0
// would check only skb->len against the device's MTU + 18 bytes and let every GSO skb pass, whatever
// its segments' size and the route's MTU, so the length is always given (docs/datapath.md#fast-path).
static __always_inline __u32 fp_wire_len(struct __sk_buff *skb, __u32 ip_len, __u32 headers)
{
    __u32 gso = skb->gso_size;
    if (gso && headers + gso < ip_len)
        return headers + gso;
    return ip_len;
}
#endif

#endif
