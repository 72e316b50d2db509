# SPDX-License-Identifier: Apache-2.0
"""The kernel side of lbtui: compile/load/attach the BPF programs and typed access to their maps.

This package is the only importer of bcc and pyroute2 and the only place that knows map layouts.
`Dataplane` bundles what the engine needs: the loaded programs, the maps, the attachments and the
event ring-buffer reader thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from lbtui.dataplane.loader import (
    Attachment,
    DataplaneError,
    DataplaneSpec,
    Loaded,
    check_privileges,
    remove_pins,
)
from lbtui.dataplane.maps import FlowEntry, Maps, RawFlowEvent

__all__ = ["Dataplane", "DataplaneError", "DataplaneSpec", "FlowEntry", "RawFlowEvent", "check_privileges"]

log = logging.getLogger(__name__)

EVENT_DRAIN_INTERVAL_S = 0.05


class Dataplane:
    def __init__(self, spec: DataplaneSpec, xdp_mode: str = "auto"):
        self.spec = spec
        self.xdp_mode = xdp_mode
        self._loaded: Loaded | None = None
        self._maps: Maps | None = None
        self._attachments: dict[str, Attachment] = {}
        self._reader: threading.Thread | None = None
        self._reader_stop = threading.Event()

    def load(self) -> None:
        self._loaded = Loaded(self.spec)
        self._maps = Maps(self._loaded)

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
        """True if the maps were taken over from an earlier run of this instance (pinned state)."""
        return self._loaded is not None and self._loaded.adopted

    @property
    def interfaces(self) -> tuple[str, ...]:
        return tuple(self._attachments)

    def set_interfaces(self, wanted: Sequence[str]) -> None:
        """Attach to interfaces that are new, detach from those no longer wanted."""
        for ifname in [i for i in self._attachments if i not in wanted]:
            self._attachments.pop(ifname).detach()
        for ifname in wanted:
            if ifname not in self._attachments:
                att = Attachment(self.loaded, [ifname], self.xdp_mode)
                att.attach()
                self._attachments[ifname] = att

    def start_event_reader(self, callback: Callable[[list[RawFlowEvent]], None]) -> None:
        """Poll the ring buffer on a thread of its own; callback(batch) runs on that thread."""
        self.maps.open_events(callback)

        def run() -> None:
            # the programs submit events without waking anyone (BPF_RB_NO_WAKEUP): drain on a timer
            while not self._reader_stop.wait(EVENT_DRAIN_INTERVAL_S):
                try:
                    self.maps.poll_events()
                except Exception:  # never let one bad event stop the reader
                    log.exception("event reader")
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
        if not keep:
            remove_pins(self.spec.pin_dir)
