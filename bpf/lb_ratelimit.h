// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// New-connection rate limits: token buckets per (service, client address) and per backend, shared
// by all CPUs (docs/datapath.md#maps).
#ifndef LBTUI_LB_RATELIMIT_H
#define LBTUI_LB_RATELIMIT_H

#include "lb.h"

#define LB_TOKEN 1000000000ull

// Take one token from a bucket (lock held briefly); 1 if allowed.
//
// No product can overflow: elapsed is capped at the time the bucket takes to fill from empty
// (burst * 1e9 / rate ns), so elapsed * rate <= burst * 1e9 + rate, and tokens + that product stays
// below 2 * (2^32 - 1) * 1e9 + 2^32 < 2^64 for every u32 rate and burst.
static __always_inline int bucket_take(struct lb_bucket *b, __u32 rate, __u32 burst, __u64 now)
{
    __u64 cap = (__u64)burst * LB_TOKEN;
    __u64 fill_ns = rate ? cap / rate + 1 : 0;     // outside the lock: a division is slow
    int ok = 0;
    bpf_spin_lock(&b->lock);
    // `now` was read before the lock: another CPU may have stamped a later time meanwhile, and
    // now - last_ns would wrap around (a full refill on every race)
    __u64 elapsed = 0;
    if (now > b->last_ns) {
        elapsed = now - b->last_ns;
        b->last_ns = now;
    }
    if (elapsed > fill_ns)
        elapsed = fill_ns;
    __u64 tokens = b->tokens;
    if (tokens > cap)
        tokens = cap;
    tokens += elapsed * rate;
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

// The per-source limit of a service: -1 if allowed, else the drop reason. A new source starts with
// a full bucket; when lb_rl_source is full (userspace forgets idle buckets), new sources share the
// service's overflow bucket (one source's rate and burst for all of them): fail closed.
static __always_inline int source_limit(struct lb_service *svc, lb_addr_t saddr, __u64 now)
{
    if (!svc->src_rate)
        return -1;
    struct lb_rl_key k = {};
    k.service_id = svc->id;
    k.saddr = saddr;
    struct lb_bucket *b = lb_rl_source.lookup(&k);
    if (!b) {
        struct lb_bucket fresh = {};
        fresh.tokens = (__u64)svc->src_burst * LB_TOKEN;
        fresh.last_ns = now;
        lb_rl_source.insert(&k, &fresh);
        b = lb_rl_source.lookup(&k);
    }
    if (b)
        return bucket_take(b, svc->src_rate, svc->src_burst, now) ? -1 : LB_DROP_RATE_SOURCE;
    __u32 sid = svc->id;
    struct lb_bucket *shared = lb_rl_overflow.lookup(&sid);
    if (!shared)
        return LB_DROP_RATE_OVERFLOW;
    return bucket_take(shared, svc->src_rate, svc->src_burst, now) ? -1 : LB_DROP_RATE_OVERFLOW;
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

#endif
