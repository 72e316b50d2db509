// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// lbtui: per-family template
//
// The flow logic (lb_ct.h, lb_tcp_flow.h, lb_pick.h, lb_flow.h) is written once and compiled twice:
// lb.c includes those headers after `#define LB_FAM 4` and again after `#define LB_FAM 6`. This file
// maps the names the shared code uses to one family's types, maps and function names:
//   LB_F(name)      the family's function: name for IPv4 (the names of the IPv4-only days), name6
//   LB_ADDR, LB_CT_KEY, LB_CT_ENTRY, ...   the family's address, key and entry types
//   LB_ADDR_EQ      address equality (a u32 compare, or four)
// and defines the family's map accessors. Maps are reached only through these accessors because
// BCC cannot rewrite a map call whose map name comes from a macro. The loader's source joiner
// (lbtui/dataplane/loader.py bpf_source) expands a file marked "lbtui: per-family template" at every
// #include instead of once. Everything is __always_inline: the IPv4 program is the same code as
// before IPv6 existed, with nothing of IPv6 in its way but the EtherType test.

#undef LB_F
#undef LB_ADDR
#undef LB_CT_KEY
#undef LB_CT_ENTRY
#undef LB_SVC_KEY
#undef LB_ROUTE_KEY
#undef LB_RL_KEY
#undef LB_EVENT
#undef LB_REAP_REC
#undef LB_SCRATCH
#undef LB_PICKED
#undef LB_ADDR_EQ
#undef LB_ADDR_BITS
#undef LB_ADDR_HASH
#undef LB_BE_IP

#if LB_FAM == 4
#define LB_F(name) name
#define LB_ADDR lb_addr_t
#define LB_CT_KEY struct lb_ct_key
#define LB_CT_ENTRY struct lb_ct_entry
#define LB_SVC_KEY struct lb_service_key
#define LB_ROUTE_KEY struct lb_route_key
#define LB_RL_KEY struct lb_rl_key
#define LB_EVENT struct lb_event
#define LB_REAP_REC struct lb_reap_rec
#define LB_SCRATCH struct lb_scratch
#define LB_PICKED struct lb_picked
#define LB_ADDR_EQ(a, b) ((a) == (b))
#define LB_ADDR_BITS 32
#define LB_ADDR_HASH(a) (a)
#define LB_BE_IP(be) ((be)->ip)
#else
#define LB_F(name) name##6
#define LB_ADDR struct lb_addr6
#define LB_CT_KEY struct lb_ct6_key
#define LB_CT_ENTRY struct lb_ct6_entry
#define LB_SVC_KEY struct lb_service6_key
#define LB_ROUTE_KEY struct lb_route6_key
#define LB_RL_KEY struct lb_rl6_key
#define LB_EVENT struct lb_event6
#define LB_REAP_REC struct lb_reap6_rec
#define LB_SCRATCH struct lb_scratch6
#define LB_PICKED struct lb_picked6
#define LB_ADDR_EQ(a, b) lb_addr6_eq(&(a), &(b))
#define LB_ADDR_BITS 128
#define LB_ADDR_HASH(a) lb_addr6_fold(&(a))
#define LB_BE_IP(be) ((be)->ip6)
#endif

// the accessors, once per family however often this file is included
#undef LB_FAM_FUNCS
#if LB_FAM == 4 && !defined(LBTUI_FAM4_FUNCS)
#define LBTUI_FAM4_FUNCS
#define LB_FAM_FUNCS 1
#elif LB_FAM == 6 && !defined(LBTUI_FAM6_FUNCS)
#define LBTUI_FAM6_FUNCS
#define LB_FAM_FUNCS 1
#else
#define LB_FAM_FUNCS 0
#endif
#if LB_FAM_FUNCS

static __always_inline LB_CT_ENTRY *LB_F(ct_est_lookup)(LB_CT_KEY *k)
{
#if LB_FAM == 4
    return lb_ct_established.lookup(k);
#else
    return lb_ct6_established.lookup(k);
#endif
}

static __always_inline LB_CT_ENTRY *LB_F(ct_tr_lookup)(LB_CT_KEY *k)
{
#if LB_FAM == 4
    return lb_ct_transient.lookup(k);
#else
    return lb_ct6_transient.lookup(k);
#endif
}

static __always_inline int LB_F(ct_est_insert)(LB_CT_KEY *k, LB_CT_ENTRY *e)
{
#if LB_FAM == 4
    return lb_ct_established.insert(k, e);
#else
    return lb_ct6_established.insert(k, e);
#endif
}

static __always_inline int LB_F(ct_tr_insert)(LB_CT_KEY *k, LB_CT_ENTRY *e)
{
#if LB_FAM == 4
    return lb_ct_transient.insert(k, e);
#else
    return lb_ct6_transient.insert(k, e);
#endif
}

static __always_inline int LB_F(ct_est_update)(LB_CT_KEY *k, LB_CT_ENTRY *e)
{
#if LB_FAM == 4
    return lb_ct_established.update(k, e);
#else
    return lb_ct6_established.update(k, e);
#endif
}

static __always_inline int LB_F(ct_tr_update)(LB_CT_KEY *k, LB_CT_ENTRY *e)
{
#if LB_FAM == 4
    return lb_ct_transient.update(k, e);
#else
    return lb_ct6_transient.update(k, e);
#endif
}

static __always_inline void LB_F(ct_est_delete)(LB_CT_KEY *k)
{
#if LB_FAM == 4
    lb_ct_established.delete(k);
#else
    lb_ct6_established.delete(k);
#endif
}

static __always_inline void LB_F(ct_tr_delete)(LB_CT_KEY *k)
{
#if LB_FAM == 4
    lb_ct_transient.delete(k);
#else
    lb_ct6_transient.delete(k);
#endif
}

static __always_inline struct lb_service *LB_F(service_lookup)(LB_SVC_KEY *k)
{
#if LB_FAM == 4
    return lb_services.lookup(k);
#else
    return lb_services6.lookup(k);
#endif
}

static __always_inline __u32 *LB_F(route_lookup)(LB_ROUTE_KEY *k)
{
#if LB_FAM == 4
    return lb_routes.lookup(k);
#else
    return lb_routes6.lookup(k);
#endif
}

static __always_inline struct lb_bucket *LB_F(rl_source_lookup)(LB_RL_KEY *k)
{
#if LB_FAM == 4
    return lb_rl_source.lookup(k);
#else
    return lb_rl6_source.lookup(k);
#endif
}

static __always_inline void LB_F(rl_source_insert)(LB_RL_KEY *k, struct lb_bucket *b)
{
#if LB_FAM == 4
    lb_rl_source.insert(k, b);
#else
    lb_rl6_source.insert(k, b);
#endif
}

static __always_inline LB_SCRATCH *LB_F(scratch)(void)
{
    __u32 zero = 0;
#if LB_FAM == 4
    return lb_scratch.lookup(&zero);
#else
    return lb_scratch6.lookup(&zero);
#endif
}

// The address a per-source rate-limit bucket counts: the whole IPv4 address; for IPv6 the leading
// src_prefix6 bits (64 when 0), since one host owns a whole /64.
static __always_inline void LB_F(rl_source_addr)(LB_ADDR *out, LB_ADDR *saddr, struct lb_service *svc)
{
#if LB_FAM == 4
    *out = *saddr;
#else
    __u32 bits = svc->src_prefix6 ? svc->src_prefix6 : 64;
    if (bits > 128)
        bits = 128;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        __u32 keep = bits > 32 * i ? bits - 32 * i : 0;
        __u32 mask = keep >= 32 ? 0xffffffffu : keep == 0 ? 0 : bpf_htonl(~(0xffffffffu >> keep));
        out->w[i] = saddr->w[i] & mask;
    }
#endif
}

#endif
