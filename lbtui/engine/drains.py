# SPDX-License-Identifier: Apache-2.0
"""Drains: a backend takes no new connections while its flows finish, up to a timeout.

A drain is a runtime override (DRAINING, a deadline, whether to cut what is left). Its flow counts
are the data path's live counts, read when needed. After each conntrack sweep `check` ends drains
whose flows are gone (DRAINED) or whose deadline has passed;
with `cut`, the flows still open are removed from conntrack at the deadline (their next packets
are no longer forwarded, so a TCP client gets a reset from the load-balancer host).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from lbtui import model
from lbtui.dataplane import structs
from lbtui.dataplane.port import Dataplane
from lbtui.engine.clock import Clock
from lbtui.engine.events import EventLog
from lbtui.engine.group import Member
from lbtui.engine.overrides import DrainOverride, Intent
from lbtui.engine.topology import Topology


class Drains:
    def __init__(
        self,
        intent: Intent,
        topology: Topology,
        events: EventLog,
        dp: Dataplane,
        clock: Clock,
        default_timeout_s: Callable[[], float],
    ):
        self._intent = intent
        self._topology = topology
        self._events = events
        self._dp = dp
        self._clock = clock
        self._default_timeout_s = default_timeout_s  # settings.drain_timeout_s of the running config

    def drain(self, cmd: model.Drain) -> model.CommandResult:
        """No new connections for the backend (in every group of the proxy that has it)."""
        proxy, members = self._topology.find(cmd.proxy, cmd.backend)
        if (cmd.proxy, cmd.backend) in self._intent.overrides.maintenance:
            return model.CommandResult(
                False, f"{cmd.backend} is in maintenance (it takes no new connections); `ready` ends it"
            )
        timeout = self._default_timeout_s() if cmd.timeout_s is None else cmd.timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            return model.CommandResult(
                False, f"drain timeout must be a number of seconds >= 0, got {timeout!r}"
            )
        drain = DrainOverride(model.DrainState.DRAINING, self._clock.monotonic() + timeout, bool(cmd.cut))
        self._intent.change(self._intent.overrides.with_drain((cmd.proxy, cmd.backend), drain), "drain")
        msg = (
            f"{cmd.backend} draining (timeout {timeout:g} s): no new connections, "
            f"{self._live_flows(members)} flows continue"
        )
        if all(len(proxy.groups[m.group].members) == 1 for m in members):
            msg += "; it is the only backend of its group, so new connections are refused"
        self._events.emit("drain", msg, proxy=cmd.proxy, backend=cmd.backend)
        return model.CommandResult(True, msg)

    def undrain(self, cmd: model.Undrain) -> model.CommandResult:
        """Back in rotation (whatever its drain state: an active backend stays active)."""
        self._topology.find(cmd.proxy, cmd.backend)
        if (cmd.proxy, cmd.backend) in self._intent.overrides.maintenance:
            return model.CommandResult(
                False, f"{cmd.backend} is in maintenance, not draining; `ready` ends it"
            )
        self._intent.change(self._intent.overrides.with_drain((cmd.proxy, cmd.backend), None), "undrain")
        self._events.emit("drain", f"{cmd.backend} back in rotation", proxy=cmd.proxy, backend=cmd.backend)
        return model.CommandResult(True, f"{cmd.backend} back in rotation")

    def check(self) -> None:
        """After a sweep: drains whose flows are gone, or whose deadline has passed, are over."""
        now = self._clock.monotonic()
        for ref, drain in list(self._intent.overrides.drains.items()):
            if drain.state != model.DrainState.DRAINING:
                continue
            proxy, address = ref
            try:
                _, members = self._topology.find(proxy, address)
            except LookupError:
                continue
            active = self._live_flows(members)
            if active == 0:
                self._events.emit("drain", f"{address} drained: 0 flows left", proxy=proxy, backend=address)
            elif drain.deadline is not None and now >= drain.deadline:
                left = f"{active} flows still open"
                if drain.cut:
                    cut = sum(self.cut_flows(m.id) for m in members)
                    left = f"{cut} flows cut (conntrack entries removed)"
                self._events.emit(
                    "drain",
                    f"{address} drain timeout: {left}",
                    level=model.Level.WARNING,
                    proxy=proxy,
                    backend=address,
                )
            else:
                continue
            drained = replace(drain, state=model.DrainState.DRAINED)
            self._intent.change(self._intent.overrides.with_drain(ref, drained), "drain")

    def _live_flows(self, members: Sequence[Member]) -> int:
        """The members' live flows as the data path counts them right now (not as of the last
        tick: a drain reports flows opened a moment ago)."""
        counts = self._dp.backend_counters([m.id for m in members])
        for m in members:
            if m.id in counts:
                m.active_flows = counts[m.id].live_flows
        return sum(m.active_flows for m in members)

    def cut_flows(self, backend_id: int) -> int:
        """Remove every conntrack entry of a backend (in both families' tables); how many flows that
        was."""
        flows = 0
        for family in (4, 6):
            keys, vals = self._dp.conntrack_arrays(family)
            mine = vals["backend_id"] == backend_id
            flows += int((mine & (vals["dir"] == structs.DIR_FORWARD)).sum())
            if mine.any():
                self._dp.reap_conntrack(keys[mine].copy(), vals["created_ns"][mine].copy())
        return flows
