// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// lbtui data path (docs/datapath.md#what-the-programs-do):
//   lbtui_xdp  XDP on the client-facing interfaces: parse, conntrack lookup, backend pick for new
//              flows, DNAT with incremental checksum updates, counters, events; always XDP_PASS
//              except for new flows that cannot be served (empty table, conntrack insert failure).
//   lbtui_tc   TC clsact egress (direct action) on the same interfaces: replies of tracked flows get
//              their source rewritten back to VIP:port; FIN/RST/SYN-ACK tracking for the reply side.
//
// XDP checksum updates assume a complete L4 checksum (what a NIC delivers); see docs/datapath.md#checksums.
#include "lb.h"

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

static __always_inline void global_inc(__u32 idx)
{
    __u64 *v = lb_global_stats.lookup(&idx);
    if (v)
        *v += 1;
}

// Linux jhash_3words (lookup3 final mix); lbtui/control/selection.py implements the same.
#define LB_ROL32(x, k) (((x) << (k)) | ((x) >> (32 - (k))))
static __always_inline __u32 lb_jhash_3words(__u32 a, __u32 b, __u32 c)
{
    __u32 init = 0xdeadbeef + (3 << 2);
    a += init; b += init; c += init;
    c ^= b; c -= LB_ROL32(b, 14);
    a ^= c; a -= LB_ROL32(c, 11);
    b ^= a; b -= LB_ROL32(a, 25);
    c ^= b; c -= LB_ROL32(b, 16);
    a ^= c; a -= LB_ROL32(c, 4);
    b ^= a; b -= LB_ROL32(a, 14);
    c ^= b; c -= LB_ROL32(b, 24);
    return c;
}

// RFC 1624: HC' = ~(~HC + ~m + m') over raw 16-bit words (byte order does not matter for
// one's complement sums as long as every word is read the same way).
static __always_inline __u16 lb_csum_fold(__u32 s)
{
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (__u16)s;
}
static __always_inline __u16 lb_csum_replace4(__u16 check, __u32 from, __u32 to)
{
    __u32 s = (__u16)~check;
    s += (__u16)~(from & 0xffff);
    s += (__u16)~(from >> 16);
    s += to & 0xffff;
    s += to >> 16;
    return ~lb_csum_fold(s);
}
static __always_inline __u16 lb_csum_replace2(__u16 check, __u16 from, __u16 to)
{
    __u32 s = (__u16)~check;
    s += (__u16)~from;
    s += to;
    return ~lb_csum_fold(s);
}

static __always_inline void emit_event(__u8 type, struct lb_ct_entry *fwd, struct lb_ct_entry *rev,
                                       __u32 reason, __u64 now)
{
    struct lb_event *ev = lb_events.ringbuf_reserve(sizeof(struct lb_event));
    if (!ev) {
        global_inc(LB_G_EVENTS_LOST);
        return;
    }
    ev->ts_ns = now;
    ev->created_ns = fwd->created_ns;
    ev->synack_ns = fwd->synack_ns;
    ev->packets_in = fwd->packets;
    ev->bytes_in = fwd->bytes;
    ev->packets_out = rev ? rev->packets : 0;
    ev->bytes_out = rev ? rev->bytes : 0;
    ev->client_ip = fwd->client_ip;
    ev->vip = fwd->vip;
    ev->backend_ip = fwd->backend_ip;
    ev->backend_id = fwd->backend_id;
    ev->service_id = fwd->service_id;
    ev->client_port = fwd->client_port;
    ev->vip_port = fwd->vip_port;
    ev->backend_port = fwd->backend_port;
    ev->proto = fwd->proto;
    ev->type = type;
    ev->reason = reason;
    // no wake-up per event: the reader drains the ring on its own schedule (every few tens of ms),
    // so a connection-heavy load does not cost a userspace wake-up per connection
    lb_events.ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

static __always_inline void reverse_key_of(struct lb_ct_entry *e, struct lb_ct_key *k)
{
    k->saddr = e->backend_ip;
    k->daddr = e->client_ip;
    k->sport = e->backend_port;
    k->dport = e->client_port;
    k->proto = e->proto;
}

static __always_inline void forward_key_of(struct lb_ct_entry *e, struct lb_ct_key *k)
{
    k->saddr = e->client_ip;
    k->daddr = e->vip;
    k->sport = e->client_port;
    k->dport = e->vip_port;
    k->proto = e->proto;
}

// log2 histogram bucket of a duration in microseconds (see struct lb_latency)
static __always_inline __u32 hist_bucket(__u64 us)
{
    if (us == 0)
        return 0;
    __u32 b = 0;                                    // floor(log2(us)), by halving the range
    if (us >> 32) { b += 32; us >>= 32; }
    if (us >> 16) { b += 16; us >>= 16; }
    if (us >> 8) { b += 8; us >>= 8; }
    if (us >> 4) { b += 4; us >>= 4; }
    if (us >> 2) { b += 2; us >>= 2; }
    if (us >> 1) { b += 1; }
    b += 1;
    return b < LB_HIST_BUCKETS ? b : LB_HIST_BUCKETS - 1;
}

static __always_inline void record_latency(__u32 backend_id, int duration, __u64 ns)
{
    struct lb_latency *l = lb_latency.lookup(&backend_id);
    if (!l)
        return;
    __u64 us = ns / 1000;
    __u32 b = hist_bucket(us);
    if (b >= LB_HIST_BUCKETS)
        return;
    if (duration) {
        l->duration[b] += 1;
        l->duration_sum_us += us;
    } else {
        l->handshake[b] += 1;
        l->handshake_sum_us += us;
    }
}

// Flag bookkeeping shared by both directions. `fwd` is the forward entry; `tcp_flags` the flags
// byte of the current packet; `from_backend` tells the direction. Reports a close exactly once.
static __always_inline void track_tcp(struct lb_ct_entry *fwd, __u8 tcp_flags, int from_backend,
                                      __u64 now)
{
    __u64 set = 0;
    if (tcp_flags & 0x04)                           // RST
        set |= LB_CT_F_RST;
    if (tcp_flags & 0x01)                           // FIN
        set |= from_backend ? LB_CT_F_FIN_OUT : LB_CT_F_FIN_IN;
    if (from_backend && (tcp_flags & 0x12) == 0x12) // SYN+ACK
        set |= LB_CT_F_SYNACK;
    if (!set)
        return;
    __u64 old = __sync_fetch_and_or(&fwd->flags, set);
    __u64 now_flags = old | set;
    __u32 be = fwd->backend_id;
    struct lb_backend_stats *bs = lb_backend_stats.lookup(&be);

    if ((set & LB_CT_F_SYNACK) && !(old & LB_CT_F_SYNACK)) {
        fwd->synack_ns = now;
        if (bs)
            bs->handshakes += 1;
        record_latency(be, 0, now - fwd->created_ns);
    }
    // a reset from the backend before any SYN-ACK: the connection was refused
    if (from_backend && (set & LB_CT_F_RST) && !(old & LB_CT_F_SYNACK) && !(old & LB_CT_F_FAILED)) {
        __sync_fetch_and_or(&fwd->flags, LB_CT_F_FAILED);
        if (bs)
            bs->conn_failures += 1;
    }
    int closed = (now_flags & LB_CT_F_RST) ||
                 ((now_flags & (LB_CT_F_FIN_IN | LB_CT_F_FIN_OUT)) == (LB_CT_F_FIN_IN | LB_CT_F_FIN_OUT));
    if (!closed || (old & LB_CT_F_CLOSED))
        return;
    __u64 prev = __sync_fetch_and_or(&fwd->flags, LB_CT_F_CLOSED);
    if (prev & LB_CT_F_CLOSED)
        return;                                     // the other CPU won the race
    if (bs)
        bs->closes += 1;
    record_latency(be, 1, now - fwd->created_ns);
    struct lb_service_key sk = {};
    sk.vip = fwd->vip;
    sk.port = fwd->vip_port;
    sk.proto = fwd->proto;
    struct lb_service *svc = lb_services.lookup(&sk);
    if (!svc || !(svc->flags & LB_SVC_F_EV_CLOSED))
        return;
    struct lb_ct_key rk = {};
    reverse_key_of(fwd, &rk);
    struct lb_ct_entry *rev = lb_conntrack.lookup(&rk);
    emit_event(LB_EV_CLOSED, fwd, rev, (now_flags & LB_CT_F_RST) ? LB_CLOSE_RST : LB_CLOSE_FIN, now);
}

#define LB_TOKEN 1000000000ull
#define LB_MAX_REFILL_NS 10000000000ull  // cap the refill interval so elapsed * rate cannot overflow

// Take one token from a bucket (lock held briefly); 1 if allowed.
static __always_inline int bucket_take(struct lb_bucket *b, __u32 rate, __u32 burst, __u64 now)
{
    int ok = 0;
    bpf_spin_lock(&b->lock);
    // `now` was read before the lock: another CPU may have stamped a later time meanwhile, and
    // now - last_ns would wrap around (a full refill on every race)
    __u64 elapsed = 0;
    if (now > b->last_ns) {
        elapsed = now - b->last_ns;
        b->last_ns = now;
    }
    if (elapsed > LB_MAX_REFILL_NS)
        elapsed = LB_MAX_REFILL_NS;
    __u64 tokens = b->tokens + elapsed * rate;
    __u64 cap = (__u64)burst * LB_TOKEN;
    if (tokens > cap)
        tokens = cap;
    if (tokens >= LB_TOKEN) {
        tokens -= LB_TOKEN;
        ok = 1;
    }
    b->tokens = tokens;
    bpf_spin_unlock(&b->lock);
    return ok;
}

static __always_inline int source_allowed(struct lb_service *svc, __u32 saddr, __u64 now)
{
    if (!svc->src_rate)
        return 1;
    struct lb_rl_key k = {};
    k.service_id = svc->id;
    k.saddr = saddr;
    struct lb_bucket *b = lb_rl_source.lookup(&k);
    if (!b) {
        // a new source starts with a full bucket (minus this connection)
        struct lb_bucket fresh = {};
        fresh.tokens = (__u64)svc->src_burst * LB_TOKEN;
        fresh.last_ns = now;
        lb_rl_source.insert(&k, &fresh);
        b = lb_rl_source.lookup(&k);
        if (!b)
            return 1;               // table full: fail open (userspace sweeps idle buckets)
    }
    return bucket_take(b, svc->src_rate, svc->src_burst, now);
}

static __always_inline int backend_allowed(struct lb_service *svc, __u32 backend_id, __u64 now)
{
    if (!svc->be_rate)
        return 1;
    struct lb_bucket *b = lb_rl_backend.lookup(&backend_id);
    if (!b)
        return 1;
    return bucket_take(b, svc->be_rate, svc->be_burst, now);
}

// True if the reverse entry `rk` belongs to a live flow other than `fk`.
static __always_inline int reverse_owned_by_other(struct lb_ct_key *rk, struct lb_ct_key *fk)
{
    struct lb_ct_entry *old = lb_conntrack.lookup(rk);
    if (!old || old->dir != LB_DIR_REVERSE)
        return 0;
    if (old->created_ns == LB_CT_REAPING)
        return 1;                   // being removed this instant: a fresh entry would be deleted with it
    if (old->client_ip == fk->saddr && old->vip == fk->daddr && old->client_port == fk->sport &&
        old->vip_port == fk->dport)
        return 0;                   // our own flow's (left from an earlier use of this tuple)
    struct lb_ct_key ok = {};
    forward_key_of(old, &ok);
    struct lb_ct_entry *owner = lb_conntrack.lookup(&ok);
    if (!owner)
        return 0;                   // a leftover whose flow is gone: overwrite it
    return owner->backend_ip == old->backend_ip && owner->backend_port == old->backend_port;
}

// Pick a backend for a new flow and insert both conntrack entries. Returns 0 and fills *out, or
// a negative drop reason.
static __always_inline int new_flow(struct lb_service *svc, struct lb_ct_key *fk, __u32 ip_len,
                                    __u64 now, struct lb_ct_entry *out)
{
    if (!source_allowed(svc, fk->saddr, now))
        return -1 - LB_DROP_RATE_SOURCE;
    __u32 group = svc->default_group;
    struct lb_route_key rkey = {};
    rkey.prefixlen = 64;
    rkey.service_id = svc->id;
    rkey.saddr = fk->saddr;
    __u32 *routed = lb_routes.lookup(&rkey);
    if (routed)
        group = *routed;
    if (group >= LB_MAX_GROUPS)
        return -1 - LB_DROP_NO_BACKEND;

    __u32 slot;
    if (svc->algorithm == LB_ALG_SOURCE_HASH)
        slot = lb_jhash_3words(fk->saddr, svc->id, 0) % LB_TABLE_SIZE;
    else if (svc->algorithm == LB_ALG_MAGLEV)
        slot = lb_jhash_3words(fk->saddr, fk->daddr,
                               ((__u32)fk->sport << 16) | fk->dport) % LB_TABLE_SIZE;
    else
        slot = bpf_get_prandom_u32() % LB_TABLE_SIZE;
    // The reverse entry is keyed by backend and client address:port only, so two live flows of one
    // client port (to two VIPs or VIP ports) must not share a backend address:port: the backend would
    // see one 4-tuple for two connections. On such a clash the next slots are tried.
    __u32 backend_id = LB_EMPTY_SLOT, ip = 0;
    __u16 port = 0;
    int clash = 0;
    for (int i = 0; i < LB_PICK_TRIES; i++) {
        __u32 idx = group * LB_TABLE_SIZE + (slot + i) % LB_TABLE_SIZE;
        __u32 *bid = lb_select.lookup(&idx);
        if (!bid || *bid == LB_EMPTY_SLOT || *bid >= LB_MAX_BACKENDS)
            return -1 - LB_DROP_NO_BACKEND;
        __u32 cand = *bid;
        struct lb_backend *be = lb_backends.lookup(&cand);
        if (!be || !(be->flags & LB_BE_F_ACTIVE))
            return -1 - LB_DROP_NO_BACKEND;
        struct lb_ct_key ck = {};
        ck.saddr = be->ip;
        ck.daddr = fk->saddr;
        ck.sport = be->port;
        ck.dport = fk->sport;
        ck.proto = fk->proto;
        if (reverse_owned_by_other(&ck, fk)) {
            clash = 1;
            continue;
        }
        backend_id = cand;
        ip = be->ip;
        port = be->port;
        break;
    }
    if (backend_id == LB_EMPTY_SLOT)
        return -1 - (clash ? LB_DROP_CONFLICT : LB_DROP_NO_BACKEND);
    if (!backend_allowed(svc, backend_id, now))
        return -1 - LB_DROP_RATE_BACKEND;

    struct lb_ct_entry e = {};
    e.client_ip = fk->saddr;
    e.vip = fk->daddr;
    e.backend_ip = ip;
    e.client_port = fk->sport;
    e.vip_port = fk->dport;
    e.backend_port = port;
    e.proto = fk->proto;
    e.dir = LB_DIR_FORWARD;
    e.backend_id = backend_id;
    e.service_id = svc->id;
    e.created_ns = now;
    e.last_seen_ns = now;
    e.packets = 1;
    e.bytes = ip_len;
    if (lb_conntrack.insert(fk, &e) != 0) {
        // another CPU inserted this flow first: use its choice
        struct lb_ct_entry *won = lb_conntrack.lookup(fk);
        if (!won)
            return -1 - LB_DROP_CT_FULL;
        out->backend_ip = won->backend_ip;
        out->backend_port = won->backend_port;
        out->backend_id = won->backend_id;
        return 1;
    }
    struct lb_ct_entry r = e;
    r.dir = LB_DIR_REVERSE;
    r.packets = 0;
    r.bytes = 0;
    struct lb_ct_key rk = {};
    reverse_key_of(&e, &rk);
    lb_conntrack.update(&rk, &r);
    *out = e;
    return 0;
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
    __u8 tcp_flags = 0;
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
        tcp_flags = ((__u8 *)th)[13];
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
    __u64 now = bpf_ktime_get_ns();

    struct lb_ct_key fk = {};
    fk.saddr = iph->saddr;
    fk.daddr = iph->daddr;
    fk.sport = sport;
    fk.dport = *dport_p;
    fk.proto = iph->protocol;

    __u32 new_ip;
    __u16 new_port;
    __u32 backend_id;
    int is_syn = is_tcp && (tcp_flags & 0x12) == 0x02;     // SYN without ACK
    struct lb_ct_entry *fwd = lb_conntrack.lookup(&fk);
    // a SYN on a flow that already closed reuses the client port: start a new flow
    if (fwd && is_syn && (fwd->flags & (LB_CT_F_CLOSED | LB_CT_F_RST))) {
        // claim the old entries (see LB_CT_REAPING): if the sweep is removing them this instant,
        // drop the SYN and let the client retransmit rather than build a flow the sweep deletes
        __u64 seen = fwd->created_ns;
        if (seen == LB_CT_REAPING ||
            __sync_val_compare_and_swap(&fwd->created_ns, seen, LB_CT_REAPING) != seen) {
            struct lb_service_stats *bss = lb_service_stats.lookup(&service_id);
            if (bss)
                bss->drops[LB_DROP_CT_BUSY] += 1;
            return XDP_DROP;
        }
        struct lb_ct_key old_rk = {};
        reverse_key_of(fwd, &old_rk);
        // late packets of the old flow must not reach the new one; a reverse entry another flow
        // has taken over since (after an LRU eviction) is not ours to delete
        struct lb_ct_entry *old_rev = lb_conntrack.lookup(&old_rk);
        if (old_rev && __sync_val_compare_and_swap(&old_rev->created_ns, seen, LB_CT_REAPING) == seen)
            lb_conntrack.delete(&old_rk);
        lb_conntrack.delete(&fk);
        fwd = 0;
    }
    if (fwd) {
        new_ip = fwd->backend_ip;
        new_port = fwd->backend_port;
        backend_id = fwd->backend_id;
        fwd->last_seen_ns = now;
        __sync_fetch_and_add(&fwd->packets, 1);
        __sync_fetch_and_add(&fwd->bytes, ip_len);
        // the LRU may have evicted the reverse entry alone: re-create it from the forward one
        struct lb_ct_key rk = {};
        reverse_key_of(fwd, &rk);
        if (fwd->created_ns != LB_CT_REAPING && !lb_conntrack.lookup(&rk)) {
            struct lb_ct_entry r = *fwd;
            r.dir = LB_DIR_REVERSE;
            r.packets = 0;
            r.bytes = 0;
            r.flags = 0;
            lb_conntrack.update(&rk, &r);
            global_inc(LB_G_XDP_CT_RESTORED);
        }
        if (is_tcp)
            track_tcp(fwd, tcp_flags, 0, now);
    } else {
        // no mid-stream re-pick except with Maglev (docs/datapath.md#what-the-programs-do)
        if (is_tcp && !is_syn && svc->algorithm != LB_ALG_MAGLEV) {
            global_inc(LB_G_XDP_MIDSTREAM);
            return XDP_PASS;
        }
        struct lb_ct_entry e = {};
        int r = new_flow(svc, &fk, ip_len, now, &e);
        struct lb_service_stats *ss = lb_service_stats.lookup(&service_id);
        if (r < 0) {
            __u32 reason = -(r + 1);
            if (ss && reason < LB_DROP_MAX)
                ss->drops[reason] += 1;
            return XDP_DROP;
        }
        new_ip = e.backend_ip;
        new_port = e.backend_port;
        backend_id = e.backend_id;
        if (r == 0) {
            struct lb_backend_stats *nbs = lb_backend_stats.lookup(&backend_id);
            if (nbs)
                nbs->new_flows += 1;
            if (ss)
                ss->new_flows += 1;
            if (svc->flags & LB_SVC_F_EV_NEW)
                emit_event(LB_EV_NEW, &e, 0, 0, now);
        }
    }

    struct lb_backend_stats *bs = lb_backend_stats.lookup(&backend_id);
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
        if (!is_tcp && c == 0)
            c = 0xffff;                             // RFC 768: a computed 0 is sent as all ones
        *l4_check = c;
    }
    return XDP_PASS;
}

int lbtui_tc(struct __sk_buff *skb)
{
    // make the headers we read linear (ETH + VLAN + IP with options + TCP)
    __u32 want = 14 + 4 + 60 + 20;
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
    if (iph->version != 4 || ihl_len < sizeof(*iph) || (iph->frag_off & IP_MF_OFFSET_BE))
        return TC_ACT_OK;
    if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP)
        return TC_ACT_OK;
    __u32 l4_off = l3_off + ihl_len;
    void *l4 = data + l4_off;
    __u32 csum_off;
    __be16 sport, dport;
    __u8 tcp_flags = 0;
    int is_tcp = iph->protocol == IPPROTO_TCP;
    if (is_tcp) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > data_end)
            return TC_ACT_OK;
        sport = th->source;
        dport = th->dest;
        tcp_flags = ((__u8 *)th)[13];
        csum_off = l4_off + offsetof(struct tcphdr, check);
    } else {
        struct udphdr *uh = l4;
        if ((void *)(uh + 1) > data_end)
            return TC_ACT_OK;
        sport = uh->source;
        dport = uh->dest;
        csum_off = l4_off + offsetof(struct udphdr, check);
    }

    struct lb_ct_key rk = {};
    rk.saddr = iph->saddr;
    rk.daddr = iph->daddr;
    rk.sport = sport;
    rk.dport = dport;
    rk.proto = iph->protocol;
    __u32 ip_len = ntohs(iph->tot_len);
    struct lb_ct_entry *rev = lb_conntrack.lookup(&rk);
    if (!rev || rev->dir != LB_DIR_REVERSE) {
        global_inc(LB_G_TC_MISS);
        return TC_ACT_OK;
    }
    __u64 now = bpf_ktime_get_ns();
    __u32 old_ip = iph->saddr, new_ip = rev->vip;
    __u16 old_port = sport, new_port = rev->vip_port;
    __u32 backend_id = rev->backend_id;
    __u32 service_id = rev->service_id;
    rev->last_seen_ns = now;
    __sync_fetch_and_add(&rev->packets, 1);
    __sync_fetch_and_add(&rev->bytes, ip_len);
    if (is_tcp && (tcp_flags & 0x07)) {             // SYN, FIN or RST: flow state changes
        struct lb_ct_key fk = {};
        forward_key_of(rev, &fk);
        struct lb_ct_entry *fwd = lb_conntrack.lookup(&fk);
        // only the flow this reverse entry belongs to (not a later flow on the same client port)
        if (fwd && fwd->backend_ip == rev->backend_ip && fwd->backend_port == rev->backend_port)
            track_tcp(fwd, tcp_flags, 1, now);
    }
    struct lb_backend_stats *bs = lb_backend_stats.lookup(&backend_id);
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
    global_inc(LB_G_TC_SNAT);
    return TC_ACT_OK;
}

// Not attached anywhere: the engine runs it with BPF_PROG_TEST_RUN on a buffer of lb_reap_rec to
// remove conntrack entries (expired flows, a drain cut) without racing the data path, because a
// userspace delete by key cannot tell the flow it meant from a new flow on the same tuple.
int lbtui_reap(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct lb_reap_rec *rec = data;
    for (int i = 0; i < LB_REAP_BATCH; i++) {
        if ((void *)(rec + 1) > data_end)
            break;
        struct lb_ct_key key = rec->key;
        __u64 want = rec->created_ns;
        struct lb_ct_entry *e = lb_conntrack.lookup(&key);
        if (e && want != LB_CT_REAPING &&
            __sync_val_compare_and_swap(&e->created_ns, want, LB_CT_REAPING) == want) {
            lb_conntrack.delete(&key);
            rec->created_ns = 0;                    // removed
        }
        rec++;
    }
    return XDP_PASS;
}
