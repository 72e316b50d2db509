# SPDX-License-Identifier: Apache-2.0
"""The one Python mirror of bpf/lb.h: ctypes structs, constants and address conversions.

Nothing else in lbtui knows a byte layout. `check_layouts` compares these mirrors, field by field
(name, order, offset, size), with the types BCC generated from the compiled C: the loader checks
every map's key and value at start-up, so a change to lb.h that is not made here fails loudly instead
of corrupting maps; tests/bpf/test_layouts.py checks the structs that are no map's key or value.
"""

from __future__ import annotations

import ctypes
import socket
from collections.abc import Mapping
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
SVC_F_IPIP = 4  # DSR over IPIP (bpf/lb_encap.h)
PROBE_MARK = 0x4C42D5A0  # LB_PROBE_MARK: a health check of a DSR backend, sent inside IPIP at TC egress
BE_F_ACTIVE = 1
BE_F_NO_NEW = 2  # selection weight 0: a SYN on a tuple of this backend picks again

DIR_FORWARD = 0
DIR_REVERSE = 1

CT_F_SYNACK = 0x01
CT_F_FIN_IN = 0x02
CT_F_FIN_OUT = 0x04
CT_F_RST = 0x08
CT_F_CLOSED = 0x10
CT_F_FAILED = 0x20
CT_F_SYN = 0x40  # a client's well-formed SYN created the flow
CT_F_EST = 0x80  # established (counted in the backend's `established`)
CT_F_SYN_RETX = 0x100  # the client sent its SYN again
CT_F_SEQ = 0x200  # per direction: seq_next known
CT_F_WIN = 0x400  # per direction: window known
CT_F_WSCALE = 0x800  # per direction: window scaling offered (reverse: agreed by both)

DROP_REASONS = (
    "no_backend",
    "conntrack_full",
    "rate_limit_source",
    "rate_limit_backend",
    "tuple_conflict",
    "conntrack_busy",
    "tcp_flags",
    "bad_checksum",
    "rst_out_of_window",
    "rate_limit_overflow",
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
    "tc_ct_restored",
    "xdp_icmp_translated",
    "tc_icmp_translated",
    "tc_fragments_snat",
    "xdp_repick",
    "rst_challenged",
    "xdp_v6_no_l4",
    "ipip_encap",
    "ipip_too_big",
    "ipip_failed",
    "ipip_probes",
    "fast_path_forwarded",
    "fast_path_no_neigh",
    "fast_path_frag_needed",
    "fast_path_ttl",
    "fast_path_ip_options",
    "fast_path_unmanaged",
    "fast_path_vlan",
    "fast_path_fib_other",
    "fast_path_reply_forwarded",
    "fast_path_other_host",
)

# The fast path's counters, derived from GLOBAL_COUNTERS by name (docs/datapath.md#fast-path): the
# packets it forwarded itself, by direction (forward: client to backend, XDP; reply: backend to
# client, TC ingress), and every other fast_path_* counter is a reason a packet fell back to the
# kernel's forwarding (the reason is the name without the prefix).
FAST_PATH_PREFIX = "fast_path_"
FAST_PATH_FORWARDED = {"forward": "fast_path_forwarded", "reply": "fast_path_reply_forwarded"}
FAST_PATH_FALLBACKS = tuple(
    name.removeprefix(FAST_PATH_PREFIX)
    for name in GLOBAL_COUNTERS
    if name.startswith(FAST_PATH_PREFIX) and name not in FAST_PATH_FORWARDED.values()
)

EV_NEW = 1
EV_CLOSED = 2
CLOSE_REASONS = {1: "fin", 2: "rst"}

# ---- structs (lb.h), same field names as the C -------------------------------------------------


class Addr6(ctypes.Structure):
    """struct lb_addr6: an IPv6 address's 16 wire bytes as four u32 words."""

    _fields_ = [("w", ctypes.c_uint32 * 4)]


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
        ("src_prefix6", ctypes.c_uint32),
        ("ipip_src", ctypes.c_uint32),
    ]


class Service6Key(ctypes.Structure):
    _fields_ = [
        ("vip", Addr6),
        ("port", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class FpIface(ctypes.Structure):
    """struct lb_fp_iface: an interface the fast path may use, with the MAC frames must be sent to."""

    _fields_ = [("mac", ctypes.c_uint8 * 6), ("xdp_out", ctypes.c_uint8), ("pad", ctypes.c_uint8)]


class Bucket(ctypes.Structure):
    _fields_ = [
        ("lock", ctypes.c_uint32),  # struct bpf_spin_lock
        ("pad", ctypes.c_uint32),
        ("tokens", ctypes.c_uint64),
        ("last_ns", ctypes.c_uint64),
    ]


class RateKey(ctypes.Structure):
    _fields_ = [("service_id", ctypes.c_uint32), ("saddr", ctypes.c_uint32)]


class Rate6Key(ctypes.Structure):
    _fields_ = [("service_id", ctypes.c_uint32), ("saddr", Addr6)]


class RouteKey(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("service_id", ctypes.c_uint32), ("saddr", ctypes.c_uint32)]


class Route6Key(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("service_id", ctypes.c_uint32), ("saddr", Addr6)]


class Backend(ctypes.Structure):
    _fields_ = [
        ("ip", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("flags", ctypes.c_uint16),
        ("ip6", Addr6),
    ]


class CtKey(ctypes.Structure):
    _fields_ = [
        ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


class Ct6Key(ctypes.Structure):
    _fields_ = [
        ("saddr", Addr6),
        ("daddr", Addr6),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


CT_REAPING = 0  # LB_CT_REAPING: created_ns of an entry being removed
REAP_BATCH = 64  # LB_REAP_BATCH
REAP6_BATCH = 48  # LB_REAP6_BATCH


class ReapRec(ctypes.Structure):
    """struct lb_reap_rec: remove the flow of `key` only while it is the flow created at created_ns
    and (idle_before_ns != 0) neither entry saw a packet since; out: created_ns 0 when removed, the
    flow's last packet in idle_before_ns, the other entry's packets and bytes."""

    _fields_ = [
        ("key", CtKey),
        ("created_ns", ctypes.c_uint64),
        ("idle_before_ns", ctypes.c_uint64),
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
    ]


class Reap6Rec(ctypes.Structure):
    """struct lb_reap6_rec: ReapRec of an IPv6 flow (lbtui_reap6)."""

    _fields_ = [
        ("key", Ct6Key),
        ("created_ns", ctypes.c_uint64),
        ("idle_before_ns", ctypes.c_uint64),
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
    ]


class FragKey(ctypes.Structure):
    _fields_ = [
        ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32),
        ("id", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class Frag(ctypes.Structure):
    _fields_ = [("vip", ctypes.c_uint32)]


class Frag6Key(ctypes.Structure):
    _fields_ = [
        ("saddr", Addr6),
        ("daddr", Addr6),
        ("id", ctypes.c_uint32),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


class Frag6(ctypes.Structure):
    _fields_ = [("vip", Addr6)]


def _ct_entry_fields(addr: Any) -> list[tuple[str, Any]]:
    """struct lb_ct_entry's fields with `addr` for its addresses (lb_ct6_entry: Addr6)."""
    return [
        ("client_ip", addr),
        ("vip", addr),
        ("backend_ip", addr),
        ("client_port", ctypes.c_uint16),
        ("vip_port", ctypes.c_uint16),
        ("backend_port", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("dir", ctypes.c_uint8),
        ("backend_id", ctypes.c_uint32),
        ("service_id", ctypes.c_uint32),
        ("seq_first", ctypes.c_uint32),
        ("seq_next", ctypes.c_uint32),
        ("window", ctypes.c_uint16),
        ("wscale", ctypes.c_uint8),
        ("win_shift", ctypes.c_uint8),
        ("flags", ctypes.c_uint64),
        ("created_ns", ctypes.c_uint64),
        ("last_seen_ns", ctypes.c_uint64),
        ("synack_ns", ctypes.c_uint64),
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
    ]


class CtEntry(ctypes.Structure):
    _fields_ = _ct_entry_fields(ctypes.c_uint32)


class Ct6Entry(ctypes.Structure):
    _fields_ = _ct_entry_fields(Addr6)


BACKEND_STATS_FIELDS = (
    "packets_in",
    "bytes_in",
    "packets_out",
    "bytes_out",
    "new_flows",
    "handshakes",
    "conn_failures",
    "closes",
    "established",
    "ended",
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


class Scratch(ctypes.Structure):
    _fields_ = [("fwd", CtEntry), ("rev", CtEntry)]


class Scratch6(ctypes.Structure):
    _fields_ = [("fwd", Ct6Entry), ("rev", Ct6Entry)]


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


def _event_fields(addr: Any) -> list[tuple[str, Any]]:
    """struct lb_event's fields with `addr` for its addresses (lb_event6: Addr6)."""
    return [
        ("ts_ns", ctypes.c_uint64),
        ("created_ns", ctypes.c_uint64),
        ("synack_ns", ctypes.c_uint64),
        ("packets_in", ctypes.c_uint64),
        ("bytes_in", ctypes.c_uint64),
        ("packets_out", ctypes.c_uint64),
        ("bytes_out", ctypes.c_uint64),
        ("client_ip", addr),
        ("vip", addr),
        ("backend_ip", addr),
        ("backend_id", ctypes.c_uint32),
        ("service_id", ctypes.c_uint32),
        ("client_port", ctypes.c_uint16),
        ("vip_port", ctypes.c_uint16),
        ("backend_port", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("type", ctypes.c_uint8),
        ("reason", ctypes.c_uint32),
    ]


class Event(ctypes.Structure):
    _fields_ = _event_fields(ctypes.c_uint32)


class Event6(ctypes.Structure):
    _fields_ = _event_fields(Addr6)


# map name -> (key mirror, value mirror); per-CPU maps list the per-CPU value type
MAP_LAYOUTS: dict[str, tuple[Any, Any]] = {
    "lb_services": (ServiceKey, Service),
    "lb_routes": (RouteKey, ctypes.c_uint32),
    "lb_backends": (ctypes.c_uint32, Backend),
    "lb_select": (ctypes.c_uint32, ctypes.c_uint32),
    "lb_ct_established": (CtKey, CtEntry),
    "lb_ct_transient": (CtKey, CtEntry),
    "lb_frags": (FragKey, Frag),
    "lb_frags6": (Frag6Key, Frag6),
    "lb_rl_overflow": (ctypes.c_uint32, Bucket),
    "lb_scratch": (ctypes.c_uint32, Scratch),
    "lb_backend_stats": (ctypes.c_uint32, BackendStats),
    "lb_service_stats": (ctypes.c_uint32, ServiceStats),
    "lb_global_stats": (ctypes.c_uint32, ctypes.c_uint64),
    "lb_rl_source": (RateKey, Bucket),
    "lb_latency": (ctypes.c_uint32, Latency),
    "lb_rl_backend": (ctypes.c_uint32, Bucket),
    "lb_services6": (Service6Key, Service),
    "lb_routes6": (Route6Key, ctypes.c_uint32),
    "lb_ct6_established": (Ct6Key, Ct6Entry),
    "lb_ct6_transient": (Ct6Key, Ct6Entry),
    "lb_rl6_source": (Rate6Key, Bucket),
    "lb_scratch6": (ctypes.c_uint32, Scratch6),
    "lb_fp_ifaces": (ctypes.c_uint32, FpIface),
}

# structs of lb.h that are no map's key or value, by C name: the ring-buffer record and lbtui_reap's
# input. BCC generates no type for them at load time (and the loaded object's BTF holds only the
# map types), so tests/bpf/test_layouts.py compiles them into maps of a check program instead.
RECORD_LAYOUTS: dict[str, Any] = {
    "lb_event": Event,
    "lb_event6": Event6,
    "lb_reap_rec": ReapRec,
    "lb_reap6_rec": Reap6Rec,
}

# everything check_layouts compares, by what it is in lb.h
MIRRORS: dict[str, Any] = {
    **{f"{name} key": key_t for name, (key_t, _) in MAP_LAYOUTS.items()},
    **{f"{name} value": value_t for name, (_, value_t) in MAP_LAYOUTS.items()},
    **{f"struct {name}": t for name, t in RECORD_LAYOUTS.items()},
}


class LayoutError(RuntimeError):
    """bpf/lb.h and this module disagree on a layout: maps would be read and written wrongly."""


def map_types(bpf: Any) -> dict[str, Any]:
    """BCC's ctypes types of every mirrored map's key and value, generated from the compiled C.

    `bpf` is a loaded `bcc.BPF`; keys as in MIRRORS. For per-CPU maps the value is one CPU's.
    """
    types: dict[str, Any] = {}
    for name in MAP_LAYOUTS:
        table = bpf[name]
        types[f"{name} key"] = table.Key
        types[f"{name} value"] = getattr(table, "sLeaf", table.Leaf)
    return types


def check_layouts(compiled: Mapping[str, Any], mirrors: Mapping[str, Any] = MIRRORS) -> None:
    """Raise LayoutError unless every compiled type has its mirror's size and, for a struct, the
    same field names in the same order at the same offsets with the same sizes (nested structs too).

    `compiled` maps names of MIRRORS (e.g. "lb_conntrack value", "struct lb_event") to the ctypes
    types BCC generated from the compiled C (`map_types`, or a check program's map types); names it
    lacks are not checked.
    """
    problems: list[str] = []
    for what, mirror in mirrors.items():
        if what in compiled:
            c_name = getattr(compiled[what], "__name__", "?")
            problems += _compare(f"{what} (C {c_name}, Python {mirror.__name__})", compiled[what], mirror, "")
    if problems:
        raise LayoutError("bpf/lb.h and lbtui/dataplane/structs.py disagree:\n  " + "\n  ".join(problems))


def _fields(t: Any) -> dict[str, tuple[int, int, Any]]:
    """name -> (offset, size, type) of a struct's fields in declaration order; {} for other types.

    Fields named __pad_* (__pad_1, __pad_end) are BCC's names for gaps the compiler left: not C fields.
    """
    if not (isinstance(t, type) and issubclass(t, (ctypes.Structure, ctypes.Union))):
        return {}
    out = {}
    for field in t._fields_:
        name, ftype = field[0], field[1]
        if not name.startswith("__pad_"):
            out[name] = (getattr(t, name).offset, ctypes.sizeof(ftype), ftype)
    return out


def _compare(what: str, c_type: Any, py_type: Any, path: str) -> list[str]:
    c_size, py_size = ctypes.sizeof(c_type), ctypes.sizeof(py_type)
    if c_size != py_size:
        return [f"{what}: {c_size} bytes in C, {py_size} in Python"]  # fields of equal size recurse
    c_fields, py_fields = _fields(c_type), _fields(py_type)
    if not c_fields or not py_fields:
        return []  # a scalar or array on one side (e.g. bpf_spin_lock mirrored as a u32): the size is all
    problems = []
    for name, (c_off, c_len, c_ft) in c_fields.items():
        if name not in py_fields:
            problems.append(f"{what}: field {path}{name} (C offset {c_off}) is missing in Python")
            continue
        py_off, py_len, py_ft = py_fields[name]
        if (c_off, c_len) != (py_off, py_len):
            problems.append(
                f"{what}: field {path}{name} is at offset {c_off} ({c_len} bytes) in C, "
                f"at offset {py_off} ({py_len} bytes) in Python"
            )
        else:
            problems += _compare(what, c_ft, py_ft, f"{path}{name}.")
    for name, (py_off, _, _) in py_fields.items():
        if name not in c_fields:
            problems.append(f"{what}: field {path}{name} (Python offset {py_off}) is not in C")
    if not problems and list(c_fields) != list(py_fields):
        problems.append(
            f"{what}: fields {path}* in C are in the order {list(c_fields)}, in Python {list(py_fields)}"
        )
    return problems


# ---- wire values: addresses and ports are kept in network byte order in the maps ----------------


def ip_to_be32(ip: str) -> int:
    """The u32 whose in-memory bytes are the address's wire bytes (what the C code compares)."""
    return int.from_bytes(socket.inet_aton(ip), "little")


def be32_to_ip(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4, "little"))


def ip6_to_words(ip: str) -> tuple[int, int, int, int]:
    """struct lb_addr6's four u32 words (each holding four wire bytes in memory order)."""
    raw = socket.inet_pton(socket.AF_INET6, ip)
    return tuple(int.from_bytes(raw[i : i + 4], "little") for i in range(0, 16, 4))  # type: ignore[return-value]


def words_to_ip6(words: Any) -> str:
    return socket.inet_ntop(socket.AF_INET6, b"".join(int(w).to_bytes(4, "little") for w in words))


def port_to_be16(port: int) -> int:
    return socket.htons(port)


def be16_to_port(value: int) -> int:
    return socket.ntohs(value)


def mac_to_bytes(mac: str) -> bytes:
    """An Ethernet address as written ("02:00:5e:00:53:01") -> its 6 wire bytes."""
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"not an Ethernet address: {mac!r}")
    return raw
