// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// lbtui backend decapsulation (docs/scale-out.md), attached by `lbtui backend-setup`:
//   lbtui_decap  TC clsact ingress (direct action) on a backend's interface. An IPv4 packet of
//                protocol 4 (IPv4-in-IPv4) or 41 (IPv6-in-IPv4) whose outer destination is one of
//                this backend's addresses and whose inner destination is one of its VIPs loses its
//                outer header; the inner packet goes up the stack exactly as the load balancer
//                encapsulated it (no checksum or TTL touched). Every other tunnel packet passes
//                untouched and is counted by reason; non-tunnel traffic passes uncounted.
//
// Separate from lb.c: it runs on backends, which run no load balancer. TC rather than XDP so that it
// coexists with any XDP program the backend already has, works on every device type (bonds, VLANs,
// veth without native-XDP side effects) and keeps the skb's checksum/GSO state right: the kernel's
// bpf_skb_adjust_room does that bookkeeping for a header removed behind the MAC header.
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/in.h>
#include <uapi/linux/pkt_cls.h>

#ifndef DECAP_MAX_VIPS
#define DECAP_MAX_VIPS 1024
#endif
#ifndef DECAP_MAX_LOCAL
#define DECAP_MAX_LOCAL 64
#endif

// UAPI flags of bpf_skb_adjust_room (Linux 6.3+) under our own names: the bpf.h BCC compiles
// against may predate them. They make the kernel set skb->protocol to the inner header's family.
#define DECAP_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#define DECAP_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)

#define DECAP_IP_MF_OFFSET_BE 0xFF3F   // htons(IP_MF | IP_OFFSET)
#define DECAP_ETH_P_IP_BE 0x0008       // htons(ETH_P_IP)
#define DECAP_ETH_P_IPV6_BE 0xDD86     // htons(ETH_P_IPV6)

// Counter indices; lbtui/dataplane/decap.py names them in this order (DECAP_COUNTERS).
enum decap_counter {
    DECAP_C_IPIP = 0,          // IPv4-in-IPv4 packets decapsulated
    DECAP_C_IP6IP,             // IPv6-in-IPv4 packets decapsulated
    DECAP_C_BYTES,             // bytes of the inner packets handed to the stack
    DECAP_C_NOT_LOCAL,         // outer destination is not an address of this backend: passed
    DECAP_C_NOT_VIP,           // inner destination is not a VIP of this backend: passed
    DECAP_C_FRAGMENT,          // outer header is a fragment (the inner packet is not whole): passed
    DECAP_C_MALFORMED,         // outer options, truncated, lengths or versions inconsistent: passed
    DECAP_C_FAILED,            // the kernel refused to remove the header: passed untouched
    DECAP_NR_COUNTERS,
};

struct decap_in6 {
    __u32 a[4];
};

BPF_HASH(decap_vips4, __be32, __u8, DECAP_MAX_VIPS);
BPF_HASH(decap_vips6, struct decap_in6, __u8, DECAP_MAX_VIPS);
BPF_HASH(decap_local4, __be32, __u8, DECAP_MAX_LOCAL);
BPF_PERCPU_ARRAY(decap_stats, __u64, DECAP_NR_COUNTERS);

static __always_inline void count(__u32 idx, __u64 n)
{
    __u64 *v = decap_stats.lookup(&idx);
    if (v)
        *v += n;
}

static __always_inline int pass(__u32 idx)
{
    count(idx, 1);
    return TC_ACT_OK;
}

int lbtui_decap(struct __sk_buff *skb)
{
    const __u32 outer_at = sizeof(struct ethhdr);
    const __u32 inner_at = outer_at + sizeof(struct iphdr);
    // the headers must be in the linear part to be read; pull them only when they are not (a pull
    // may copy the head of a cloned skb: not something to pay on every packet of the backend)
    __u32 want = inner_at + sizeof(struct ipv6hdr);
    __u32 linear = skb->data_end - skb->data;
    if (linear < want && skb->len > linear)
        bpf_skb_pull_data(skb, skb->len < want ? skb->len : want);

    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != DECAP_ETH_P_IP_BE)
        return TC_ACT_OK;
    struct iphdr *outer = data + outer_at;
    if ((void *)(outer + 1) > data_end)
        return TC_ACT_OK;
    __u8 proto = outer->protocol;
    if (proto != IPPROTO_IPIP && proto != IPPROTO_IPV6)
        return TC_ACT_OK;

    // tunnel traffic from here on: every verdict is counted
    if (outer->version != 4 || outer->ihl != 5)
        return pass(DECAP_C_MALFORMED);
    __be32 outer_dst = outer->daddr;
    if (!decap_local4.lookup(&outer_dst))
        return pass(DECAP_C_NOT_LOCAL);
    if (outer->frag_off & DECAP_IP_MF_OFFSET_BE)
        return pass(DECAP_C_FRAGMENT);
    __u32 outer_len = bpf_ntohs(outer->tot_len);
    if (outer_len > skb->len - outer_at)
        return pass(DECAP_C_MALFORMED);

    __u64 flags;
    __u32 inner_len;
    if (proto == IPPROTO_IPIP) {
        struct iphdr *inner = data + inner_at;
        if ((void *)(inner + 1) > data_end)
            return pass(DECAP_C_MALFORMED);
        inner_len = bpf_ntohs(inner->tot_len);
        if (inner->version != 4 || inner->ihl < 5 || inner_len < inner->ihl * 4 ||
            inner_len + sizeof(struct iphdr) > outer_len)
            return pass(DECAP_C_MALFORMED);
        __be32 inner_dst = inner->daddr;
        if (!decap_vips4.lookup(&inner_dst))
            return pass(DECAP_C_NOT_VIP);
        flags = DECAP_ADJ_ROOM_DECAP_L3_IPV4;
    } else {
        struct ipv6hdr *inner = data + inner_at;
        if ((void *)(inner + 1) > data_end)
            return pass(DECAP_C_MALFORMED);
        inner_len = sizeof(struct ipv6hdr) + bpf_ntohs(inner->payload_len);
        if (inner->version != 6 || inner_len + sizeof(struct iphdr) > outer_len)
            return pass(DECAP_C_MALFORMED);
        struct decap_in6 inner_dst;
        __builtin_memcpy(&inner_dst, &inner->daddr, sizeof(inner_dst));
        if (!decap_vips6.lookup(&inner_dst))
            return pass(DECAP_C_NOT_VIP);
        flags = DECAP_ADJ_ROOM_DECAP_L3_IPV6;
    }

    // remove the 20 bytes behind the MAC header; the kernel moves the MAC header, fixes a
    // CHECKSUM_COMPLETE sum and GSO state, and sets skb->protocol from the flag
    if (bpf_skb_adjust_room(skb, -(int)sizeof(struct iphdr), BPF_ADJ_ROOM_MAC, flags))
        return pass(DECAP_C_FAILED);
    if (proto == IPPROTO_IPV6) {
        __be16 eth_proto = DECAP_ETH_P_IPV6_BE;
        bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &eth_proto, sizeof(eth_proto), 0);
        count(DECAP_C_IP6IP, 1);
    } else {
        count(DECAP_C_IPIP, 1);
    }
    count(DECAP_C_BYTES, inner_len);
    return TC_ACT_OK;
}
