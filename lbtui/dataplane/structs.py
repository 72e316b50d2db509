"""The one Python mirror of bpf/lb.h: ctypes structs, constants and address conversions.

Nothing else in lbtui knows a byte layout. `check_layouts` compares these mirrors with the types
BCC generated from the C source at load time, so a change to lb.h that is not made here fails loudly
at start-up instead of corrupting maps.
"""

from __future__ import annotations

import ctypes
import socket
from typing import Any

# ---- constants (lb.h) ---------------------------------------------------------------------------

EMPTY_SLOT = 0xFFFFFFFF
IPPROTO_TCP = 6
IPPROTO_UDP = 17
PROTO_NUMBERS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}
PROTO_NAMES = {v: k for k, v in PROTO_NUMBERS.items()}

ALG_RANDOM = 0
ALG_SOURCE_HASH = 1
ALG_MAGLEV = 2
ALGORITHM_CODES = {
    "weighted-random": ALG_RANDOM,
    "least-connections": ALG_RANDOM,  # weights recomputed by userspace, random index in the data path
    "source-hash": ALG_SOURCE_HASH,
    "maglev": ALG_MAGLEV,
}

SVC_F_EV_NEW = 1
SVC_F_EV_CLOSED = 2
BE_F_ACTIVE = 1

DIR_FORWARD = 0
DIR_REVERSE = 1

CT_F_SYNACK = 0x01
CT_F_FIN_IN = 0x02
CT_F_FIN_OUT = 0x04
CT_F_RST = 0x08
CT_F_CLOSED = 0x10
CT_F_FAILED = 0x20

DROP_REASONS = (
    "no_backend",
    "conntrack_full",
    "rate_limit_source",
    "rate_limit_backend",
    "tuple_conflict",
    "conntrack_busy",
)

GLOBAL_COUNTERS = (
    "xdp_packets",
    "xdp_not_ours",
    "xdp_malformed",
    "xdp_fragment",
    "xdp_midstream",
    "xdp_ct_restored",
    "tc_snat",
    "tc_miss",
    "events_lost",
)

EV_NEW = 1
EV_CLOSED = 2
CLOSE_REASONS = {1: "fin", 2: "rst"}

# ---- structs (lb.h), same field names as the C -------------------------------------------------


class ServiceKey(ctypes.Structure):
    _fields_ = [
        ("vip", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class Service(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("default_group", ctypes.c_uint32),
        ("algorithm", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("src_rate", ctypes.c_uint32),
        ("src_burst", ctypes.c_uint32),
        ("be_rate", ctypes.c_uint32),
        ("be_burst", ctypes.c_uint32),
    ]


class Bucket(ctypes.Structure):
    _fields_ = [
        ("lock", ctypes.c_uint32),  # struct bpf_spin_lock
        ("pad", ctypes.c_uint32),
        ("tokens", ctypes.c_uint64),
        ("last_ns", ctypes.c_uint64),
    ]


class RateKey(ctypes.Structure):
    _fields_ = [("service_id", ctypes.c_uint32), ("saddr", ctypes.c_uint32)]


class RouteKey(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("service_id", ctypes.c_uint32), ("saddr", ctypes.c_uint32)]


class Backend(ctypes.Structure):
    _fields_ = [("ip", ctypes.c_uint32), ("port", ctypes.c_uint16), ("flags", ctypes.c_uint16)]


class CtKey(ctypes.Structure):
    _fields_ = [
        ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


CT_REAPING = 0  # LB_CT_REAPING: created_ns of an entry being removed
REAP_BATCH = 128  # LB_REAP_BATCH


class ReapRec(ctypes.Structure):
    """struct lb_reap_rec: remove `key` only while its entry is the flow created at created_ns."""

    _fields_ = [("key", CtKey), ("created_ns", ctypes.c_uint64)]


class CtEntry(ctypes.Structure):
    _fields_ = [
        ("client_ip", ctypes.c_uint32),
        ("vip", ctypes.c_uint32),
        ("backend_ip", ctypes.c_uint32),
        ("client_port", ctypes.c_uint16),
        ("vip_port", ctypes.c_uint16),
        ("backend_port", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("dir", ctypes.c_uint8),
        ("backend_id", ctypes.c_uint32),
        ("service_id", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("flags", ctypes.c_uint64),
        ("created_ns", ctypes.c_uint64),
        ("last_seen_ns", ctypes.c_uint64),
        ("synack_ns", ctypes.c_uint64),
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
    ]


BACKEND_STATS_FIELDS = (
    "packets_in",
    "bytes_in",
    "packets_out",
    "bytes_out",
    "new_flows",
    "handshakes",
    "conn_failures",
    "closes",
)


class BackendStats(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in BACKEND_STATS_FIELDS]


class ServiceStats(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("packets_in", "bytes_in", "packets_out", "bytes_out", "new_flows")
    ] + [("drops", ctypes.c_uint64 * len(DROP_REASONS))]


HIST_BUCKETS = 32
# upper bounds of the latency buckets in ms: bucket 0 < 1 µs, bucket k < 2^k µs, the last one +Inf
HIST_BOUNDS_MS = tuple(2**k / 1000 for k in range(HIST_BUCKETS - 1))


class Latency(ctypes.Structure):
    _fields_ = [
        ("handshake", ctypes.c_uint64 * HIST_BUCKETS),
        ("duration", ctypes.c_uint64 * HIST_BUCKETS),
        ("handshake_sum_us", ctypes.c_uint64),
        ("duration_sum_us", ctypes.c_uint64),
    ]


def hist_bucket(us: int) -> int:
    """The data path's bucket of a duration in microseconds (lb.c hist_bucket)."""
    return 0 if us <= 0 else min(int(us).bit_length(), HIST_BUCKETS - 1)


class Event(ctypes.Structure):
    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("created_ns", ctypes.c_uint64),
        ("synack_ns", ctypes.c_uint64),
        ("packets_in", ctypes.c_uint64),
        ("bytes_in", ctypes.c_uint64),
        ("packets_out", ctypes.c_uint64),
        ("bytes_out", ctypes.c_uint64),
        ("client_ip", ctypes.c_uint32),
        ("vip", ctypes.c_uint32),
        ("backend_ip", ctypes.c_uint32),
        ("backend_id", ctypes.c_uint32),
        ("service_id", ctypes.c_uint32),
        ("client_port", ctypes.c_uint16),
        ("vip_port", ctypes.c_uint16),
        ("backend_port", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("type", ctypes.c_uint8),
        ("reason", ctypes.c_uint32),
    ]


# map name -> (key mirror, value mirror); per-CPU maps list the per-CPU value type
MAP_LAYOUTS: dict[str, tuple[Any, Any]] = {
    "lb_services": (ServiceKey, Service),
    "lb_routes": (RouteKey, ctypes.c_uint32),
    "lb_backends": (ctypes.c_uint32, Backend),
    "lb_select": (ctypes.c_uint32, ctypes.c_uint32),
    "lb_conntrack": (CtKey, CtEntry),
    "lb_backend_stats": (ctypes.c_uint32, BackendStats),
    "lb_service_stats": (ctypes.c_uint32, ServiceStats),
    "lb_global_stats": (ctypes.c_uint32, ctypes.c_uint64),
    "lb_rl_source": (RateKey, Bucket),
    "lb_latency": (ctypes.c_uint32, Latency),
    "lb_rl_backend": (ctypes.c_uint32, Bucket),
}


def check_layouts(sizes: dict[str, tuple[int, int]]) -> None:
    """Raise if BCC's generated key/value sizes differ from the mirrors above."""
    for name, (key_t, val_t) in MAP_LAYOUTS.items():
        want = (ctypes.sizeof(key_t), ctypes.sizeof(val_t))
        got = sizes.get(name)
        if got is not None and got != want:
            raise RuntimeError(
                f"bpf/lb.h and lbtui/dataplane/structs.py disagree on {name}: "
                f"C has key/value sizes {got}, Python {want}"
            )


# ---- wire values: addresses and ports are kept in network byte order in the maps ----------------


def ip_to_be32(ip: str) -> int:
    """The u32 whose in-memory bytes are the address's wire bytes (what the C code compares)."""
    return int.from_bytes(socket.inet_aton(ip), "little")


def be32_to_ip(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4, "little"))


def port_to_be16(port: int) -> int:
    return socket.htons(port)


def be16_to_port(value: int) -> int:
    return socket.ntohs(value)
