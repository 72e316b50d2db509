// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// lbtui data path (docs/datapath.md#what-the-programs-do):
//   lbtui_xdp   XDP on the client-facing interfaces: parse, validate, conntrack lookup, backend pick
//               for new flows, DNAT with incremental checksum updates, counters, events; ICMP errors
//               about a flow go to its backend. XDP_PASS, except for what must not reach a backend
//               (counted per service by drop reason).
//   lbtui_tc    TC clsact egress (direct action) on the same interfaces: replies of tracked flows get
//               their source rewritten back to VIP:port (fragments too), ICMP errors about a flow
//               carry the VIP; TCP state of the reply side.
//   lbtui_reap  never attached: the engine runs it on records of flows to remove (lb_reap_rec).
//
// XDP checksum updates assume a complete L4 checksum (what a NIC delivers); see docs/datapath.md#checksums.
#include "lb.h"
#include "lb_csum.h"
#include "lb_stats.h"
#include "lb_ct.h"
#include "lb_tcp.h"
#include "lb_ratelimit.h"
#include "lb_pick.h"
#include "lb_icmp.h"

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

// The backend of a tracked flow takes no new flows any more (removed, down, drained, circuit open,
// or its id now names another address): a SYN on the flow's tuple is a new connection for another.
static __always_inline int backend_gone(struct lb_ct_entry *fwd)
{
    __u32 bid = fwd->backend_id;
    struct lb_backend *be = lb_backends.lookup(&bid);
    return !be || !(be->flags & LB_BE_F_ACTIVE) || (be->flags & LB_BE_F_NO_NEW) ||
           be->ip != fwd->backend_ip || be->port != fwd->backend_port;
}

// The client's ACK acknowledges the backend's SYN-ACK (and nothing it has not sent).
static __always_inline int handshake_ack_ok(struct lb_ct_entry *rev, __u32 ack)
{
    if (!rev || !(rev->flags & LB_CT_F_SEQ))
        return 1;                                   // nothing to check with (the entry was re-created)
    __u32 first = rev->seq_first + 1;
    return ack - first <= rev->seq_next - first;
}

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
    __u32 service_id = svc->id;
    __u32 l4_len = ip_len - ihl_len;

    // TCP validation (docs/datapath.md#tcp-validation): invalid flag combinations, and a bad
    // checksum on a segment that would change state (short ones: checked here in full)
    if (is_tcp && (seg.flags & TCP_SYN) && (seg.flags & (TCP_RST | TCP_FIN))) {
        count_drop(service_id, LB_DROP_TCP_FLAGS);
        return XDP_DROP;
    }
    if (is_tcp && (seg.flags & (TCP_SYN | TCP_RST | TCP_FIN)) &&
        lb_l4_csum_ok(iph, l4, l4_len, IPPROTO_TCP, data_end) == 0) {
        count_drop(service_id, LB_DROP_BAD_CSUM);
        return XDP_DROP;
    }
    __u64 now = bpf_ktime_get_ns();

    struct lb_ct_key fk = {};
    fk.saddr = iph->saddr;
    fk.daddr = iph->daddr;
    fk.sport = sport;
    fk.dport = *dport_p;
    fk.proto = iph->protocol;

    lb_addr_t new_ip;
    __u16 new_port;
    __u32 backend_id;
    int is_syn = is_tcp && (seg.flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
    int table;
    struct lb_ct_entry *fwd = ct_lookup(&fk, &table);
    // a SYN on a closed flow reuses the client port; on a flow whose backend takes no new flows, it
    // is a new connection that must not wait on that backend: both start a new flow
    if (fwd && is_syn) {
        int gone = !(fwd->flags & (LB_CT_F_CLOSED | LB_CT_F_RST)) && backend_gone(fwd);
        if ((fwd->flags & (LB_CT_F_CLOSED | LB_CT_F_RST)) || gone) {
            // if the sweep is removing the old flow this instant, drop the SYN and let the client
            // retransmit rather than build a flow the sweep deletes
            if (ct_end(table, &fk, fwd) != 0) {
                count_drop(service_id, LB_DROP_CT_BUSY);
                return XDP_DROP;
            }
            if (gone)
                global_inc(LB_G_XDP_REPICK);
            fwd = 0;
        }
    }
    if (fwd) {
        new_ip = fwd->backend_ip;
        new_port = fwd->backend_port;
        backend_id = fwd->backend_id;
        __u64 created = fwd->created_ns;
        struct lb_ct_key rk = {};
        reverse_key_of(fwd, &rk);
        struct lb_ct_entry *rev = ct_lookup_in(table, &rk);
        int have_rev = rev != 0;
        if (rev && (rev->dir != LB_DIR_REVERSE || rev->created_ns != created))
            rev = 0;                                // another flow's
        int where = LB_SEG_EXACT;
        if (is_tcp && !(seg.flags & TCP_SYN)) {
            where = tcp_in_window(fwd, rev, seg.seq);
            if ((seg.flags & TCP_RST) && where == LB_SEG_OUTSIDE) {
                count_drop(service_id, LB_DROP_RST_WINDOW);
                return XDP_DROP;
            }
            if ((seg.flags & TCP_RST) && where == LB_SEG_INSIDE)
                global_inc(LB_G_RST_CHALLENGED);
        }
        fwd->last_seen_ns = now;
        __sync_fetch_and_add(&fwd->packets, 1);
        __sync_fetch_and_add(&fwd->bytes, ip_len);
        // an LRU may have evicted the reverse entry alone: re-create it from the forward one
        if (!have_rev && created != LB_CT_REAPING) {
            struct lb_scratch *s = scratch();
            if (s) {
                ct_mirror(&s->rev, fwd, LB_DIR_REVERSE);
                ct_write(table, &rk, &s->rev);
                global_inc(LB_G_XDP_CT_RESTORED);
            }
        }
        if (is_tcp) {
            if (is_syn) {
                // the client's SYN again (same ISN): a real client waiting for an answer
                if ((fwd->flags & LB_CT_F_SYN) && !(fwd->flags & LB_CT_F_EST) && seg.seq == fwd->seq_first)
                    __sync_fetch_and_or(&fwd->flags, LB_CT_F_SYN_RETX);
            } else if (!(seg.flags & TCP_RST) && where != LB_SEG_OUTSIDE) {
                tcp_track(fwd, rev, &seg);
            }
            __u64 old = 0;
            __u64 flags = tcp_flow_flags(fwd, &seg, 0, where == LB_SEG_EXACT, where != LB_SEG_OUTSIDE,
                                         now, &old);
            // the client's ACK completes the handshake: the flow is established
            if (table == LB_TBL_TRANSIENT && (old & LB_CT_F_SYNACK) && !(old & (LB_CT_F_EST | LB_CT_F_CLOSED)) &&
                (seg.flags & (TCP_ACK | TCP_SYN | TCP_RST)) == TCP_ACK && handshake_ack_ok(rev, seg.ack)) {
                __u64 synack = fwd->synack_ns;
                int r = ct_promote(&fk, fwd);
                if (r < 0) {
                    count_drop(service_id, LB_DROP_CT_FULL);
                    return XDP_DROP;
                }
                if (r > 0 && (old & LB_CT_F_SYN)) {
                    struct lb_backend_stats *hs = backend_stats(backend_id);
                    if (hs)
                        hs->handshakes += 1;
                    record_latency(backend_id, 0, synack - created);
                }
                fwd = lb_ct_established.lookup(&fk);
                rev = lb_ct_established.lookup(&rk);
                table = LB_TBL_ESTABLISHED;
            }
            if (fwd && flow_closed(flags) && !(old & LB_CT_F_CLOSED))
                tcp_close(table, &fk, fwd, rev, flags, now);
        }
    } else {
        // no mid-stream re-pick except with Maglev (docs/datapath.md#what-the-programs-do)
        if (is_tcp && !is_syn && svc->algorithm != LB_ALG_MAGLEV) {
            global_inc(LB_G_XDP_MIDSTREAM);
            return XDP_PASS;
        }
        if (!is_tcp && lb_l4_csum_ok(iph, l4, l4_len, IPPROTO_UDP, data_end) == 0) {
            count_drop(service_id, LB_DROP_BAD_CSUM);
            return XDP_DROP;
        }
        struct lb_picked picked = {};
        int r = new_flow(svc, &fk, ip_len, is_tcp ? &seg : 0, now, &picked);
        if (r < 0) {
            count_drop(service_id, -(r + 1));
            return XDP_DROP;
        }
        new_ip = picked.ip;
        new_port = picked.port;
        backend_id = picked.backend_id;
        if (r == 0) {
            struct lb_backend_stats *nbs = backend_stats(backend_id);
            if (nbs)
                nbs->new_flows += 1;
            struct lb_service_stats *ss = lb_service_stats.lookup(&service_id);
            if (ss)
                ss->new_flows += 1;
            struct lb_scratch *s = scratch();
            if (s && (svc->flags & LB_SVC_F_EV_NEW))
                emit_event(LB_EV_NEW, &s->fwd, 0, 0, now);
        }
    }

    struct lb_backend_stats *bs = backend_stats(backend_id);
    if (bs) {
        bs->packets_in += 1;
        bs->bytes_in += ip_len;
    }
    struct lb_service_stats *ss2 = lb_service_stats.lookup(&service_id);
    if (ss2) {
        ss2->packets_in += 1;
        ss2->bytes_in += ip_len;
    }

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
    return XDP_PASS;
}

int lbtui_tc(struct __sk_buff *skb)
{
    // make the headers we read linear: ETH + VLAN + IP with options + TCP with options, or an ICMP
    // header with the quoted IP header (options too) and 20 bytes of its L4 header
    __u32 want = 14 + 4 + 60 + 8 + 60 + 20;
    if (want > skb->len)
        want = skb->len;
    bpf_skb_pull_data(skb, want);
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;

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
    if (h_proto != htons(ETH_P_IP))
        return TC_ACT_OK;
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
    __u32 ip_len = ntohs(iph->tot_len);
    int table;
    struct lb_ct_entry *rev = ct_lookup(&rk, &table);
    if (!rev || rev->dir != LB_DIR_REVERSE) {
        global_inc(LB_G_TC_MISS);
        return TC_ACT_OK;
    }
    __u64 now = bpf_ktime_get_ns();
    lb_addr_t old_ip = iph->saddr, new_ip = rev->vip, client_ip = iph->daddr;
    __u16 old_port = sport, new_port = rev->vip_port;
    __u32 backend_id = rev->backend_id;
    __u32 service_id = rev->service_id;
    __u64 created = rev->created_ns;

    // the flow's forward entry: for state changes, promotion, or to re-create it after an eviction
    struct lb_ct_entry *fwd = 0;
    struct lb_ct_key fk = {};
    forward_key_of(rev, &fk);
    if (table == LB_TBL_TRANSIENT || (is_tcp && (seg.flags & (TCP_SYN | TCP_FIN | TCP_RST)))) {
        int ftable;
        fwd = ct_lookup(&fk, &ftable);
        if (fwd && (ftable != table || fwd->dir != LB_DIR_FORWARD || fwd->backend_ip != rev->backend_ip ||
                    fwd->backend_port != rev->backend_port)) {
            fwd = 0;                                // a later flow on the same client port
        } else if (!fwd && table == LB_TBL_TRANSIENT && created != LB_CT_REAPING) {
            struct lb_scratch *s = scratch();
            if (s) {
                ct_mirror(&s->fwd, rev, LB_DIR_FORWARD);
                lb_ct_transient.insert(&fk, &s->fwd);
                fwd = lb_ct_transient.lookup(&fk);
                global_inc(LB_G_TC_CT_RESTORED);
            }
        }
    }
    int where = LB_SEG_EXACT;
    if (is_tcp && !(seg.flags & TCP_SYN))
        where = tcp_in_window(rev, fwd, seg.seq);
    if (is_tcp && (seg.flags & TCP_RST) && where == LB_SEG_OUTSIDE) {
        count_drop(service_id, LB_DROP_RST_WINDOW);
        return TC_ACT_SHOT;
    }
    // the reply's own counters, before the flow moves between tables (a move copies the entry) and
    // before a close reports them: the packet that closes the flow is part of it
    rev->last_seen_ns = now;
    __sync_fetch_and_add(&rev->packets, 1);
    __sync_fetch_and_add(&rev->bytes, ip_len);
    if (is_tcp) {
        if ((seg.flags & TCP_RST) && where == LB_SEG_INSIDE)
            global_inc(LB_G_RST_CHALLENGED);
        if (!(seg.flags & TCP_RST) && where != LB_SEG_OUTSIDE)
            tcp_track(rev, fwd, &seg);
        if (fwd) {
            __u64 old = 0;
            __u64 flags = tcp_flow_flags(fwd, &seg, 1, where == LB_SEG_EXACT, where != LB_SEG_OUTSIDE,
                                         now, &old);
            // a flow no client's SYN started (Maglev, mid-stream) is established by the backend's answer
            if (table == LB_TBL_TRANSIENT && !(old & (LB_CT_F_SYN | LB_CT_F_EST | LB_CT_F_CLOSED)) &&
                !(seg.flags & TCP_RST)) {
                if (ct_promote(&fk, fwd) < 0) {
                    count_drop(service_id, LB_DROP_CT_FULL);
                    return TC_ACT_SHOT;
                }
                fwd = lb_ct_established.lookup(&fk);
                table = LB_TBL_ESTABLISHED;
            }
            if (fwd && flow_closed(flags) && !(old & LB_CT_F_CLOSED)) {
                struct lb_ct_entry *r = ct_lookup_in(table, &rk);
                tcp_close(table, &fk, fwd, r, flags, now);
            }
        }
    } else if (fwd && table == LB_TBL_TRANSIENT && !(fwd->flags & (LB_CT_F_EST | LB_CT_F_CLOSED))) {
        // UDP: the backend answered, the flow is established
        if (ct_promote(&fk, fwd) < 0) {
            count_drop(service_id, LB_DROP_CT_FULL);
            return TC_ACT_SHOT;
        }
        table = LB_TBL_ESTABLISHED;
    }
    struct lb_backend_stats *bs = backend_stats(backend_id);
    if (bs) {
        bs->packets_out += 1;
        bs->bytes_out += ip_len;
    }
    struct lb_service_stats *ss = lb_service_stats.lookup(&service_id);
    if (ss) {
        ss->packets_out += 1;
        ss->bytes_out += ip_len;
    }

    // SNAT: L4 first (the pseudo-header flag keeps CHECKSUM_PARTIAL skbs right), then L3.
    // A zero UDP checksum ("none") stays zero: BPF_F_MARK_MANGLED_0.
    __u64 l4_flags = is_tcp ? 0 : BPF_F_MARK_MANGLED_0;
    bpf_l4_csum_replace(skb, csum_off, old_ip, new_ip, l4_flags | BPF_F_PSEUDO_HDR | sizeof(new_ip));
    if (old_port != new_port)
        bpf_l4_csum_replace(skb, csum_off, old_port, new_port, l4_flags | sizeof(new_port));
    bpf_l3_csum_replace(skb, l3_off + offsetof(struct iphdr, check), old_ip, new_ip, sizeof(new_ip));
    bpf_skb_store_bytes(skb, l3_off + offsetof(struct iphdr, saddr), &new_ip, sizeof(new_ip), 0);
    bpf_skb_store_bytes(skb, l4_off, &new_port, sizeof(new_port), 0);   // source port: first L4 field
    if (frag)                                      // the first fragment of a reply: the others follow it
        tc_first_fragment(old_ip, client_ip, ip_id, is_tcp ? IPPROTO_TCP : IPPROTO_UDP, new_ip);
    global_inc(LB_G_TC_SNAT);
    return TC_ACT_OK;
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
