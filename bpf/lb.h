// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
// lbtui data path: every map and struct shared by the XDP ingress and TC egress programs.
//
// This header is the single source of the layouts; lbtui/dataplane/structs.py mirrors the structs
// (and only that module). Sizes that depend on the configuration are -D defines set by the loader.
// All addresses and ports are stored in network byte order, exactly as they appear on the wire.
// The code is split by concern: lb_csum.h (checksums), lb_parse.h (headers), lb_stats.h (counters,
// events), lb_ct.h (conntrack tables), lb_tcp.h (TCP state and validation), lb_ratelimit.h,
// lb_pick.h (new flows), lb_icmp.h and lb_icmp6.h (ICMP errors and fragments); lb.c holds the programs.
#ifndef LBTUI_LB_H
#define LBTUI_LB_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/icmp.h>
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
#ifndef LB_CT_SIZE             // established conntrack entries: two per flow (forward + reverse)
#define LB_CT_SIZE 524288
#endif
#ifndef LB_CT_TRANSIENT_SIZE   // embryonic and closing flows: two entries each
#define LB_CT_TRANSIENT_SIZE 131072
#endif
#ifndef LB_CT6_SIZE           // the IPv6 twins of the two tables above
#define LB_CT6_SIZE 524288
#endif
#ifndef LB_CT6_TRANSIENT_SIZE
#define LB_CT6_TRANSIENT_SIZE 131072
#endif
#ifndef LB_MAX_ROUTES
#define LB_MAX_ROUTES 1024
#endif
#ifndef LB_RL_SOURCES         // per-source rate-limit buckets
#define LB_RL_SOURCES 65536
#endif
#ifndef LB_FRAGS              // fragmented replies being SNATed at once
#define LB_FRAGS 8192
#endif
#ifndef LB_FAST_PATH          // 1: DNATed packets go straight to the backend's interface (lb_fastpath.h)
#define LB_FAST_PATH 0
#endif
#ifndef LB_FP_IFACES
#define LB_FP_IFACES 256
#endif
#ifndef LB_RINGBUF_PAGES
#define LB_RINGBUF_PAGES 1024       // 4 MiB: ~40,000 events between two drains
#endif

#define LB_EMPTY_SLOT 0xFFFFFFFFu
#define LB_PICK_TRIES 4            // slots tried when a pick clashes with another flow of the client port

// One address of each family. IPv4 and IPv6 flows live in separate maps with their own keys and
// entries (the "6" twins below), so that an IPv4 packet hashes and copies exactly what it did before
// IPv6 existed; the code over them is written once (lb_fam.h, docs/datapath.md#ipv6).
typedef __u32 lb_addr_t;
struct lb_addr6 {
    __u32 w[4];                // the 16 wire bytes
};

static __always_inline int lb_addr6_eq(struct lb_addr6 *a, struct lb_addr6 *b)
{
    return ((a->w[0] ^ b->w[0]) | (a->w[1] ^ b->w[1]) | (a->w[2] ^ b->w[2]) | (a->w[3] ^ b->w[3])) == 0;
}

// the 32 bits an IPv6 address contributes to a hash (source-hash, Maglev)
static __always_inline __u32 lb_addr6_fold(struct lb_addr6 *a)
{
    return a->w[0] ^ a->w[1] ^ a->w[2] ^ a->w[3];
}

// services: (VIP, port, protocol) -> service
struct lb_service_key {
    lb_addr_t vip;
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
    __u32 src_prefix6;         // IPv6 clients: leading bits of the source one per-source bucket counts
    __be32 ipip_src;           // LB_SVC_F_IPIP: the outer source address (this host's)
};
#define LB_SVC_F_EV_NEW 1      // ring-buffer event for every new flow (only the access log needs it)
#define LB_SVC_F_EV_CLOSED 2   // ring-buffer event for every closed flow (latency, access log)
#define LB_SVC_F_IPIP 4        // DSR: the client's packet goes to the backend inside IPIP (lb_encap.h)

// source routes: LPM on (service id, client address) -> group id.
// prefixlen counts the 32 bits of service_id plus the CIDR's prefix length.
struct lb_route_key {
    __u32 prefixlen;
    __u32 service_id;          // always matched whole (its 32 bits are part of every prefix)
    lb_addr_t saddr;
};

struct lb_service6_key {
    struct lb_addr6 vip;
    __u16 port;
    __u8 proto;
    __u8 pad;
};

struct lb_route6_key {
    __u32 prefixlen;           // 32 bits of service_id plus the CIDR's prefix length
    __u32 service_id;
    struct lb_addr6 saddr;
};

// backends: array, backend id -> address (ip for an IPv4 backend, ip6 for an IPv6 one)
struct lb_backend {
    lb_addr_t ip;
    __u16 port;
    __u16 flags;               // LB_BE_F_*
    struct lb_addr6 ip6;
};
#define LB_BE_F_ACTIVE 1       // a configured backend (cleared when it is removed)
#define LB_BE_F_NO_NEW 2       // selection weight 0 (down, drained, circuit open): takes no new flows

// conntrack: two tables of the same entries (docs/datapath.md#conntrack).
//   lb_ct_established  (hash, never evicts): flows whose client completed the handshake (TCP) or
//                      whose backend answered (UDP), until they close
//   lb_ct_transient    (LRU): flows not established yet, and closed flows for their last packets;
//                      a flood can only evict these
// Every flow has two entries in the same table, each carrying the whole flow:
//   forward key: client ip:port -> VIP:port      (seen by XDP ingress)
//   reverse key: backend ip:port -> client ip:port (seen by TC egress, before SNAT)
// so either entry can re-create the other after an eviction.
struct lb_ct_key {
    lb_addr_t saddr;
    lb_addr_t daddr;
    __u16 sport;
    __u16 dport;
    __u8 proto;
    __u8 pad[3];
};

#define LB_DIR_FORWARD 0
#define LB_DIR_REVERSE 1

// flow flags, in the forward entry
#define LB_CT_F_SYNACK      0x01   // the backend answered the SYN
#define LB_CT_F_FIN_IN      0x02   // client sent FIN
#define LB_CT_F_FIN_OUT     0x04   // backend sent FIN
#define LB_CT_F_RST         0x08   // an accepted RST from either side
#define LB_CT_F_CLOSED      0x10   // the flow ended (FIN both ways, RST, removal): accounted once
#define LB_CT_F_FAILED      0x20   // connect failure already counted (RST answering the SYN)
#define LB_CT_F_SYN         0x40   // a client's well-formed SYN created the flow (a real handshake)
#define LB_CT_F_EST         0x80   // established: counted once in `established` (live flows)
#define LB_CT_F_SYN_RETX    0x100  // the client sent its SYN again (a real client waiting for an answer)
// direction flags, in each entry for its own direction
#define LB_CT_F_SEQ         0x200  // seq_next is known
#define LB_CT_F_WIN         0x400  // window is known
#define LB_CT_F_WSCALE      0x800  // this side's SYN offered window scaling (shift in wscale)
#define LB_CT_FLOW_FLAGS    0x1FF  // the flags above LB_CT_F_SEQ are per direction

// Removing an entry races with a SYN that reuses its tuple: a delete by key issued for the old flow
// would remove the new one. So whoever removes an entry first claims it by swapping its created_ns
// (unique per flow) to LB_CT_REAPING with compare-and-swap, and deletes only if the swap succeeded:
// the sweep (through lbtui_reap), the XDP path reusing a tuple, promotion and demotion of a flow.
#define LB_CT_REAPING 0

struct lb_ct_entry {
    lb_addr_t client_ip;
    lb_addr_t vip;
    lb_addr_t backend_ip;
    __u16 client_port;
    __u16 vip_port;
    __u16 backend_port;
    __u8 proto;
    __u8 dir;                  // LB_DIR_*
    __u32 backend_id;
    __u32 service_id;
    __u32 seq_first;           // TCP, this direction: the sequence number of its SYN
    __u32 seq_next;            // TCP, this direction: highest seq + length seen (host order)
    __u16 window;              // TCP, this direction: last advertised window field (host order)
    __u8 wscale;               // TCP, this direction: the shift its SYN offered
    __u8 win_shift;            // TCP: the shift that applies to `window` (0 for a SYN's window)
    __u64 flags;               // LB_CT_F_*, updated atomically (64-bit: BPF atomics)
    __u64 created_ns;          // bpf_ktime_get_ns() of the flow's first packet, unique per flow
    __u64 last_seen_ns;        // of this direction
    __u64 synack_ns;           // forward entry: when the SYN-ACK passed (0: not yet)
    __u64 packets;             // this direction
    __u64 bytes;               // this direction, IP total length
};

// the same for IPv6 flows (lb_ct6_established, lb_ct6_transient)
struct lb_ct6_key {
    struct lb_addr6 saddr;
    struct lb_addr6 daddr;
    __u16 sport;
    __u16 dport;
    __u8 proto;
    __u8 pad[3];
};

struct lb_ct6_entry {
    struct lb_addr6 client_ip;
    struct lb_addr6 vip;
    struct lb_addr6 backend_ip;
    __u16 client_port;
    __u16 vip_port;
    __u16 backend_port;
    __u8 proto;
    __u8 dir;
    __u32 backend_id;
    __u32 service_id;
    __u32 seq_first;
    __u32 seq_next;
    __u16 window;
    __u8 wscale;
    __u8 win_shift;
    __u64 flags;
    __u64 created_ns;
    __u64 last_seen_ns;
    __u64 synack_ns;
    __u64 packets;
    __u64 bytes;               // this direction, IPv6 header + payload
};

// one record of lbtui_reap: remove the flow whose entry has `key`, only while it is still the flow
// created at created_ns and, with idle_before_ns, only if neither of its entries saw a packet since.
// lbtui_reap writes created_ns = 0 for each flow it removed, the flow's last packet time into
// idle_before_ns and the other entry's counters into packets and bytes.
struct lb_reap_rec {
    struct lb_ct_key key;
    __u64 created_ns;
    __u64 idle_before_ns;
    __u64 packets;
    __u64 bytes;
};
#define LB_REAP_BATCH 64   // records per run: 64 * 48 bytes fits an XDP test-run buffer

struct lb_reap6_rec {
    struct lb_ct6_key key;
    __u64 created_ns;
    __u64 idle_before_ns;
    __u64 packets;
    __u64 bytes;
};
#define LB_REAP6_BATCH 48  // 48 * 72 bytes

// fragments of a reply: the first carries the ports, the others only (source, destination, id)
struct lb_frag_key {
    lb_addr_t saddr;           // the backend
    lb_addr_t daddr;           // the client
    __u16 id;
    __u8 proto;
    __u8 pad;
};
struct lb_frag {
    lb_addr_t vip;
};
// the same for IPv6 replies, keyed by the fragment header's 32-bit identification (lb_icmp6.h)
struct lb_frag6_key {
    struct lb_addr6 saddr;
    struct lb_addr6 daddr;
    __u32 id;
    __u8 proto;
    __u8 pad[3];
};
struct lb_frag6 {
    struct lb_addr6 vip;
};

// rate limits: token buckets shared by all CPUs (a spin lock, never per-CPU copies that would
// multiply the limit by the number of CPUs). Tokens are kept in billionths, so that
// elapsed_ns * rate (tokens/s) adds exactly; elapsed is capped at the time a bucket takes to fill.
struct lb_bucket {
    struct bpf_spin_lock lock;
    __u32 pad;
    __u64 tokens;              // 1e9 = one new connection
    __u64 last_ns;
};

struct lb_rl_key {
    __u32 service_id;
    lb_addr_t saddr;
};

struct lb_rl6_key {
    __u32 service_id;
    struct lb_addr6 saddr;     // the client's address cut to the service's src_prefix6
};

// per-CPU counters; userspace sums the CPUs
struct lb_backend_stats {
    __u64 packets_in;          // client -> backend
    __u64 bytes_in;
    __u64 packets_out;         // backend -> client
    __u64 bytes_out;
    __u64 new_flows;
    __u64 handshakes;          // handshakes a client completed (its ACK to the SYN-ACK)
    __u64 conn_failures;       // RST answering a client's SYN
    __u64 closes;              // established flows closed by FIN both ways or RST
    __u64 established;         // flows established; live flows = established - ended
    __u64 ended;               // established flows that closed or were removed
};

// latency histograms per backend, kept in the data path (no per-connection event needed):
// bucket 0 counts values below 1 µs, bucket k (k >= 1) values in [2^(k-1), 2^k) µs, the last one
// everything from 2^(LB_HIST_BUCKETS-2) µs (~18 min) up
#define LB_HIST_BUCKETS 32
struct lb_latency {
    __u64 handshake[LB_HIST_BUCKETS];   // SYN -> SYN-ACK, of handshakes a client completed
    __u64 duration[LB_HIST_BUCKETS];    // first packet -> FIN both ways or RST, established flows
    __u64 handshake_sum_us;
    __u64 duration_sum_us;
};

enum lb_drop_reason {
    LB_DROP_NO_BACKEND = 0,    // selection table empty (every backend drained)
    LB_DROP_CT_FULL = 1,       // conntrack insert failed, or no room to establish a flow
    LB_DROP_RATE_SOURCE = 2,   // per-source new-connection limit
    LB_DROP_RATE_BACKEND = 3,  // per-backend new-connection limit
    LB_DROP_CONFLICT = 4,      // every candidate backend already serves this client address:port
    LB_DROP_CT_BUSY = 5,       // a SYN reused a tuple whose old entry was being removed right then
    LB_DROP_TCP_FLAGS = 6,     // SYN with RST or FIN
    LB_DROP_BAD_CSUM = 7,      // a segment that would change state has a bad checksum
    LB_DROP_RST_WINDOW = 8,    // RST outside the window of its flow
    LB_DROP_RATE_OVERFLOW = 9, // per-source limit, per-source table full: the shared overflow bucket
    LB_DROP_MAX = 10,
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
    LB_G_XDP_FRAGMENT,         // fragments (IPv4 and IPv6): passed untouched
    LB_G_XDP_MIDSTREAM,        // TCP non-SYN to a VIP with no conntrack entry: passed
    LB_G_XDP_CT_RESTORED,      // reverse entry re-created from the forward one
    LB_G_TC_SNAT,              // replies rewritten to VIP:port
    LB_G_TC_MISS,              // egress packets that were not replies of ours
    LB_G_EVENTS_LOST,          // ring buffer full
    LB_G_TC_CT_RESTORED,       // forward entry re-created from the reverse one
    LB_G_XDP_ICMP,             // ICMP and ICMPv6 errors about a flow rewritten toward its backend
    LB_G_TC_ICMP,              // ICMP and ICMPv6 errors about a flow rewritten toward its client
    LB_G_TC_FRAGMENTS,         // fragments of replies after the first (both families), source: the VIP
    LB_G_XDP_REPICK,           // SYNs on a tuple whose backend takes no new flows: picked again
    LB_G_RST_CHALLENGED,       // RSTs inside the window, not at its start: passed, flow kept
    LB_G_XDP_V6_NO_L4,         // IPv6 whose upper-layer header lies beyond the extension headers we walk
    LB_G_IPIP_ENCAP,           // packets sent on to their backend inside an outer IPv4 header (DSR)
    LB_G_IPIP_TOO_BIG,         // ... of them larger than the interface's MTU once encapsulated
    LB_G_IPIP_FAILED,          // the headroom for the outer header could not be had: dropped
    LB_G_IPIP_PROBES,          // health checks of DSR backends sent inside IPIP (TC egress)
    LB_G_FP_FORWARDED,         // fast path: DNATed packets redirected straight to the backend's interface
    LB_G_FP_NO_NEIGH,          // ... fell back (XDP_PASS): no neighbour entry for the next hop yet
    LB_G_FP_FRAG_NEEDED,       // ... fell back: larger than the egress MTU (the kernel sends the ICMP)
    LB_G_FP_TTL,               // ... fell back: TTL would expire (the kernel sends time exceeded)
    LB_G_FP_IP_OPTIONS,        // ... fell back: IP options (the kernel's forwarding handles them)
    LB_G_FP_UNMANAGED,         // ... fell back: the route leaves through an interface lbtui does not manage
    LB_G_FP_VLAN,              // ... fell back: a VLAN-tagged frame
    LB_G_FP_FIB_OTHER,         // ... fell back: any other bpf_fib_lookup answer (no route, forwarding off, ...)
    LB_G_FP_REPLY_FORWARDED,   // fast path: replies SNATed at TC ingress of a backend-facing interface and redirected
                               // to the client's (their fallbacks count in the reasons above)
    LB_G_FP_OTHER_HOST,        // fast path fell back: the frame was not addressed to the ingress interface's MAC
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
    lb_addr_t client_ip;
    lb_addr_t vip;
    lb_addr_t backend_ip;
    __u32 backend_id;
    __u32 service_id;
    __u16 client_port;
    __u16 vip_port;
    __u16 backend_port;
    __u8 proto;
    __u8 type;                 // LB_EV_*
    __u32 reason;              // LB_CLOSE_* for closed events
};

// an IPv6 flow's event: struct lb_event with IPv6 addresses (the reader tells them apart by size)
struct lb_event6 {
    __u64 ts_ns;
    __u64 created_ns;
    __u64 synack_ns;
    __u64 packets_in;
    __u64 bytes_in;
    __u64 packets_out;
    __u64 bytes_out;
    struct lb_addr6 client_ip;
    struct lb_addr6 vip;
    struct lb_addr6 backend_ip;
    __u32 backend_id;
    __u32 service_id;
    __u16 client_port;
    __u16 vip_port;
    __u16 backend_port;
    __u8 proto;
    __u8 type;
    __u32 reason;
};

// per-CPU room for entry copies (the BPF stack is 512 bytes)
struct lb_scratch {
    struct lb_ct_entry fwd;
    struct lb_ct_entry rev;
};
struct lb_scratch6 {
    struct lb_ct6_entry fwd;
    struct lb_ct6_entry rev;
};

// With LB_PIN_DIR (a string literal) every map except the ring buffer and the scratch space is
// pinned in bpffs under that directory: an existing pin is reused, so a restarted lbtui adopts the
// running state (conntrack, tables, counters) instead of starting empty.
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
LB_TABLE("hash", struct lb_ct_key, struct lb_ct_entry, lb_ct_established, LB_CT_SIZE, 0);
LB_TABLE("lru_hash", struct lb_ct_key, struct lb_ct_entry, lb_ct_transient, LB_CT_TRANSIENT_SIZE, 0);
LB_TABLE("lru_hash", struct lb_frag_key, struct lb_frag, lb_frags, LB_FRAGS, 0);
LB_TABLE("lru_hash", struct lb_frag6_key, struct lb_frag6, lb_frags6, LB_FRAGS, 0);
LB_TABLE("hash", struct lb_rl_key, struct lb_bucket, lb_rl_source, LB_RL_SOURCES, 0);
LB_TABLE("hash", struct lb_service6_key, struct lb_service, lb_services6, LB_MAX_SERVICES, 0);
LB_TABLE("lpm_trie", struct lb_route6_key, __u32, lb_routes6, LB_MAX_ROUTES, BPF_F_NO_PREALLOC);
LB_TABLE("hash", struct lb_ct6_key, struct lb_ct6_entry, lb_ct6_established, LB_CT6_SIZE, 0);
LB_TABLE("lru_hash", struct lb_ct6_key, struct lb_ct6_entry, lb_ct6_transient, LB_CT6_TRANSIENT_SIZE, 0);
LB_TABLE("hash", struct lb_rl6_key, struct lb_bucket, lb_rl6_source, LB_RL_SOURCES, 0);
LB_TABLE("array", __u32, struct lb_bucket, lb_rl_overflow, LB_MAX_SERVICES, 0);
LB_TABLE("array", __u32, struct lb_bucket, lb_rl_backend, LB_MAX_BACKENDS, 0);
LB_TABLE("percpu_array", __u32, struct lb_backend_stats, lb_backend_stats, LB_MAX_BACKENDS, 0);
LB_TABLE("percpu_array", __u32, struct lb_service_stats, lb_service_stats, LB_MAX_SERVICES, 0);
LB_TABLE("percpu_array", __u32, struct lb_latency, lb_latency, LB_MAX_BACKENDS, 0);
LB_TABLE("percpu_array", __u32, __u64, lb_global_stats, LB_G_MAX, 0);
// fast path (lb_fastpath.h): the interfaces packets may arrive on and be redirected to, by ifindex,
// with the MAC a frame must be addressed to for the kernel to forward it (lb_nexthop.h). Replies (an
// skb redirected from TC) may go into any of them; XDP frames only into those with xdp_out (all of
// them, but while an attachment runs native XDP only those that transmit XDP frames: ndo_xdp_xmit).
struct lb_fp_iface {
    __u8 mac[ETH_ALEN];
    __u8 xdp_out;
    __u8 pad;
};
LB_TABLE("hash", __u32, struct lb_fp_iface, lb_fp_ifaces, LB_FP_IFACES, 0);
BPF_PERCPU_ARRAY(lb_scratch, struct lb_scratch, 1);
BPF_PERCPU_ARRAY(lb_scratch6, struct lb_scratch6, 1);
BPF_RINGBUF_OUTPUT(lb_events, LB_RINGBUF_PAGES);
// IPv6 frames continue in programs of their own (lbtui_xdp6, lbtui_tc6: a tail call), so that the
// verifier checks each family's program on its own and IPv4 pays one EtherType test for IPv6.
// Not pinned: every load fills them with its own programs.
BPF_PROG_ARRAY(lb_xdp6_prog, 1);
BPF_PROG_ARRAY(lb_tc6_prog, 1);
BPF_PROG_ARRAY(lb_tc_reply6_prog, 1);     // the fast path's IPv6 replies (lb_fastpath6.h)

#endif
