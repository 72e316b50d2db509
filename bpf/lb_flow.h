// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// lbtui: per-family template (lb_fam.h)
// The flow logic of both programs, between the family's header parsing and its address rewrite
// (docs/datapath.md#what-the-programs-do): lb.c parses IPv4 or IPv6, calls xdp_flow / tc_flow of that
// family, and rewrites the packet when told to.

#ifndef LB_GO_NAT
#define LB_GO_NAT (-1)             // xdp_flow / tc_flow: rewrite the packet (else: the verdict to return)
#endif

// lb_l4_csum_ok for a segment whose forward key is `k` (its addresses make the pseudo header).
// IPv6: a function of its own (not inlined): the 64 exits of the checksum loop would otherwise each
// carry their own verifier state through the rest of the program, past the complexity limit.
#if LB_FAM == 4
static __always_inline int LB_F(l4_csum_ok)(LB_CT_KEY *k, void *l4, __u32 l4_len, __u8 proto, void *data_end)
{
    __u32 s = (k->saddr & 0xffff) + (k->saddr >> 16) + (k->daddr & 0xffff) + (k->daddr >> 16);
    return lb_l4_csum_ok(s, l4, l4_len, proto, data_end);
}
#else
static __always_inline int LB_F(l4_csum_ok)(LB_CT_KEY *k, void *l4, __u32 l4_len, __u8 proto, void *data_end)
{
    __u32 s = 0;
#pragma unroll
    for (int i = 0; i < 4; i++)
        s += (k->saddr.w[i] & 0xffff) + (k->saddr.w[i] >> 16) + (k->daddr.w[i] & 0xffff) + (k->daddr.w[i] >> 16);
    return lb_l4_csum_ok(s, l4, l4_len, proto, data_end);
}
#endif

// The backend of a tracked flow takes no new flows any more (removed, down, drained, circuit open,
// or its id now names another address): a SYN on the flow's tuple is a new connection for another.
static __always_inline int LB_F(backend_gone)(LB_CT_ENTRY *fwd)
{
    __u32 bid = fwd->backend_id;
    struct lb_backend *be = lb_backends.lookup(&bid);
    return !be || !(be->flags & LB_BE_F_ACTIVE) || (be->flags & LB_BE_F_NO_NEW) ||
           !LB_ADDR_EQ(LB_BE_IP(be), fwd->backend_ip) || be->port != fwd->backend_port;
}

// The client's ACK acknowledges the backend's SYN-ACK (and nothing it has not sent).
static __always_inline int LB_F(handshake_ack_ok)(LB_CT_ENTRY *rev, __u32 ack)
{
    if (!rev || !(rev->flags & LB_CT_F_SEQ))
        return 1;                                   // nothing to check with (the entry was re-created)
    __u32 first = rev->seq_first + 1;
    return ack - first <= rev->seq_next - first;
}

// XDP, a TCP segment or UDP datagram to a service: `fk` is its forward key, l4/l4_len its L4 header
// and payload, ip_len what the counters add (IP total length). Validation, conntrack, the pick of a
// new flow, counters and events. LB_GO_NAT with the backend in *out, or the verdict to return.
static __always_inline int LB_F(xdp_flow)(struct lb_service *svc, LB_CT_KEY *fk, void *l4, __u32 l4_len,
                                          __u32 ip_len, int is_tcp, struct lb_seg *seg, void *data_end,
                                          LB_PICKED *out)
{
    __u32 service_id = svc->id;
    // TCP validation (docs/datapath.md#tcp-validation): invalid flag combinations, and a bad
    // checksum on a segment that would change state (short ones: checked here in full)
    if (is_tcp && (seg->flags & TCP_SYN) && (seg->flags & (TCP_RST | TCP_FIN))) {
        count_drop(service_id, LB_DROP_TCP_FLAGS);
        return XDP_DROP;
    }
    if (is_tcp && (seg->flags & (TCP_SYN | TCP_RST | TCP_FIN)) &&
        LB_F(l4_csum_ok)(fk, l4, l4_len, IPPROTO_TCP, data_end) == 0) {
        count_drop(service_id, LB_DROP_BAD_CSUM);
        return XDP_DROP;
    }
    __u64 now = bpf_ktime_get_ns();


    LB_ADDR new_ip;
    __u16 new_port;
    __u32 backend_id;
    int created_flow = 0;                           // this packet inserted a new flow
    int is_syn = is_tcp && (seg->flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
    int table;
    LB_CT_ENTRY *fwd = LB_F(ct_lookup)(fk, &table);
    // a SYN on a closed flow reuses the client port; on a flow whose backend takes no new flows, it
    // is a new connection that must not wait on that backend: both start a new flow
    if (fwd && is_syn) {
        int gone = !(fwd->flags & (LB_CT_F_CLOSED | LB_CT_F_RST)) && LB_F(backend_gone)(fwd);
        if ((fwd->flags & (LB_CT_F_CLOSED | LB_CT_F_RST)) || gone) {
            // if the sweep is removing the old flow this instant, drop the SYN and let the client
            // retransmit rather than build a flow the sweep deletes
            if (LB_F(ct_end)(table, fk, fwd) != 0) {
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
        LB_CT_KEY rk = {};
        LB_F(reverse_key_of)(fwd, &rk);
        // an established flow's plain packet (no SYN, FIN or RST) changes no state but its own
        // direction's counters and sequence: it needs no reverse entry (docs/datapath.md#cost)
        int plain = table == LB_TBL_ESTABLISHED && LB_F(tcp_plain)(fwd, is_tcp, seg);
        LB_CT_ENTRY *rev = plain ? 0 : LB_F(ct_lookup_in)(table, &rk);
        int have_rev = plain || rev != 0;           // the established table never evicts
        if (rev && (rev->dir != LB_DIR_REVERSE || rev->created_ns != created))
            rev = 0;                                // another flow's
        int where = LB_SEG_EXACT;
        if (is_tcp && !(seg->flags & TCP_SYN) && !plain) {
            where = LB_F(tcp_in_window)(fwd, rev, seg->seq);
            if ((seg->flags & TCP_RST) && where == LB_SEG_OUTSIDE) {
                count_drop(service_id, LB_DROP_RST_WINDOW);
                return XDP_DROP;
            }
            if ((seg->flags & TCP_RST) && where == LB_SEG_INSIDE)
                global_inc(LB_G_RST_CHALLENGED);
        }
        fwd->last_seen_ns = now;
        __sync_fetch_and_add(&fwd->packets, 1);
        __sync_fetch_and_add(&fwd->bytes, ip_len);
        // an LRU may have evicted the reverse entry alone: re-create it from the forward one
        if (!have_rev && created != LB_CT_REAPING) {
            LB_SCRATCH *s = LB_F(scratch)();
            if (s) {
                LB_F(ct_mirror)(&s->rev, fwd, LB_DIR_REVERSE);
                LB_F(ct_write)(table, &rk, &s->rev);
                global_inc(LB_G_XDP_CT_RESTORED);
            }
        }
        if (is_tcp) {
            if (is_syn) {
                // the client's SYN again (same ISN): a real client waiting for an answer
                if ((fwd->flags & LB_CT_F_SYN) && !(fwd->flags & LB_CT_F_EST) && seg->seq == fwd->seq_first)
                    __sync_fetch_and_or(&fwd->flags, LB_CT_F_SYN_RETX);
            } else if (plain) {
                LB_F(tcp_track_plain)(fwd, seg);
            } else if (!(seg->flags & TCP_RST) && where != LB_SEG_OUTSIDE) {
                LB_F(tcp_track)(fwd, rev, seg);
            }
            __u64 old = 0;
            __u64 flags = LB_F(tcp_flow_flags)(fwd, seg, 0, where == LB_SEG_EXACT, where != LB_SEG_OUTSIDE,
                                         now, &old);
            // the client's ACK completes the handshake: the flow is established. In DSR the replies
            // never pass here: the client's first ACK establishes it (the SYN-ACK is not seen)
            int dsr = svc->flags & LB_SVC_F_IPIP;
            if (table == LB_TBL_TRANSIENT && ((old & LB_CT_F_SYNACK) || dsr) &&
                !(old & (LB_CT_F_EST | LB_CT_F_CLOSED)) &&
                (seg->flags & (TCP_ACK | TCP_SYN | TCP_RST)) == TCP_ACK && LB_F(handshake_ack_ok)(rev, seg->ack)) {
                __u64 synack = fwd->synack_ns;
                int r = LB_F(ct_promote)(fk, fwd);
                if (r < 0) {
                    count_drop(service_id, LB_DROP_CT_FULL);
                    return XDP_DROP;
                }
                if (r > 0 && (old & LB_CT_F_SYN) && (old & LB_CT_F_SYNACK)) {
                    struct lb_backend_stats *hs = backend_stats(backend_id);
                    if (hs)
                        hs->handshakes += 1;
                    record_latency(backend_id, 0, synack - created);
                }
                fwd = LB_F(ct_est_lookup)(fk);
                rev = LB_F(ct_est_lookup)(&rk);
                table = LB_TBL_ESTABLISHED;
            }
            // DSR: the backend's FIN is never seen, so the client's FIN (or a RST) ends the flow; its
            // last packets still reach the backend from the transient table
            if (fwd && (flow_closed(flags) || (dsr && (flags & LB_CT_F_FIN_IN))) && !(old & LB_CT_F_CLOSED))
                LB_F(tcp_close)(table, fk, fwd, rev, flags, now);
        }
    } else {
        // no mid-stream re-pick except with Maglev (docs/datapath.md#what-the-programs-do)
        if (is_tcp && !is_syn && svc->algorithm != LB_ALG_MAGLEV) {
            global_inc(LB_G_XDP_MIDSTREAM);
            return XDP_PASS;
        }
        if (!is_tcp && LB_F(l4_csum_ok)(fk, l4, l4_len, IPPROTO_UDP, data_end) == 0) {
            count_drop(service_id, LB_DROP_BAD_CSUM);
            return XDP_DROP;
        }
        LB_PICKED picked = {};
        int r = LB_F(new_flow)(svc, fk, ip_len, is_tcp ? seg : 0, now, &picked);
        if (r < 0) {
            count_drop(service_id, -(r + 1));
            return XDP_DROP;
        }
        new_ip = picked.ip;
        new_port = picked.port;
        backend_id = picked.backend_id;
        created_flow = r == 0;
        if (created_flow && (svc->flags & LB_SVC_F_EV_NEW)) {
            LB_SCRATCH *s = LB_F(scratch)();
            if (s)
                LB_F(emit_event)(LB_EV_NEW, &s->fwd, 0, 0, now);
        }
    }

    // one lookup per counter map for the packet and, on a new flow, its new_flows
    struct lb_backend_stats *bs = backend_stats(backend_id);
    if (bs) {
        bs->packets_in += 1;
        bs->bytes_in += ip_len;
        bs->new_flows += created_flow;
    }
    struct lb_service_stats *ss2 = lb_service_stats.lookup(&service_id);
    if (ss2) {
        ss2->packets_in += 1;
        ss2->bytes_in += ip_len;
        ss2->new_flows += created_flow;
    }

    out->ip = new_ip;
    out->port = new_port;
    return LB_GO_NAT;
}

// A reply (reverse key `rk`) of the tracked flow whose reverse entry `rev` the caller found in `table`
// (ct_lookup): LB_GO_NAT with the flow's VIP:port in *vip_out / *vip_port_out, else the verdict to
// return. The fast path's reply (lb_fastpath_reply.h) looked the entry up already: one lookup each.
static __always_inline int LB_F(tc_flow_of)(LB_CT_ENTRY *rev, int table, LB_CT_KEY *rk, int is_tcp,
                                            struct lb_seg *seg, __u32 ip_len, LB_ADDR *vip_out,
                                            __u16 *vip_port_out)
{
    __u64 now = bpf_ktime_get_ns();
    *vip_out = rev->vip;
    *vip_port_out = rev->vip_port;
    __u32 backend_id = rev->backend_id;
    __u32 service_id = rev->service_id;
    __u64 created = rev->created_ns;

    // the flow's forward entry: for state changes, promotion, or to re-create it after an eviction
    LB_CT_ENTRY *fwd = 0;
    LB_CT_KEY fk = {};
    LB_F(forward_key_of)(rev, &fk);
    if (table == LB_TBL_TRANSIENT || (is_tcp && (seg->flags & (TCP_SYN | TCP_FIN | TCP_RST)))) {
        int ftable;
        fwd = LB_F(ct_lookup)(&fk, &ftable);
        if (fwd && (ftable != table || fwd->dir != LB_DIR_FORWARD || !LB_ADDR_EQ(fwd->backend_ip, rev->backend_ip) ||
                    fwd->backend_port != rev->backend_port)) {
            fwd = 0;                                // a later flow on the same client port
        } else if (!fwd && table == LB_TBL_TRANSIENT && created != LB_CT_REAPING) {
            LB_SCRATCH *s = LB_F(scratch)();
            if (s) {
                LB_F(ct_mirror)(&s->fwd, rev, LB_DIR_FORWARD);
                LB_F(ct_tr_insert)(&fk, &s->fwd);
                fwd = LB_F(ct_tr_lookup)(&fk);
                global_inc(LB_G_TC_CT_RESTORED);
            }
        }
    }
    int where = LB_SEG_EXACT;
    if (is_tcp && !(seg->flags & TCP_SYN))
        where = LB_F(tcp_in_window)(rev, fwd, seg->seq);
    if (is_tcp && (seg->flags & TCP_RST) && where == LB_SEG_OUTSIDE) {
        count_drop(service_id, LB_DROP_RST_WINDOW);
        return TC_ACT_SHOT;
    }
    // the reply's own counters, before the flow moves between tables (a move copies the entry) and
    // before a close reports them: the packet that closes the flow is part of it
    rev->last_seen_ns = now;
    __sync_fetch_and_add(&rev->packets, 1);
    __sync_fetch_and_add(&rev->bytes, ip_len);
    if (is_tcp) {
        if ((seg->flags & TCP_RST) && where == LB_SEG_INSIDE)
            global_inc(LB_G_RST_CHALLENGED);
        if (!(seg->flags & TCP_RST) && where != LB_SEG_OUTSIDE)
            LB_F(tcp_track)(rev, fwd, seg);
        if (fwd) {
            __u64 old = 0;
            __u64 flags = LB_F(tcp_flow_flags)(fwd, seg, 1, where == LB_SEG_EXACT, where != LB_SEG_OUTSIDE,
                                         now, &old);
            // a flow no client's SYN started (Maglev, mid-stream) is established by the backend's answer
            if (table == LB_TBL_TRANSIENT && !(old & (LB_CT_F_SYN | LB_CT_F_EST | LB_CT_F_CLOSED)) &&
                !(seg->flags & TCP_RST)) {
                if (LB_F(ct_promote)(&fk, fwd) < 0) {
                    count_drop(service_id, LB_DROP_CT_FULL);
                    return TC_ACT_SHOT;
                }
                fwd = LB_F(ct_est_lookup)(&fk);
                table = LB_TBL_ESTABLISHED;
            }
            if (fwd && flow_closed(flags) && !(old & LB_CT_F_CLOSED)) {
                LB_CT_ENTRY *r = LB_F(ct_lookup_in)(table, rk);
                LB_F(tcp_close)(table, &fk, fwd, r, flags, now);
            }
        }
    } else if (fwd && table == LB_TBL_TRANSIENT && !(fwd->flags & (LB_CT_F_EST | LB_CT_F_CLOSED))) {
        // UDP: the backend answered, the flow is established
        if (LB_F(ct_promote)(&fk, fwd) < 0) {
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
    return LB_GO_NAT;
}

// The reverse entry of a tracked flow for the reply key `rk` (and its table in *table), or 0 with
// tc_miss counted: no flow of ours.
static __always_inline LB_CT_ENTRY *LB_F(ct_reverse)(LB_CT_KEY *rk, int *table)
{
    LB_CT_ENTRY *rev = LB_F(ct_lookup)(rk, table);
    if (!rev || rev->dir != LB_DIR_REVERSE) {
        global_inc(LB_G_TC_MISS);
        return 0;
    }
    return rev;
}

// TC egress, a TCP segment or UDP datagram whose reverse key is `rk`: a reply of a tracked flow gets
// LB_GO_NAT with the flow's VIP:port in *vip_out / *vip_port_out; anything else the verdict to return.
static __always_inline int LB_F(tc_flow)(LB_CT_KEY *rk, int is_tcp, struct lb_seg *seg, __u32 ip_len,
                                         LB_ADDR *vip_out, __u16 *vip_port_out)
{
    int table;
    LB_CT_ENTRY *rev = LB_F(ct_reverse)(rk, &table);
    if (!rev)
        return TC_ACT_OK;
    return LB_F(tc_flow_of)(rev, table, rk, is_tcp, seg, ip_len, vip_out, vip_port_out);
}
