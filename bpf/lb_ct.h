// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// Conntrack: the established and transient tables, and the moves of a flow between them
// (docs/datapath.md#conntrack).
//
//   new flow      -> transient (XDP new_flow)
//   established   transient -> established (ct_promote: the client's handshake ACK, the first reply)
//   closed        established -> transient (ct_closed + ct_demote), for its last packets
//   removed       by lbtui_reap (idle), a SYN reusing the tuple (ct_end), or LRU eviction (transient)
//
// live flows per backend = established - ended: `established` counts each promotion once (the
// LB_CT_F_EST bit), `ended` counts each established flow once when LB_CT_F_CLOSED is first set on it,
// whoever sets it (a FIN/RST close, lbtui_reap, a SYN reusing the tuple).
// lbtui: per-family template (lb_fam.h)

#ifndef LB_TBL_TRANSIENT
#define LB_TBL_TRANSIENT 0
#define LB_TBL_ESTABLISHED 1
#endif

static __always_inline void LB_F(reverse_key_of)(LB_CT_ENTRY *e, LB_CT_KEY *k)
{
    k->saddr = e->backend_ip;
    k->daddr = e->client_ip;
    k->sport = e->backend_port;
    k->dport = e->client_port;
    k->proto = e->proto;
}

static __always_inline void LB_F(forward_key_of)(LB_CT_ENTRY *e, LB_CT_KEY *k)
{
    k->saddr = e->client_ip;
    k->daddr = e->vip;
    k->sport = e->client_port;
    k->dport = e->vip_port;
    k->proto = e->proto;
}

static __always_inline void LB_F(partner_key_of)(LB_CT_ENTRY *e, LB_CT_KEY *k)
{
    if (e->dir == LB_DIR_FORWARD)
        LB_F(reverse_key_of)(e, k);
    else
        LB_F(forward_key_of)(e, k);
}

// the entry of `k`, established table first; *table says where it was found
static __always_inline LB_CT_ENTRY *LB_F(ct_lookup)(LB_CT_KEY *k, int *table)
{
    LB_CT_ENTRY *e = LB_F(ct_est_lookup)(k);
    if (e) {
        *table = LB_TBL_ESTABLISHED;
        return e;
    }
    *table = LB_TBL_TRANSIENT;
    return LB_F(ct_tr_lookup)(k);
}

static __always_inline LB_CT_ENTRY *LB_F(ct_lookup_in)(int table, LB_CT_KEY *k)
{
    if (table == LB_TBL_ESTABLISHED)
        return LB_F(ct_est_lookup)(k);
    return LB_F(ct_tr_lookup)(k);
}

static __always_inline int LB_F(ct_write)(int table, LB_CT_KEY *k, LB_CT_ENTRY *e)
{
    if (table == LB_TBL_ESTABLISHED)
        return LB_F(ct_est_update)(k, e);
    return LB_F(ct_tr_update)(k, e);
}

static __always_inline void LB_F(ct_delete)(int table, LB_CT_KEY *k)
{
    if (table == LB_TBL_ESTABLISHED)
        LB_F(ct_est_delete)(k);
    else
        LB_F(ct_tr_delete)(k);
}

// Claim an entry for removal (see LB_CT_REAPING): 1 if this caller owns its removal now.
static __always_inline int LB_F(ct_claim)(LB_CT_ENTRY *e, __u64 created)
{
    return created != LB_CT_REAPING &&
           __sync_val_compare_and_swap(&e->created_ns, created, LB_CT_REAPING) == created;
}

// A reverse entry made from its flow's forward entry (or the other way round): the flow's fields,
// none of the other direction's state but whether a client's SYN created the flow.
static __always_inline void LB_F(ct_mirror)(LB_CT_ENTRY *out, LB_CT_ENTRY *from, __u8 dir)
{
    *out = *from;
    out->dir = dir;
    out->packets = 0;
    out->bytes = 0;
    out->seq_first = 0;
    out->seq_next = 0;
    out->window = 0;
    out->wscale = 0;
    out->win_shift = 0;
    out->flags = from->flags & LB_CT_F_SYN;
    out->synack_ns = dir == LB_DIR_FORWARD ? 0 : from->synack_ns;
}

// The LB_CT_F_CLOSED transition: the first caller to set it accounts the end of the flow once
// (`ended` for an established flow). Returns the flags before, or -1 if the flow was closed already.
static __always_inline __s64 LB_F(ct_mark_closed)(LB_CT_ENTRY *fwd)
{
    __u64 old = __sync_fetch_and_or(&fwd->flags, LB_CT_F_CLOSED);
    if (old & LB_CT_F_CLOSED)
        return -1;
    if (old & LB_CT_F_EST) {
        struct lb_backend_stats *bs = backend_stats(fwd->backend_id);
        if (bs)
            bs->ended += 1;
    }
    return (__s64)old;
}

// Move a flow from the transient table to the established one. 1: done; 0: another CPU does it, or
// the flow is closing; -1: no room in the established table (the caller drops the packet and counts
// conntrack_full).
static __always_inline int LB_F(ct_promote)(LB_CT_KEY *fk, LB_CT_ENTRY *fwd)
{
    LB_SCRATCH *s = LB_F(scratch)();
    if (!s || (fwd->flags & (LB_CT_F_EST | LB_CT_F_CLOSED)))
        return 0;
    __u64 old = __sync_fetch_and_or(&fwd->flags, LB_CT_F_EST);
    if (old & (LB_CT_F_EST | LB_CT_F_CLOSED)) {
        if (!(old & LB_CT_F_EST))                   // it closed meanwhile: not ours to establish
            __sync_fetch_and_and(&fwd->flags, ~(__u64)LB_CT_F_EST);
        return 0;
    }
    __u64 created = fwd->created_ns;
    if (created == LB_CT_REAPING) {
        __sync_fetch_and_and(&fwd->flags, ~(__u64)LB_CT_F_EST);
        return 0;
    }
    s->fwd = *fwd;
    s->fwd.flags = old | LB_CT_F_EST;
    LB_CT_KEY rk = {};
    LB_F(reverse_key_of)(fwd, &rk);
    LB_CT_ENTRY *rev = LB_F(ct_tr_lookup)(&rk);
    int own_rev = rev && rev->created_ns == created && rev->dir == LB_DIR_REVERSE;
    if (own_rev)
        s->rev = *rev;
    else
        LB_F(ct_mirror)(&s->rev, &s->fwd, LB_DIR_REVERSE);
    if (LB_F(ct_est_insert)(fk, &s->fwd) != 0) {
        __sync_fetch_and_and(&fwd->flags, ~(__u64)LB_CT_F_EST);
        return -1;
    }
    if (LB_F(ct_est_update)(&rk, &s->rev) != 0) {
        LB_F(ct_est_delete)(fk);
        __sync_fetch_and_and(&fwd->flags, ~(__u64)LB_CT_F_EST);
        return -1;
    }
    struct lb_backend_stats *bs = backend_stats(s->fwd.backend_id);
    if (bs)
        bs->established += 1;
    // the transient copies go; packets of this flow on other CPUs find it established from now on
    if (LB_F(ct_claim)(fwd, created))
        LB_F(ct_tr_delete)(fk);
    if (own_rev && LB_F(ct_claim)(rev, created))
        LB_F(ct_tr_delete)(&rk);
    return 1;
}

// Move a flow that just closed (this caller set LB_CT_F_CLOSED) from the established table to the
// transient one, where it stays for its last packets and can be evicted.
static __always_inline void LB_F(ct_demote)(LB_CT_KEY *fk, LB_CT_ENTRY *fwd)
{
    LB_SCRATCH *s = LB_F(scratch)();
    if (!s)
        return;
    __u64 created = fwd->created_ns;
    s->fwd = *fwd;
    LB_CT_KEY rk = {};
    LB_F(reverse_key_of)(fwd, &rk);
    LB_CT_ENTRY *rev = LB_F(ct_est_lookup)(&rk);
    int own_rev = rev && rev->created_ns == created && rev->dir == LB_DIR_REVERSE;
    if (own_rev)
        s->rev = *rev;
    else
        LB_F(ct_mirror)(&s->rev, &s->fwd, LB_DIR_REVERSE);
    if (!LB_F(ct_claim)(fwd, created))
        return;                                     // lbtui_reap is removing it
    s->fwd.created_ns = created;
    LB_F(ct_tr_update)(fk, &s->fwd);
    LB_CT_ENTRY *other = LB_F(ct_tr_lookup)(&rk);
    if (!other || other->created_ns == created)     // never over another flow's reverse entry
        LB_F(ct_tr_update)(&rk, &s->rev);
    LB_F(ct_est_delete)(fk);
    if (own_rev && LB_F(ct_claim)(rev, created))
        LB_F(ct_est_delete)(&rk);
}

// End a flow whose tuple a new SYN takes over (a closed flow, or one whose backend takes no new
// flows): claim and remove both entries. 0 if removed, -1 if it is being removed right now.
static __always_inline int LB_F(ct_end)(int table, LB_CT_KEY *fk, LB_CT_ENTRY *fwd)
{
    __u64 created = fwd->created_ns;
    if (!LB_F(ct_claim)(fwd, created))
        return -1;
    LB_F(ct_mark_closed)(fwd);
    LB_CT_KEY rk = {};
    LB_F(reverse_key_of)(fwd, &rk);
    // late packets of the old flow must not reach the new one; a reverse entry another flow has
    // taken over since (after an eviction) is not ours to delete
    LB_CT_ENTRY *rev = LB_F(ct_lookup_in)(table, &rk);
    if (rev && LB_F(ct_claim)(rev, created))
        LB_F(ct_delete)(table, &rk);
    LB_F(ct_delete)(table, fk);
    return 0;
}

// True if the reverse entry `rk` belongs to a live flow other than `fk`.
static __always_inline int LB_F(reverse_owned_by_other)(LB_CT_KEY *rk, LB_CT_KEY *fk)
{
    int table;
    LB_CT_ENTRY *old = LB_F(ct_lookup)(rk, &table);
    if (!old || old->dir != LB_DIR_REVERSE)
        return 0;
    if (old->created_ns == LB_CT_REAPING)
        return 1;                   // being removed this instant: a fresh entry would be deleted with it
    if (LB_ADDR_EQ(old->client_ip, fk->saddr) && LB_ADDR_EQ(old->vip, fk->daddr) && old->client_port == fk->sport &&
        old->vip_port == fk->dport)
        return 0;                   // our own flow's (left from an earlier use of this tuple)
    LB_CT_KEY ok = {};
    LB_F(forward_key_of)(old, &ok);
    int owner_table;
    LB_CT_ENTRY *owner = LB_F(ct_lookup)(&ok, &owner_table);
    if (!owner)
        return 0;                   // a leftover whose flow is gone: overwrite it
    return LB_ADDR_EQ(owner->backend_ip, old->backend_ip) && owner->backend_port == old->backend_port;
}

// lbtui_reap's work on one record (see LB_REAP_REC); 1 if the flow was removed.
static __always_inline int LB_F(ct_reap)(LB_REAP_REC *rec)
{
    LB_CT_KEY key = rec->key;
    __u64 want = rec->created_ns;
    if (want == LB_CT_REAPING)
        return 0;
    int table = LB_TBL_ESTABLISHED;
    LB_CT_ENTRY *e = LB_F(ct_est_lookup)(&key);
    if (!e || e->created_ns != want) {
        table = LB_TBL_TRANSIENT;
        e = LB_F(ct_tr_lookup)(&key);
    }
    if (!e || e->created_ns != want)
        return 0;
    LB_CT_KEY pk = {};
    LB_F(partner_key_of)(e, &pk);
    LB_CT_ENTRY *p = LB_F(ct_lookup_in)(table, &pk);
    if (p && (p->created_ns != want || p->dir == e->dir))
        p = 0;                                      // another flow's
    __u64 last = e->last_seen_ns;
    if (p && p->last_seen_ns > last)
        last = p->last_seen_ns;
    if (rec->idle_before_ns && last >= rec->idle_before_ns)
        return 0;                                   // a packet came since the sweep read it
    if (!LB_F(ct_claim)(e, want))
        return 0;
    LB_CT_ENTRY *fwd = e->dir == LB_DIR_FORWARD ? e : p;
    if (fwd)
        LB_F(ct_mark_closed)(fwd);
    rec->packets = p ? p->packets : 0;
    rec->bytes = p ? p->bytes : 0;
    if (p && LB_F(ct_claim)(p, want))
        LB_F(ct_delete)(table, &pk);
    LB_F(ct_delete)(table, &key);
    rec->created_ns = 0;
    rec->idle_before_ns = last;
    return 1;
}

// ring-buffer room for one event of this family (0 if the ring is full)
static __always_inline LB_EVENT *LB_F(event_reserve)(void)
{
#if LB_FAM == 4
    return lb_events.ringbuf_reserve(sizeof(struct lb_event));
#else
    return lb_events.ringbuf_reserve(sizeof(struct lb_event6));
#endif
}

static __always_inline void LB_F(emit_event)(__u8 type, LB_CT_ENTRY *fwd, LB_CT_ENTRY *rev,
                                       __u32 reason, __u64 now)
{
    LB_EVENT *ev = LB_F(event_reserve)();
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

static __always_inline int LB_F(service_wants)(LB_CT_ENTRY *fwd, __u32 flag)
{
    LB_SVC_KEY sk = {};
    sk.vip = fwd->vip;
    sk.port = fwd->vip_port;
    sk.proto = fwd->proto;
    struct lb_service *svc = LB_F(service_lookup)(&sk);
    return svc && (svc->flags & flag);
}
