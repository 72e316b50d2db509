# SPDX-License-Identifier: Apache-2.0
"""The real data path: the BPF programs loaded by BCC, their maps, attachments and event reader.

`KernelDataplane` implements `lbtui.dataplane.port.Dataplane` on top of loader.py (compile, load,
pin, attach) and maps.py (typed map access). It is the only dataplane that imports bcc and pyroute2.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from lbtui.dataplane.bpffs import PinDirRefused, remove_pins
from lbtui.dataplane.fastpath import FastPathInterfaces, FastPathSet, ReplyPrograms, interface_name
from lbtui.dataplane.leftover_replies import LeftoverReplies, map_ids_of
from lbtui.dataplane.loader import Attachment, Loaded
from lbtui.dataplane.maps import Maps
from lbtui.dataplane.nexthop_watch import NextHopWatch
from lbtui.dataplane.port import (
    ESTABLISHED,
    BackendCounts,
    DataplaneError,
    DataplaneSpec,
    EventCallback,
    LatencyCounts,
    PinnedBackend,
    PinnedRoute,
    PinnedService,
    ServiceEntry,
)
from lbtui.dataplane.xdp_features import XdpFeaturesWatch
from lbtui.model import Counters, NextHopWatchCounts

log = logging.getLogger(__name__)

EVENT_DRAIN_INTERVAL_S = 0.05  # between two drains while events come
EVENT_DRAIN_IDLE_S = 0.2  # ... and at most this once none came (the ring holds ~40,000 events)


def next_drain_interval(previous: float, found: int) -> float:
    """The reader's next wait: short while events come, doubling up to EVENT_DRAIN_IDLE_S while none
    do (an idle engine wakes 5 times a second, not 20; the first events after a quiet spell wait
    0.2 s at most)."""
    if found:
        return EVENT_DRAIN_INTERVAL_S
    return min(EVENT_DRAIN_IDLE_S, 2 * previous)


class KernelDataplane:
    def __init__(self, spec: DataplaneSpec, xdp_mode: str = "auto"):
        self._spec = spec
        self.xdp_mode = xdp_mode
        self._loaded: Loaded | None = None
        self._maps: Maps | None = None
        self._attachments: dict[str, Attachment] = {}
        self._reader: threading.Thread | None = None
        self._reader_stop = threading.Event()
        self._pins_ours = False  # only once load has taken the pin directory does a close unpin it
        self._fast_path = FastPathInterfaces()
        self._replies: ReplyPrograms | None = None
        self._next_hops: NextHopWatch | None = None
        self._xdp_features: XdpFeaturesWatch | None = None  # while any attachment runs native XDP
        self._fp_lock = threading.Lock()  # the engine and the xdp-features watch both write lb_fp_ifaces
        self._fp_written: FastPathSet | None = None
        self._leftover_replies: LeftoverReplies | None = None  # an earlier run's, until set_interfaces

    @property
    def spec(self) -> DataplaneSpec:
        return self._spec

    def load(self) -> None:
        refused = False
        try:
            self._loaded = Loaded(self._spec)
        except PinDirRefused:  # another's directory: left exactly as it is
            refused = True
            raise
        finally:
            self._pins_ours = not refused
        self._maps = Maps(self._loaded)
        try:
            ours = map_ids_of((self._loaded.xdp_fn.fd, self._loaded.tc_fn.fd))
            self._leftover_replies = LeftoverReplies.find(ours)
        except Exception:  # a failed look must not stop the start
            log.exception("fast path: looking for reply programs an earlier run left attached")

    @property
    def maps(self) -> Maps:
        if self._maps is None:
            raise DataplaneError("the data path is not loaded")
        return self._maps

    @property
    def loaded(self) -> Loaded:
        if self._loaded is None:
            raise DataplaneError("the data path is not loaded")
        return self._loaded

    @property
    def adopted(self) -> bool:
        return self._loaded is not None and self._loaded.adopted

    @property
    def interfaces(self) -> tuple[str, ...]:
        return tuple(self._attachments)

    def set_interfaces(self, wanted: Sequence[str]) -> None:
        for ifname in [i for i in self._attachments if i not in wanted]:
            self._attachments.pop(ifname).detach()
        for ifname in wanted:
            if ifname not in self._attachments:
                att = Attachment(self.loaded, [ifname], self.xdp_mode)
                att.attach()
                self._attachments[ifname] = att
        self._update_fast_path()
        self._remove_leftover_replies()

    def _remove_leftover_replies(self) -> None:
        """After this run attached its own reply programs (in place of the earlier run's where it
        wants one), remove the rest an earlier run left (leftover_replies.py)."""
        leftover, self._leftover_replies = self._leftover_replies, None
        if leftover is None or not leftover.ours:
            return
        leftover.remove("not backend-facing now" if self._spec.fast_path else 'settings.fast_path is "off"')

    def _update_fast_path(self) -> None:
        if not self._spec.fast_path:
            return
        native = self._write_fast_path_interfaces()
        if native and self._xdp_features is None:
            self._xdp_features = XdpFeaturesWatch.start(self._rewrite_fast_path)
        if self._next_hops is None:
            self._next_hops = NextHopWatch(self.maps.forget_next_hops, links_changed=self._rewrite_fast_path)
        if self._replies is None:
            adopt = self._leftover_replies.adoptable() if self._leftover_replies else {}
            self._replies = ReplyPrograms(self.loaded.tc_reply_fn, adopt)
        backend_side: set[str] = set()
        if self._attachments:
            names = (interface_name(i) for i in self._fast_path.backend_side())
            backend_side = {n for n in names if n is not None and n not in self._attachments}
        self._replies.set(backend_side)

    def _write_fast_path_interfaces(self) -> bool:
        """Write lb_fp_ifaces (FastPathInterfaces.wanted) if it changed; whether any attachment is
        native. In native mode the interfaces left out (no ndo_xdp_xmit) are logged once per change."""
        with self._fp_lock:
            attachments = dict(self._attachments)  # the watch's thread runs this too
            native = any(a.native for a in attachments.values())
            wanted = self._fast_path.wanted(attachments, native)
            if wanted == self._fp_written:
                return native
            self.maps.set_fast_path_interfaces(wanted.macs, wanted.xdp_out)
            self._fp_written = wanted
            if native:
                left_out = set(wanted.macs) - wanted.xdp_out
                names = sorted(str(interface_name(i) or i) for i in left_out)
                if names:
                    log.warning(
                        "fast path: native XDP cannot redirect into %s (no ndo_xdp_xmit: "
                        "docs/datapath.md#fast-path); packets to them take the kernel's forwarding "
                        "(replies still go fast)",
                        ", ".join(names),
                    )
                else:
                    log.info("fast path: native XDP redirects into every managed interface")
            return native

    def _rewrite_fast_path(self) -> None:
        """lb_fp_ifaces again, on the watches' threads: an interface's xdp-features or MAC changed."""
        if self._maps is not None and self._attachments:
            self._write_fast_path_interfaces()

    def start_event_reader(self, callback: EventCallback) -> None:
        """Poll the ring buffer on a thread of its own; callback(batch) runs on that thread."""
        self.maps.open_events(callback)

        def run() -> None:
            # the programs submit events without waking anyone (BPF_RB_NO_WAKEUP): drain on a timer
            interval = EVENT_DRAIN_INTERVAL_S
            while not self._reader_stop.wait(interval):
                found = 0
                try:
                    found = self.maps.poll_events()
                except Exception:  # never let one bad event stop the reader
                    log.exception("event reader")
                interval = next_drain_interval(interval, found)
            try:
                self.maps.poll_events()  # the last events before a stop
            except Exception:
                log.exception("event reader")

        self._reader = threading.Thread(target=run, name="lbtui-events", daemon=True)
        self._reader.start()

    def close(self, keep: bool = False) -> None:
        """Detach everything, unpin and release; safe on any partial state.

        keep=True (`--keep-dataplane`) leaves the programs attached and the maps pinned, so the load
        balancer goes on with its last tables and a later start adopts them.
        """
        self._reader_stop.set()
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None
        if self._xdp_features is not None:
            self._xdp_features.close()
            self._xdp_features = None
        if self._next_hops is not None:
            self._next_hops.close()
            self._next_hops = None
        if self._replies is not None and not keep:
            self._replies.close()
        self._replies = None
        if not keep:  # a start that ended before attaching
            self._remove_leftover_replies()
        self._leftover_replies = None
        if not keep:
            for ifname in list(self._attachments):
                try:
                    self._attachments.pop(ifname).detach()
                except Exception:
                    log.exception("detaching from %s", ifname)
        self._attachments.clear()
        if self._loaded is not None:
            self._loaded.close()
            self._loaded = None
            self._maps = None
        if not keep and self._pins_ours:
            remove_pins(self._spec.pin_dir)

    # ---- maps (see port.Dataplane) --------------------------------------------------------------

    def ipv4_address(self, ifname: str) -> str | None:
        from lbtui.dataplane import hostnet

        found = hostnet.interface_addresses(ifname, 4)
        return found[0] if found else None

    def set_service(self, entry: ServiceEntry) -> None:
        self.maps.set_service(entry)

    def delete_service(self, vip: str, port: int, protocol: str) -> None:
        self.maps.delete_service(vip, port, protocol)

    def set_route(self, service_id: int, cidr: str, group: int) -> None:
        self.maps.set_route(service_id, cidr, group)

    def delete_route(self, service_id: int, cidr: str) -> None:
        self.maps.delete_route(service_id, cidr)

    def set_backend(
        self, backend_id: int, ip: str, port: int, active: bool, accepts_new: bool = True
    ) -> None:
        self.maps.set_backend(backend_id, ip, port, active, accepts_new)
        if self._spec.fast_path and self._fast_path.note_backend(ip):
            self._update_fast_path()

    def clear_backend_stats(self, backend_id: int) -> None:
        self.maps.clear_backend_stats(backend_id)

    def write_slots(self, group: int, slots: np.ndarray, backend_ids: np.ndarray) -> None:
        self.maps.write_slots(group, slots, backend_ids)

    def read_services(self) -> list[PinnedService]:
        return self.maps.read_services()

    def read_routes(self) -> list[PinnedRoute]:
        return self.maps.read_routes()

    def read_backends(self) -> dict[int, PinnedBackend]:
        return self.maps.read_backends()

    def read_table(self, group: int) -> list[int]:
        return self.maps.read_table(group)

    def backend_counters(self, backend_ids: Iterable[int]) -> dict[int, BackendCounts]:
        return self.maps.backend_counters(backend_ids)

    def service_counters(self, service_id: int) -> tuple[Counters, dict[str, int]]:
        return self.maps.service_counters(service_id)

    def latency(self, backend_ids: Iterable[int]) -> dict[int, LatencyCounts]:
        return self.maps.latency(backend_ids)

    def global_counters(self) -> dict[str, int]:
        return self.maps.global_counters()

    def next_hop_watch(self) -> NextHopWatchCounts:
        watch = self._next_hops
        return watch.counts if watch is not None else NextHopWatchCounts()

    def conntrack_arrays(self, family: int = 4) -> tuple[np.ndarray, np.ndarray]:
        return self.maps.conntrack_arrays(family)

    def conntrack_count(self) -> int:
        return self.maps.conntrack_count()

    def conntrack_chunks(self, table: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.maps.conntrack_chunks(table)

    def conntrack_slice(
        self, cursor: int, limit: int, table: str = ESTABLISHED
    ) -> tuple[np.ndarray, np.ndarray, int]:
        return self.maps.conntrack_slice(cursor, limit, table)

    def reap_conntrack(self, keys: np.ndarray, created_ns: np.ndarray) -> int:
        return self.maps.reap_conntrack(keys, created_ns)

    def expire_conntrack(
        self, keys: np.ndarray, created_ns: np.ndarray, idle_before_ns: np.ndarray
    ) -> np.ndarray:
        return self.maps.expire_conntrack(keys, created_ns, idle_before_ns)

    def sweep_rate_buckets(self, idle_ns: int, now_ns: int) -> int:
        return self.maps.sweep_rate_buckets(idle_ns, now_ns)
