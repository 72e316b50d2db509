# SPDX-License-Identifier: Apache-2.0
"""The one decoder of each data-path record: conntrack entries (numpy rows) and ring-buffer events.

Both dataplanes and the conntrack sweep use these; the numpy dtypes come from the structs.py mirrors
of bpf/lb.h, so the field names are those of the C structs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lbtui.dataplane import structs
from lbtui.dataplane.port import BackendCounts, FlowEntry, FlowKey, RawFlowEvent
from lbtui.model import Counters

CT_KEY_DTYPE = np.dtype(structs.CtKey)
CT_ENTRY_DTYPE = np.dtype(structs.CtEntry)
REAP_REC_DTYPE = np.dtype(structs.ReapRec)


def _proto(value: Any) -> str:
    return structs.PROTO_NAMES.get(int(value), str(value))


def _endpoint(ip: Any, port: Any) -> tuple[str, int]:
    return structs.be32_to_ip(int(ip)), structs.be16_to_port(int(port))


def entry_from_record(key: Any, v: Any) -> FlowEntry:
    """A FlowEntry from one row of the conntrack arrays (a CtKey row and a CtEntry row)."""
    return FlowEntry(
        key=FlowKey(
            structs.be32_to_ip(int(key["saddr"])),
            structs.be32_to_ip(int(key["daddr"])),
            structs.be16_to_port(int(key["sport"])),
            structs.be16_to_port(int(key["dport"])),
            _proto(key["proto"]),
        ),
        direction=int(v["dir"]),
        client=_endpoint(v["client_ip"], v["client_port"]),
        vip=_endpoint(v["vip"], v["vip_port"]),
        backend=_endpoint(v["backend_ip"], v["backend_port"]),
        protocol=_proto(v["proto"]),
        backend_id=int(v["backend_id"]),
        service_id=int(v["service_id"]),
        flags=int(v["flags"]),
        created_ns=int(v["created_ns"]),
        last_seen_ns=int(v["last_seen_ns"]),
        synack_ns=int(v["synack_ns"]),
        packets=int(v["packets"]),
        bytes=int(v["bytes"]),
    )


def flow_entries(keys: np.ndarray, values: np.ndarray) -> list[FlowEntry]:
    """Every row of conntrack arrays, decoded (for tests and tools: the engine stays vectorised)."""
    return [entry_from_record(k, v) for k, v in zip(keys, values, strict=True)]


def decode_event(ev: structs.Event) -> RawFlowEvent:
    """A ring-buffer event (struct lb_event) as the engine reads it."""
    return RawFlowEvent(
        type=ev.type,
        ts_ns=ev.ts_ns,
        created_ns=ev.created_ns,
        synack_ns=ev.synack_ns,
        client=_endpoint(ev.client_ip, ev.client_port),
        vip=_endpoint(ev.vip, ev.vip_port),
        backend=_endpoint(ev.backend_ip, ev.backend_port),
        protocol=_proto(ev.proto),
        backend_id=ev.backend_id,
        service_id=ev.service_id,
        packets_in=ev.packets_in,
        bytes_in=ev.bytes_in,
        packets_out=ev.packets_out,
        bytes_out=ev.bytes_out,
        reason=structs.CLOSE_REASONS.get(ev.reason) if ev.type == structs.EV_CLOSED else None,
    )


def backend_counts(stats: dict[str, int]) -> BackendCounts:
    """A backend's lb_backend_stats (structs.BACKEND_STATS_FIELDS, summed over CPUs) as the engine
    reads them: the counters, and the flows established and not ended (never below 0)."""
    counters = Counters(**{name: stats[name] for name in COUNTER_FIELDS})
    return BackendCounts(counters, max(0, stats["established"] - stats["ended"]))


COUNTER_FIELDS = (
    "packets_in",
    "bytes_in",
    "packets_out",
    "bytes_out",
    "new_flows",
    "handshakes",
    "conn_failures",
)
