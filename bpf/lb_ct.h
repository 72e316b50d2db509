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
#ifndef LBTUI_LB_CT_H
#define LBTUI_LB_CT_H

#include "lb.h"
#include "lb_stats.h"

#define LB_TBL_TRANSIENT 0
#define LB_TBL_ESTABLISHED 1

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

static __always_inline void partner_key_of(struct lb_ct_entry *e, struct lb_ct_key *k)
{
    if (e->dir == LB_DIR_FORWARD)
        reverse_key_of(e, k);
    else
        forward_key_of(e, k);
}

// the entry of `k`, established table first; *table says where it was found
static __always_inline struct lb_ct_entry *ct_lookup(struct lb_ct_key *k, int *table)
{
    struct lb_ct_entry *e = lb_ct_established.lookup(k);
    if (e) {
        *table = LB_TBL_ESTABLISHED;
        return e;
    }
    *table = LB_TBL_TRANSIENT;
    return lb_ct_transient.lookup(k);
}

static __always_inline struct lb_ct_entry *ct_lookup_in(int table, struct lb_ct_key *k)
{
    if (table == LB_TBL_ESTABLISHED)
        return lb_ct_established.lookup(k);
    return lb_ct_transient.lookup(k);
}

static __always_inline int ct_write(int table, struct lb_ct_key *k, struct lb_ct_entry *e)
{
    if (table == LB_TBL_ESTABLISHED)
        return lb_ct_established.update(k, e);
    return lb_ct_transient.update(k, e);
}

static __always_inline void ct_delete(int table, struct lb_ct_key *k)
{
    if (table == LB_TBL_ESTABLISHED)
        lb_ct_established.delete(k);
    else
        lb_ct_transient.delete(k);
}

// Claim an entry for removal (see LB_CT_REAPING): 1 if this caller owns its removal now.
static __always_inline int ct_claim(struct lb_ct_entry *e, __u64 created)
{
    return created != LB_CT_REAPING &&
           __sync_val_compare_and_swap(&e->created_ns, created, LB_CT_REAPING) == created;
}

static __always_inline struct lb_scratch *scratch(void)
{
    __u32 zero = 0;
    return lb_scratch.lookup(&zero);
}

// A reverse entry made from its flow's forward entry (or the other way round): the flow's fields,
// none of the other direction's state but whether a client's SYN created the flow.
static __always_inline void ct_mirror(struct lb_ct_entry *out, struct lb_ct_entry *from, __u8 dir)
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
static __always_inline __s64 ct_mark_closed(struct lb_ct_entry *fwd)
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
static __always_inline int ct_promote(struct lb_ct_key *fk, struct lb_ct_entry *fwd)
{
    struct lb_scratch *s = scratch();
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
    struct lb_ct_key rk = {};
    reverse_key_of(fwd, &rk);
    struct lb_ct_entry *rev = lb_ct_transient.lookup(&rk);
    int own_rev = rev && rev->created_ns == created && rev->dir == LB_DIR_REVERSE;
    if (own_rev)
        s->rev = *rev;
    else
        ct_mirror(&s->rev, &s->fwd, LB_DIR_REVERSE);
    if (lb_ct_established.insert(fk, &s->fwd) != 0) {
        __sync_fetch_and_and(&fwd->flags, ~(__u64)LB_CT_F_EST);
        return -1;
    }
    if (lb_ct_established.update(&rk, &s->rev) != 0) {
        lb_ct_established.delete(fk);
        __sync_fetch_and_and(&fwd->flags, ~(__u64)LB_CT_F_EST);
        return -1;
    }
    struct lb_backend_stats *bs = backend_stats(s->fwd.backend_id);
    if (bs)
        bs->established += 1;
    // the transient copies go; packets of this flow on other CPUs find it established from now on
    if (ct_claim(fwd, created))
        lb_ct_transient.delete(fk);
    if (own_rev && ct_claim(rev, created))
        lb_ct_transient.delete(&rk);
    return 1;
}

// Move a flow that just closed (this caller set LB_CT_F_CLOSED) from the established table to the
// transient one, where it stays for its last packets and can be evicted.
static __always_inline void ct_demote(struct lb_ct_key *fk, struct lb_ct_entry *fwd)
{
    struct lb_scratch *s = scratch();
    if (!s)
        return;
    __u64 created = fwd->created_ns;
    s->fwd = *fwd;
    struct lb_ct_key rk = {};
    reverse_key_of(fwd, &rk);
    struct lb_ct_entry *rev = lb_ct_established.lookup(&rk);
    int own_rev = rev && rev->created_ns == created && rev->dir == LB_DIR_REVERSE;
    if (own_rev)
        s->rev = *rev;
    else
        ct_mirror(&s->rev, &s->fwd, LB_DIR_REVERSE);
    if (!ct_claim(fwd, created))
        return;                                     // lbtui_reap is removing it
    s->fwd.created_ns = created;
    lb_ct_transient.update(fk, &s->fwd);
    struct lb_ct_entry *other = lb_ct_transient.lookup(&rk);
    if (!other || other->created_ns == created)     // never over another flow's reverse entry
        lb_ct_transient.update(&rk, &s->rev);
    lb_ct_established.delete(fk);
    if (own_rev && ct_claim(rev, created))
        lb_ct_established.delete(&rk);
}

// End a flow whose tuple a new SYN takes over (a closed flow, or one whose backend takes no new
// flows): claim and remove both entries. 0 if removed, -1 if it is being removed right now.
static __always_inline int ct_end(int table, struct lb_ct_key *fk, struct lb_ct_entry *fwd)
{
    __u64 created = fwd->created_ns;
    if (!ct_claim(fwd, created))
        return -1;
    ct_mark_closed(fwd);
    struct lb_ct_key rk = {};
    reverse_key_of(fwd, &rk);
    // late packets of the old flow must not reach the new one; a reverse entry another flow has
    // taken over since (after an eviction) is not ours to delete
    struct lb_ct_entry *rev = ct_lookup_in(table, &rk);
    if (rev && ct_claim(rev, created))
        ct_delete(table, &rk);
    ct_delete(table, fk);
    return 0;
}

// True if the reverse entry `rk` belongs to a live flow other than `fk`.
static __always_inline int reverse_owned_by_other(struct lb_ct_key *rk, struct lb_ct_key *fk)
{
    int table;
    struct lb_ct_entry *old = ct_lookup(rk, &table);
    if (!old || old->dir != LB_DIR_REVERSE)
        return 0;
    if (old->created_ns == LB_CT_REAPING)
        return 1;                   // being removed this instant: a fresh entry would be deleted with it
    if (old->client_ip == fk->saddr && old->vip == fk->daddr && old->client_port == fk->sport &&
        old->vip_port == fk->dport)
        return 0;                   // our own flow's (left from an earlier use of this tuple)
    struct lb_ct_key ok = {};
    forward_key_of(old, &ok);
    int owner_table;
    struct lb_ct_entry *owner = ct_lookup(&ok, &owner_table);
    if (!owner)
        return 0;                   // a leftover whose flow is gone: overwrite it
    return owner->backend_ip == old->backend_ip && owner->backend_port == old->backend_port;
}

// lbtui_reap's work on one record (see struct lb_reap_rec); 1 if the flow was removed.
static __always_inline int ct_reap(struct lb_reap_rec *rec)
{
    struct lb_ct_key key = rec->key;
    __u64 want = rec->created_ns;
    if (want == LB_CT_REAPING)
        return 0;
    int table = LB_TBL_ESTABLISHED;
    struct lb_ct_entry *e = lb_ct_established.lookup(&key);
    if (!e || e->created_ns != want) {
        table = LB_TBL_TRANSIENT;
        e = lb_ct_transient.lookup(&key);
    }
    if (!e || e->created_ns != want)
        return 0;
    struct lb_ct_key pk = {};
    partner_key_of(e, &pk);
    struct lb_ct_entry *p = ct_lookup_in(table, &pk);
    if (p && (p->created_ns != want || p->dir == e->dir))
        p = 0;                                      // another flow's
    __u64 last = e->last_seen_ns;
    if (p && p->last_seen_ns > last)
        last = p->last_seen_ns;
    if (rec->idle_before_ns && last >= rec->idle_before_ns)
        return 0;                                   // a packet came since the sweep read it
    if (!ct_claim(e, want))
        return 0;
    struct lb_ct_entry *fwd = e->dir == LB_DIR_FORWARD ? e : p;
    if (fwd)
        ct_mark_closed(fwd);
    rec->packets = p ? p->packets : 0;
    rec->bytes = p ? p->bytes : 0;
    if (p && ct_claim(p, want))
        ct_delete(table, &pk);
    ct_delete(table, &key);
    rec->created_ns = 0;
    rec->idle_before_ns = last;
    return 1;
}

#endif
