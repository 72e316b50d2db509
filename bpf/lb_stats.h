// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// Counters, drop reasons, latency histograms and ring-buffer events.
#ifndef LBTUI_LB_STATS_H
#define LBTUI_LB_STATS_H

#include "lb.h"

static __always_inline void global_inc(__u32 idx)
{
    __u64 *v = lb_global_stats.lookup(&idx);
    if (v)
        *v += 1;
}

static __always_inline void count_drop(__u32 service_id, __u32 reason)
{
    struct lb_service_stats *ss = lb_service_stats.lookup(&service_id);
    if (ss && reason < LB_DROP_MAX)
        ss->drops[reason] += 1;
}

static __always_inline struct lb_backend_stats *backend_stats(__u32 backend_id)
{
    return lb_backend_stats.lookup(&backend_id);
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

static __always_inline int service_wants(struct lb_ct_entry *fwd, __u32 flag)
{
    struct lb_service_key sk = {};
    sk.vip = fwd->vip;
    sk.port = fwd->vip_port;
    sk.proto = fwd->proto;
    struct lb_service *svc = lb_services.lookup(&sk);
    return svc && (svc->flags & flag);
}

#endif
