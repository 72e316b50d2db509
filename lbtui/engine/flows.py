# SPDX-License-Identifier: Apache-2.0
"""Flow events: connections opened and closed, from the ring buffer and from the idle sweep.

The event reader runs on a thread of its own and hands batches to the engine's loop without ever
blocking; batches waiting for the loop are bounded (MAX_PENDING_EVENTS): past that, events are
dropped and counted instead of queueing without limit. On the loop each event becomes a
model.FlowEvent (times in unix seconds, the proxy named) for the observers (the access log).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from lbtui import model
from lbtui.dataplane import structs
from lbtui.dataplane.port import FlowEntry, RawFlowEvent
from lbtui.engine.clock import Clock

log = logging.getLogger(__name__)

MAX_PENDING_EVENTS = 65_536  # flow events waiting for the loop; beyond, they are dropped and counted

ProxyName = Callable[[int], str]  # service id -> proxy name


class FlowEvents:
    def __init__(self, clock: Clock, proxy_name: ProxyName):
        self._clock = clock
        self._proxy_name = proxy_name
        self.observers: list[Callable[[model.FlowEvent], None]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.dropped = 0
        self._pending = 0  # events handed to the loop and not yet processed
        self._lock = threading.Lock()

    def on_raw_events(self, batch: list[RawFlowEvent]) -> None:
        """The event reader's callback (its own thread)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        with self._lock:
            room = MAX_PENDING_EVENTS - self._pending
            if room < len(batch):
                self.dropped += len(batch) - max(room, 0)
                batch = batch[: max(room, 0)]
            if not batch:
                return
            self._pending += len(batch)
        try:
            loop.call_soon_threadsafe(self._handle, batch)
        except RuntimeError:  # loop closed while stopping
            pass

    def _handle(self, batch: list[RawFlowEvent]) -> None:
        with self._lock:
            self._pending -= len(batch)
        for raw in batch:
            self.notify(self.from_raw(raw))

    def notify(self, ev: model.FlowEvent) -> None:
        for observer in self.observers:
            try:
                observer(ev)
            except Exception:
                log.exception("flow observer")

    def _mono_to_unix(self) -> float:
        return self._clock.time() - self._clock.monotonic()

    def from_raw(self, raw: RawFlowEvent) -> model.FlowEvent:
        closed = raw.type != structs.EV_NEW
        return model.FlowEvent(
            kind="closed" if closed else "new",
            ts=raw.ts_ns / 1e9 + self._mono_to_unix(),
            proxy=self._proxy_name(raw.service_id),
            protocol=raw.protocol,
            client_ip=raw.client[0],
            client_port=raw.client[1],
            vip_ip=raw.vip[0],
            vip_port=raw.vip[1],
            backend_ip=raw.backend[0],
            backend_port=raw.backend[1],
            packets_in=raw.packets_in,
            bytes_in=raw.bytes_in,
            packets_out=raw.packets_out,
            bytes_out=raw.bytes_out,
            duration_s=(raw.ts_ns - raw.created_ns) / 1e9 if closed else None,
            handshake_s=(raw.synack_ns - raw.created_ns) / 1e9 if raw.synack_ns else None,
            close_reason=raw.reason,
        )

    def idle_closed(self, f: FlowEntry, packets_out: int, bytes_out: int, last_ns: int) -> model.FlowEvent:
        """The close event of a flow the idle sweep removed (the data path saw no FIN or RST): its
        forward entry, the reverse entry's counters and the flow's last packet time."""
        return model.FlowEvent(
            kind="closed",
            ts=self._clock.time(),
            proxy=self._proxy_name(f.service_id),
            protocol=f.protocol,
            client_ip=f.client[0],
            client_port=f.client[1],
            vip_ip=f.vip[0],
            vip_port=f.vip[1],
            backend_ip=f.backend[0],
            backend_port=f.backend[1],
            packets_in=f.packets,
            bytes_in=f.bytes,
            packets_out=packets_out,
            bytes_out=bytes_out,
            duration_s=max(0.0, (max(last_ns, f.last_seen_ns) - f.created_ns) / 1e9),
            handshake_s=(f.synack_ns - f.created_ns) / 1e9 if f.synack_ns else None,
            close_reason="idle",
        )
