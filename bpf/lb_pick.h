// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// New flows: the backend pick (docs/datapath.md#what-the-programs-do, step 6) and the insertion of
// both conntrack entries into the transient table.
#ifndef LBTUI_LB_PICK_H
#define LBTUI_LB_PICK_H

#include "lb.h"
#include "lb_ct.h"
#include "lb_ratelimit.h"
#include "lb_tcp.h"

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

// the backend a new flow gets
struct lb_picked {
    lb_addr_t ip;
    __u16 port;
    __u16 pad;
    __u32 backend_id;
};

// Pick a backend for a new flow and insert both conntrack entries (transient table). `seg` is the
// TCP segment that opens it (0 for UDP). Returns 0 and fills *out; 1 if another CPU created the
// same flow first (*out is its choice); or a negative drop reason (-1 - reason).
static __always_inline int new_flow(struct lb_service *svc, struct lb_ct_key *fk, __u32 ip_len,
                                    struct lb_seg *seg, __u64 now, struct lb_picked *out)
{
    int limited = source_limit(svc, fk->saddr, now);
    if (limited >= 0)
        return -1 - limited;
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
    __u32 backend_id = LB_EMPTY_SLOT;
    lb_addr_t ip = 0;
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

    struct lb_scratch *s = scratch();
    if (!s)
        return -1 - LB_DROP_CT_FULL;
    struct lb_ct_entry *e = &s->fwd;
    __builtin_memset(e, 0, sizeof(*e));
    e->client_ip = fk->saddr;
    e->vip = fk->daddr;
    e->backend_ip = ip;
    e->client_port = fk->sport;
    e->vip_port = fk->dport;
    e->backend_port = port;
    e->proto = fk->proto;
    e->dir = LB_DIR_FORWARD;
    e->backend_id = backend_id;
    e->service_id = svc->id;
    e->created_ns = now;
    e->last_seen_ns = now;
    e->packets = 1;
    e->bytes = ip_len;
    if (seg) {
        e->seq_first = seg->seq;
        e->seq_next = seg->end;
        e->window = seg->window;
        e->flags = LB_CT_F_SEQ | LB_CT_F_WIN;
        if (seg->flags & TCP_SYN) {
            e->flags |= LB_CT_F_SYN;
            if (seg->wscale != LB_NO_WSCALE) {
                e->wscale = seg->wscale;
                e->flags |= LB_CT_F_WSCALE;
            }
        }
    }
    if (lb_ct_transient.insert(fk, e) != 0) {
        // another CPU inserted this flow first: use its choice
        struct lb_ct_entry *won = lb_ct_transient.lookup(fk);
        if (!won)
            return -1 - LB_DROP_CT_FULL;
        out->ip = won->backend_ip;
        out->port = won->backend_port;
        out->backend_id = won->backend_id;
        return 1;
    }
    ct_mirror(&s->rev, e, LB_DIR_REVERSE);
    struct lb_ct_key rk = {};
    reverse_key_of(e, &rk);
    lb_ct_transient.update(&rk, &s->rev);
    out->ip = ip;
    out->port = port;
    out->backend_id = backend_id;
    return 0;
}

#endif
