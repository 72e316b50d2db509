// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// lbtui data path: every map and struct shared by the XDP ingress and TC egress programs.
//
// This header is the single source of the layouts; lbtui/dataplane/structs.py mirrors the structs
// (and only that module). Sizes that depend on the configuration are -D defines set by the loader.
// All addresses and ports are stored in network byte order, exactly as they appear on the wire.
#ifndef LBTUI_LB_H
#define LBTUI_LB_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include <uapi/linux/pkt_cls.h>

#ifndef LB_MAX_SERVICES
#define LB_MAX_SERVICES 64
#endif
#ifndef LB_MAX_BACKENDS
#define LB_MAX_BACKENDS 4096
#endif
#ifndef LB_MAX_GROUPS
#define LB_MAX_GROUPS 64
#endif
#ifndef LB_TABLE_SIZE          // slots per selection table: a prime (Maglev needs it)
#define LB_TABLE_SIZE 65537
#endif
#ifndef LB_CT_SIZE             // conntrack entries: two per flow (forward + reverse)
#define LB_CT_SIZE 524288
#endif
#ifndef LB_MAX_ROUTES
#define LB_MAX_ROUTES 1024
#endif
#ifndef LB_RL_SOURCES         // per-source rate-limit buckets
#define LB_RL_SOURCES 65536
#endif
#ifndef LB_RINGBUF_PAGES
#define LB_RINGBUF_PAGES 1024       // 4 MiB: ~40,000 events between two drains
#endif

#define LB_EMPTY_SLOT 0xFFFFFFFFu
#define LB_PICK_TRIES 4            // slots tried when a pick clashes with another flow of the client port

// services: (VIP, port, protocol) -> service
struct lb_service_key {
    __u32 vip;
    __u16 port;
    __u8 proto;                // IPPROTO_TCP / IPPROTO_UDP
    __u8 pad;
};

enum lb_algorithm {
    LB_ALG_RANDOM = 0,         // weighted random (also least-connections: weights recomputed by userspace)
    LB_ALG_SOURCE_HASH = 1,    // slot = hash(client address)
    LB_ALG_MAGLEV = 2,         // slot = hash(5-tuple); TCP non-SYN without entry is picked too
};

struct lb_service {
    __u32 id;                  // index into lb_service_stats
    __u32 default_group;       // selection table used when no source route matches
    __u32 algorithm;           // enum lb_algorithm
    __u32 flags;               // LB_SVC_F_*
    __u32 src_rate;            // new connections per second per client address (0: no limit)
    __u32 src_burst;
    __u32 be_rate;             // new connections per second per backend (0: no limit)
    __u32 be_burst;
};
#define LB_SVC_F_EV_NEW 1      // ring-buffer event for every new flow (only the access log needs it)
#define LB_SVC_F_EV_CLOSED 2   // ring-buffer event for every closed flow (latency, access log)

// source routes: LPM on (service id, client address) -> group id.
// prefixlen counts the 32 bits of service_id plus the CIDR's prefix length.
struct lb_route_key {
    __u32 prefixlen;
    __u32 service_id;          // always matched whole (its 32 bits are part of every prefix)
    __u32 saddr;
};

// backends: array, backend id -> address
struct lb_backend {
    __u32 ip;
    __u16 port;
    __u16 flags;               // LB_BE_F_*
};
#define LB_BE_F_ACTIVE 1

// conntrack: one shared LRU hash with both directions of every flow.
//   forward key: client ip:port -> VIP:port      (seen by XDP ingress)
//   reverse key: backend ip:port -> client ip:port (seen by TC egress, before SNAT)
// Both entries carry the full flow, so either can re-create the other after an LRU eviction.
struct lb_ct_key {
    __u32 saddr;
    __u32 daddr;
    __u16 sport;
    __u16 dport;
    __u8 proto;
    __u8 pad[3];
};

#define LB_DIR_FORWARD 0
#define LB_DIR_REVERSE 1

// flag bits live in the forward entry (the reverse entry's are unused)
#define LB_CT_F_SYNACK      0x01   // backend answered the SYN (handshake completed on its side)
#define LB_CT_F_FIN_IN      0x02   // client sent FIN
#define LB_CT_F_FIN_OUT     0x04   // backend sent FIN
#define LB_CT_F_RST         0x08   // either side sent RST
#define LB_CT_F_CLOSED      0x10   // close already reported (event + counter), once per flow
#define LB_CT_F_FAILED      0x20   // connect failure already counted (RST answering a SYN)

// Removing an entry races with a SYN that reuses its tuple: a delete by key issued for the old flow
// would remove the new one. So whoever removes an entry first claims it by swapping its created_ns
// (unique per flow) to LB_CT_REAPING with compare-and-swap, and deletes only if the swap succeeded:
// the sweep (through lbtui_reap), the XDP path reusing a closed flow's tuple, a drain cut.
#define LB_CT_REAPING 0

// one record of lbtui_reap's input: delete `key` only if its entry is still the flow created at
// created_ns; lbtui_reap sets created_ns to 0 in its output for each record it removed
struct lb_reap_rec {
    struct lb_ct_key key;
    __u64 created_ns;
};
#define LB_REAP_BATCH 128   // records per run: 128 * 24 bytes fits an XDP test-run buffer

struct lb_ct_entry {
    __u32 client_ip;
    __u32 vip;
    __u32 backend_ip;
    __u16 client_port;
    __u16 vip_port;
    __u16 backend_port;
    __u8 proto;
    __u8 dir;                  // LB_DIR_*
    __u32 backend_id;
    __u32 service_id;
    __u32 pad;
    __u64 flags;               // LB_CT_F_* (forward entry), updated atomically (64-bit: BPF atomics)
    __u64 created_ns;          // bpf_ktime_get_ns() of the flow's first packet
    __u64 last_seen_ns;        // of this direction
    __u64 synack_ns;           // forward entry: when the SYN-ACK passed (0: not yet)
    __u64 packets;             // this direction
    __u64 bytes;               // this direction, IP total length
};

// rate limits: token buckets shared by all CPUs (a spin lock, never per-CPU copies that would
// multiply the limit by the number of CPUs). Tokens are kept in billionths, so that
// elapsed_ns * rate (tokens/s) adds exactly.
struct lb_bucket {
    struct bpf_spin_lock lock;
    __u32 pad;
    __u64 tokens;              // 1e9 = one new connection
    __u64 last_ns;
};

struct lb_rl_key {
    __u32 service_id;
    __u32 saddr;
};

// per-CPU counters; userspace sums the CPUs
struct lb_backend_stats {
    __u64 packets_in;          // client -> backend
    __u64 bytes_in;
    __u64 packets_out;         // backend -> client
    __u64 bytes_out;
    __u64 new_flows;
    __u64 handshakes;          // SYN-ACK seen on the reply path
    __u64 conn_failures;       // RST answering a SYN
    __u64 closes;              // FIN both ways or RST
};

// latency histograms per backend, kept in the data path (no per-connection event needed):
// bucket 0 counts values below 1 µs, bucket k (k >= 1) values in [2^(k-1), 2^k) µs, the last one
// everything from 2^(LB_HIST_BUCKETS-2) µs (~18 min) up
#define LB_HIST_BUCKETS 32
struct lb_latency {
    __u64 handshake[LB_HIST_BUCKETS];   // SYN -> SYN-ACK on the reply path
    __u64 duration[LB_HIST_BUCKETS];    // first packet -> FIN both ways or RST
    __u64 handshake_sum_us;
    __u64 duration_sum_us;
};

enum lb_drop_reason {
    LB_DROP_NO_BACKEND = 0,    // selection table empty (every backend drained)
    LB_DROP_CT_FULL = 1,       // conntrack insert failed
    LB_DROP_RATE_SOURCE = 2,   // per-source new-connection limit
    LB_DROP_RATE_BACKEND = 3,  // per-backend new-connection limit
    LB_DROP_CONFLICT = 4,      // every candidate backend already serves this client address:port
    LB_DROP_CT_BUSY = 5,       // a SYN reused a tuple whose old entry was being removed right then
    LB_DROP_MAX = 6,
};

struct lb_service_stats {
    __u64 packets_in;
    __u64 bytes_in;
    __u64 packets_out;
    __u64 bytes_out;
    __u64 new_flows;
    __u64 drops[LB_DROP_MAX];
};

enum lb_global_counter {
    LB_G_XDP_PACKETS = 0,      // every packet the XDP program saw
    LB_G_XDP_NOT_OURS,         // not IPv4 TCP/UDP to a configured VIP:port
    LB_G_XDP_MALFORMED,        // truncated or invalid headers: passed untouched
    LB_G_XDP_FRAGMENT,         // IPv4 fragments: passed untouched
    LB_G_XDP_MIDSTREAM,        // TCP non-SYN to a VIP with no conntrack entry: passed
    LB_G_XDP_CT_RESTORED,      // reverse entry re-created from the forward one
    LB_G_TC_SNAT,              // replies rewritten to VIP:port
    LB_G_TC_MISS,              // egress packets that were not replies of ours
    LB_G_EVENTS_LOST,          // ring buffer full
    LB_G_MAX,
};

// events (ring buffer): new flow and flow closed
#define LB_EV_NEW 1
#define LB_EV_CLOSED 2
#define LB_CLOSE_FIN 1
#define LB_CLOSE_RST 2

struct lb_event {
    __u64 ts_ns;
    __u64 created_ns;
    __u64 synack_ns;           // 0 if no SYN-ACK was seen
    __u64 packets_in;
    __u64 bytes_in;
    __u64 packets_out;
    __u64 bytes_out;
    __u32 client_ip;
    __u32 vip;
    __u32 backend_ip;
    __u32 backend_id;
    __u32 service_id;
    __u16 client_port;
    __u16 vip_port;
    __u16 backend_port;
    __u8 proto;
    __u8 type;                 // LB_EV_*
    __u32 reason;              // LB_CLOSE_* for closed events
};

// With LB_PIN_DIR (a string literal) every map except the ring buffer is pinned in bpffs under that
// directory: an existing pin is reused, so a restarted lbtui adopts the running state (conntrack,
// tables, counters) instead of starting empty.
#ifdef LB_PIN_DIR
#define LB_TABLE(_type, _key, _leaf, _name, _size, _flags) \
    BPF_F_TABLE(_type ":" LB_PIN_DIR "/" #_name, _key, _leaf, _name, _size, _flags)
#else
#define LB_TABLE(_type, _key, _leaf, _name, _size, _flags) \
    BPF_F_TABLE(_type, _key, _leaf, _name, _size, _flags)
#endif

LB_TABLE("hash", struct lb_service_key, struct lb_service, lb_services, LB_MAX_SERVICES, 0);
LB_TABLE("lpm_trie", struct lb_route_key, __u32, lb_routes, LB_MAX_ROUTES, BPF_F_NO_PREALLOC);
LB_TABLE("array", __u32, struct lb_backend, lb_backends, LB_MAX_BACKENDS, 0);
LB_TABLE("array", __u32, __u32, lb_select, LB_MAX_GROUPS * LB_TABLE_SIZE, 0);
LB_TABLE("lru_hash", struct lb_ct_key, struct lb_ct_entry, lb_conntrack, LB_CT_SIZE, 0);
LB_TABLE("hash", struct lb_rl_key, struct lb_bucket, lb_rl_source, LB_RL_SOURCES, 0);
LB_TABLE("array", __u32, struct lb_bucket, lb_rl_backend, LB_MAX_BACKENDS, 0);
LB_TABLE("percpu_array", __u32, struct lb_backend_stats, lb_backend_stats, LB_MAX_BACKENDS, 0);
LB_TABLE("percpu_array", __u32, struct lb_service_stats, lb_service_stats, LB_MAX_SERVICES, 0);
LB_TABLE("percpu_array", __u32, struct lb_latency, lb_latency, LB_MAX_BACKENDS, 0);
LB_TABLE("percpu_array", __u32, __u64, lb_global_stats, LB_G_MAX, 0);
BPF_RINGBUF_OUTPUT(lb_events, LB_RINGBUF_PAGES);

#endif
