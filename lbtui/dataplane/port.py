# SPDX-License-Identifier: Apache-2.0
"""What the engine needs from the kernel side: the `Dataplane` protocol and the values it speaks.

Two implementations: `lbtui.dataplane.kernel.KernelDataplane` (BCC: the BPF programs and their
maps) and `lbtui.dataplane.memory.MemoryDataplane` (plain Python state with the same semantics, for
tests of the engine and the console). Nothing here imports bcc or pyroute2.

Addresses are strings, ports and ids ints; the two big maps (selection slots, conntrack) go in and
out as numpy arrays so a million entries never become a million Python objects. The conntrack
arrays have the record layout of bpf/lb.h (`records.CT_KEY_DTYPE`, `records.CT_ENTRY_DTYPE`).
Conntrack has two tables per address family (docs/datapath.md#conntrack): ESTABLISHED (never evicts,
read a slice at a time) and TRANSIENT (embryonic and closing flows, an LRU, small enough to read
whole); ESTABLISHED6 and TRANSIENT6 are the IPv6 twins, whose arrays have the lb_ct6_* layouts
(`records.CT6_KEY_DTYPE`, `records.CT6_ENTRY_DTYPE`). Reap calls take either family's keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from lbtui.model import Counters, NextHopWatchCounts

ESTABLISHED = "established"
TRANSIENT = "transient"
ESTABLISHED6 = "established6"  # the IPv6 twins (lb_ct6_*: 16-byte addresses, records.CT6_*_DTYPE)
TRANSIENT6 = "transient6"
CT_TABLES_OF = {4: (ESTABLISHED, TRANSIENT), 6: (ESTABLISHED6, TRANSIENT6)}  # family -> its tables


class DataplaneError(Exception):
    """The kernel refused something (compile, load, attach): exit code 3 territory."""


# Memory per conntrack entry (two per flow), for the host check of settings.max_connections
# (lbtui/hostcheck.py), in both conntrack tables. The kernel preallocates each whole hash: key
# (16 bytes), value (80) and its element header and bucket (~64). The engine's sweep holds a read
# buffer of a whole map and numpy copies of it (~3 x 96). Rounded up: the check must not pass a size
# that then fails.
CT_KERNEL_BYTES_PER_ENTRY = 160
CT_USER_BYTES_PER_ENTRY = 300
# The IPv6 twins (lb_ct6_*) have the same number of entries as the IPv4 tables (each family has its
# own max_connections budget: docs/datapath.md#ipv6); their key is 40 bytes and their value 128.
CT6_KERNEL_BYTES_PER_ENTRY = 240
CT6_USER_BYTES_PER_ENTRY = 420


@dataclass(frozen=True)
class DataplaneSpec:
    """Compile-time sizes of the maps (every size is configurable: docs/architecture.md#state)."""

    table_size: int = 65537
    conntrack_entries: int = 524288  # established flows, two entries each
    transient_entries: int = 131072  # embryonic and closing flows, two entries each
    conntrack6_entries: int = 131072  # the IPv6 tables (lb_ct6_*), sized apart: their entries are larger
    transient6_entries: int = 32768
    max_backends: int = 4096
    max_groups: int = 64
    max_services: int = 64
    max_routes: int = 1024
    ringbuf_pages: int = 1024
    pin_dir: str | None = None  # bpffs directory for this instance's maps and programs
    fast_path: bool = False  # DNATed packets redirected from XDP to the backend's interface (lb_fastpath.h)

    def memory_bytes(self) -> int:
        """About what the maps (kernel) and the engine's sweep buffers (user space) take: the conntrack
        tables of both families and the selection tables; the rest is a few MiB."""
        per_entry = CT_KERNEL_BYTES_PER_ENTRY + CT_USER_BYTES_PER_ENTRY
        per_entry6 = CT6_KERNEL_BYTES_PER_ENTRY + CT6_USER_BYTES_PER_ENTRY
        entries = self.conntrack_entries + self.transient_entries
        entries6 = self.conntrack6_entries + self.transient6_entries
        selection = 4 * self.max_groups * self.table_size
        return entries * per_entry + entries6 * per_entry6 + selection + (16 << 20)

    def cflags(self) -> list[str]:
        pin = [f'-DLB_PIN_DIR="{self.pin_dir}"'] if self.pin_dir else []
        return [
            *pin,
            f"-DLB_TABLE_SIZE={self.table_size}",
            f"-DLB_CT_SIZE={self.conntrack_entries}",
            f"-DLB_CT_TRANSIENT_SIZE={self.transient_entries}",
            f"-DLB_CT6_SIZE={self.conntrack6_entries}",
            f"-DLB_CT6_TRANSIENT_SIZE={self.transient6_entries}",
            f"-DLB_MAX_BACKENDS={self.max_backends}",
            f"-DLB_MAX_GROUPS={self.max_groups}",
            f"-DLB_MAX_SERVICES={self.max_services}",
            f"-DLB_MAX_ROUTES={self.max_routes}",
            f"-DLB_RINGBUF_PAGES={self.ringbuf_pages}",
            f"-DLB_FAST_PATH={int(self.fast_path)}",
        ]


@dataclass(frozen=True)
class RateLimits:
    """New connections per second (0 = no limit) and bucket sizes of one service."""

    src_rate: int = 0
    src_burst: int = 0
    be_rate: int = 0
    be_burst: int = 0
    src_prefix6: int = 64  # IPv6 clients: one per-source bucket per prefix of this length


@dataclass(frozen=True)
class ServiceEntry:
    """What the data path knows about one VIP:port/protocol (struct lb_service)."""

    vip: str
    port: int
    protocol: str  # "tcp" | "udp"
    service_id: int
    default_group: int
    algorithm: str  # a key of structs.ALGORITHM_CODES
    events_closed: bool = False  # ring-buffer events when a flow closes
    events_new: bool = False  # ... and when one opens
    limits: RateLimits = RateLimits()
    ipip_source: str | None = None  # DSR over IPIP from this IPv4 address of the host; None: NAT


class PinnedService(NamedTuple):
    vip: str
    port: int
    protocol: str
    service_id: int
    default_group: int


class PinnedRoute(NamedTuple):
    service_id: int
    cidr: str
    group: int


class PinnedBackend(NamedTuple):
    ip: str
    port: int
    active: bool


@dataclass(frozen=True)
class FlowKey:
    saddr: str
    daddr: str
    sport: int
    dport: int
    protocol: str


@dataclass(frozen=True)
class FlowEntry:
    """One conntrack entry (forward or reverse direction), decoded."""

    key: FlowKey
    direction: int  # structs.DIR_*
    client: tuple[str, int]
    vip: tuple[str, int]
    backend: tuple[str, int]
    protocol: str
    backend_id: int
    service_id: int
    flags: int
    created_ns: int
    last_seen_ns: int
    synack_ns: int
    packets: int
    bytes: int


@dataclass(frozen=True)
class RawFlowEvent:
    """A ring-buffer event, decoded but not yet tied to proxy names."""

    type: int  # structs.EV_NEW | structs.EV_CLOSED
    ts_ns: int
    created_ns: int
    synack_ns: int
    client: tuple[str, int]
    vip: tuple[str, int]
    backend: tuple[str, int]
    protocol: str
    backend_id: int
    service_id: int
    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int
    reason: str | None


@dataclass(frozen=True)
class BackendCounts:
    """A backend's data-path counters and its live flows: established (the client completed the
    handshake, or the backend answered a UDP flow) and not ended since (closed, expired, cut)."""

    counters: Counters
    live_flows: int


@dataclass(frozen=True)
class LatencyCounts:
    """Bucket counts (structs.HIST_BOUNDS_MS) and sums of one backend's latency histograms."""

    handshake: tuple[int, ...]
    handshake_sum_us: int
    duration: tuple[int, ...]
    duration_sum_us: int


EventCallback = Callable[[list[RawFlowEvent]], None]


class Dataplane(Protocol):
    """The kernel side as the engine uses it. Map calls may come from the engine's loop and from
    its sweep worker thread (conntrack_arrays, reap_conntrack, sweep_rate_buckets)."""

    @property
    def spec(self) -> DataplaneSpec: ...

    # ---- life cycle -----------------------------------------------------------------------------

    def load(self) -> None:
        """Load the programs and create (or adopt) the maps; nothing is attached yet."""

    @property
    def adopted(self) -> bool:
        """True if the maps were taken over from an earlier run of this instance (pinned state)."""

    @property
    def interfaces(self) -> tuple[str, ...]: ...

    def set_interfaces(self, wanted: Sequence[str]) -> None:
        """Attach to interfaces that are new, detach from those no longer wanted."""

    def ipv4_address(self, ifname: str) -> str | None:
        """The interface's first IPv4 address (the default outer source of DSR), None without one."""

    def start_event_reader(self, callback: EventCallback) -> None:
        """Hand flow events over in batches; callback(batch) runs on the reader's own thread."""

    def close(self, keep: bool = False) -> None:
        """Detach everything, unpin and release (keep=True: leave attached and pinned)."""

    # ---- services, routes, backends, selection tables -------------------------------------------

    def set_service(self, entry: ServiceEntry) -> None: ...

    def delete_service(self, vip: str, port: int, protocol: str) -> None: ...

    def set_route(self, service_id: int, cidr: str, group: int) -> None: ...

    def delete_route(self, service_id: int, cidr: str) -> None: ...

    def set_backend(
        self, backend_id: int, ip: str, port: int, active: bool, accepts_new: bool = True
    ) -> None:
        """accepts_new=False: its selection weight is 0 (down, drained, circuit open); a SYN on the
        tuple of one of its flows then picks a backend again."""

    def clear_backend_stats(self, backend_id: int) -> None:
        """Zero a backend id's counters and histograms (a new backend must not inherit them)."""

    def write_slots(self, group: int, slots: np.ndarray, backend_ids: np.ndarray) -> None:
        """Set slot -> backend id of one group's selection table, for arrays of slots and ids."""

    # ---- reading pinned state (adoption) --------------------------------------------------------

    def read_services(self) -> list[PinnedService]: ...

    def read_routes(self) -> list[PinnedRoute]: ...

    def read_backends(self) -> dict[int, PinnedBackend]:
        """backend id -> address and active flag, for every id that was ever written."""

    def read_table(self, group: int) -> list[int]: ...

    # ---- counters and histograms ----------------------------------------------------------------

    def backend_counters(self, backend_ids: Iterable[int]) -> dict[int, BackendCounts]:
        """backend id -> counters summed over CPUs, and live flows."""

    def service_counters(self, service_id: int) -> tuple[Counters, dict[str, int]]:
        """(counters, drops per structs.DROP_REASONS) of one service."""

    def latency(self, backend_ids: Iterable[int]) -> dict[int, LatencyCounts]: ...

    def global_counters(self) -> dict[str, int]:
        """Every counter of structs.GLOBAL_COUNTERS (not per service or backend), summed over CPUs."""

    def next_hop_watch(self) -> NextHopWatchCounts:
        """What the fast path's next-hop watch did since it started (zeros while there is none)."""

    # ---- conntrack and rate buckets -------------------------------------------------------------

    def conntrack_arrays(self, family: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """Every entry of one family's two tables (established first) as fresh record arrays: a whole
        read, for tools, tests and rare commands (a drain cut)."""

    def conntrack_count(self) -> int:
        """Entries in all four tables (both families)."""

    def conntrack_chunks(self, table: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every entry of one table (a name of CT_TABLES_OF), a bounded chunk at a time; each
        chunk's arrays may be reused for the next."""

    def conntrack_slice(
        self, cursor: int, limit: int, table: str = ESTABLISHED
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """About `limit` entries of an established table (ESTABLISHED or ESTABLISHED6) from `cursor`
        (0: its start), and the cursor to go on from (0 once a pass reached the end); the arrays may
        be reused."""

    def reap_conntrack(self, keys: np.ndarray, created_ns: np.ndarray) -> int:
        """Remove the flows of these keys (both entries each; CtKey or Ct6Key records), each only while
        it is still the flow created at created_ns; how many flows were removed."""

    def expire_conntrack(
        self, keys: np.ndarray, created_ns: np.ndarray, idle_before_ns: np.ndarray
    ) -> np.ndarray:
        """Remove the flows of these keys still created at created_ns and idle since idle_before_ns
        (0: unconditionally); returns records.REAP_REC_DTYPE rows (REAP6_REC_DTYPE for Ct6Key keys):
        created_ns 0 for each flow removed, with its last packet time in idle_before_ns and the other
        entry's packets and bytes."""

    def sweep_rate_buckets(self, idle_ns: int, now_ns: int) -> int:
        """Forget per-source buckets idle for idle_ns; how many."""
