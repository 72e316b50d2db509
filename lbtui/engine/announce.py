# SPDX-License-Identifier: Apache-2.0
"""When this host announces each VIP over BGP ([settings.announce], docs/scale-out.md).

A VIP is announced while the engine runs (programs attached), no operator command holds it back
(`announce withdraw`: a runtime override, kept in the state file like the others, so a restart does
not announce it again) and at least one of its proxies has `min_usable_backends` usable backends (for
`announce_delay_s` already); otherwise it is withdrawn. Announcing is a host route in lbtui's own
kernel table, which BIRD learns and exports (lbtui/dataplane/announce.py); the routes are changed
only when a decision changes, and a change the kernel refuses is retried at the next tick.
BIRD's BGP sessions are read over its control socket (lbtui/bird.py), off the loop. `ScaleOut` is
the engine's part: the announcer fed from the topology, the stop that withdraws first and keeps
serving while the routers move the VIP's new flows elsewhere, the snapshot's fingerprints.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from lbtui import model
from lbtui.bird import BirdControl, BirdError
from lbtui.config import AnnounceConfig
from lbtui.dataplane.port import DataplaneError
from lbtui.engine.clock import Clock
from lbtui.engine.events import EventLog
from lbtui.engine.fingerprint import table_fingerprints
from lbtui.engine.group import Member
from lbtui.engine.ids import DEFAULT_GROUP
from lbtui.engine.overrides import Intent
from lbtui.engine.topology import Topology

log = logging.getLogger(__name__)

BIRD_POLL_S = 2.0
BIRD_TIMEOUT_S = 1.0
ACTIONS = ("withdraw", "announce")
K = TypeVar("K")
V = TypeVar("V")


class Routes(Protocol):
    """The routes BIRD exports: VipRoutes (kernel) or MemoryVipRoutes (tests)."""

    def announce(self, vip: str) -> bool: ...

    def withdraw(self, vip: str) -> bool: ...

    def announced(self) -> set[str]: ...


RoutesFactory = Callable[[int, int], Routes]  # (table, route protocol) -> routes


def kernel_routes(table: int, proto: int) -> Routes:
    from lbtui.dataplane.announce import VipRoutes

    return VipRoutes(table, proto=proto)


@dataclass(frozen=True)
class ProxyReadiness:
    """What the announcer needs of one proxy: its VIP and how many of its backends can take flows."""

    name: str
    vip: str
    usable: int
    backends: int


@dataclass
class _Vip:
    announced: bool = False
    reason: str = "not announced yet"
    usable: int = 0
    proxies: tuple[str, ...] = ()
    ready_since: float | None = None  # monotonic time it became eligible (announce_delay_s)
    since: float = 0.0
    error: str | None = None


class Announcer:
    def __init__(
        self, events: EventLog, clock: Clock, intent: Intent, factory: RoutesFactory = kernel_routes
    ) -> None:
        self._events = events
        self._clock = clock
        self._intent = intent  # the operator's holds are runtime overrides (Overrides.withdrawn)
        self._factory = factory
        self._settings = AnnounceConfig()
        self._routes: Routes | None = None
        self._vips: dict[str, _Vip] = {}
        self._bgp: tuple[model.BgpSessionView, ...] = ()
        self._bird_error: str | None = None
        self._stopped = False

    @property
    def enabled(self) -> bool:
        return self._settings.enabled

    @property
    def settings(self) -> AnnounceConfig:
        return self._settings

    def configure(self, settings: AnnounceConfig) -> None:
        """At start and on reload: a new table or protocol (or disabling) withdraws from the old one."""
        old = self._settings
        moved = (settings.table, settings.protocol) != (old.table, old.protocol)
        if self._routes is not None and (moved or not settings.enabled):
            self._withdraw_all("announcement settings changed")
            self._routes = None
        self._settings = settings
        if settings.enabled and self._routes is None:
            self._routes = self._factory(settings.table, settings.protocol)
            try:  # what an earlier run left (withdraw_on_stop = false): ours until decided otherwise
                present = self._routes.announced()
            except DataplaneError as exc:
                present = set()
                self._events.emit(
                    "announce", f"cannot read table {settings.table}: {exc}", level=model.Level.ERROR
                )
            for vip in present:
                self._vips[vip] = _Vip(
                    announced=True, reason="announced by an earlier run", since=self._clock.time()
                )

    def update(self, proxies: Iterable[ProxyReadiness], running: bool) -> None:
        """Decide every VIP again and change the routes whose decision changed (never after `stop`)."""
        if self._routes is None or self._stopped:
            return
        by_vip: dict[str, list[ProxyReadiness]] = {}
        for p in proxies:
            by_vip.setdefault(p.vip, []).append(p)
        now = self._clock.monotonic()
        for vip in sorted(set(self._vips) | set(by_vip)):
            state = self._vips.setdefault(vip, _Vip())
            want, state.reason = self._decide(vip, by_vip.get(vip, []), running, state)
            if want and state.ready_since is None:
                state.ready_since = now
            elif not want:
                state.ready_since = None
            delay = self._settings.announce_delay_s
            if want and state.ready_since is not None and now - state.ready_since < delay:
                want, state.reason = False, f"{state.reason}; announcing after {delay:g} s"
            self._change(vip, state, want)
            if vip not in by_vip and not state.announced and state.error is None:
                del self._vips[vip]  # a VIP the configuration dropped, withdrawn

    def _decide(
        self, vip: str, proxies: list[ProxyReadiness], running: bool, state: _Vip
    ) -> tuple[bool, str]:
        state.proxies = tuple(p.name for p in proxies)
        best = max(proxies, key=lambda p: p.usable, default=None)
        state.usable = best.usable if best else 0
        needed = self._settings.min_usable_backends
        if best is None:
            return False, "no proxy serves it any more"
        if not running:
            return False, "load balancer stopped"
        if any(p.name in self._intent.overrides.withdrawn for p in proxies):
            return False, "withdrawn by the operator"
        if best.usable < needed:
            return False, f"{best.usable} of {best.backends} backends usable (needs {needed})"
        return True, f"{best.name}: {best.usable} of {best.backends} backends usable"

    def _change(self, vip: str, state: _Vip, want: bool) -> None:
        if want == state.announced or self._routes is None:
            return
        try:
            if want:
                self._routes.announce(vip)
            else:
                self._routes.withdraw(vip)
        except DataplaneError as exc:
            if state.error != str(exc):
                self._events.emit("announce", f"{vip}: {exc}", level=model.Level.ERROR)
            state.error = str(exc)
            return
        state.announced, state.error, state.since = want, None, self._clock.time()
        verb = "announced" if want else "withdrew"
        level = model.Level.INFO if want else model.Level.WARNING
        self._events.emit("announce", f"{verb} {vip}: {state.reason}", level=level)

    def stop(self) -> list[str]:
        """A clean stop: withdraw everything (unless withdraw_on_stop = false hands over the routes
        to the next run); no decision changes the routes after it. Returns the VIPs withdrawn."""
        self._stopped = True
        if self._routes is None or not self._settings.withdraw_on_stop:
            return []
        announced = [vip for vip, state in self._vips.items() if state.announced]
        self._withdraw_all("load balancer stopping")
        return [vip for vip in announced if not self._vips[vip].announced]

    def _withdraw_all(self, reason: str) -> None:
        for vip, state in self._vips.items():
            state.reason = reason
            self._change(vip, state, False)

    def command(self, cmd: model.Announce, topology: Topology) -> model.CommandResult:
        """The operator's withdraw/announce of one proxy's VIP, or of every VIP; a refusal is an
        ERROR event too, as for every command."""
        try:
            result = self._command(cmd, topology)
        except LookupError as exc:
            result = model.CommandResult(False, str(exc))
        if not result.ok:
            self._events.emit("command", f"Announce refused: {result.message}", level=model.Level.ERROR)
        return result

    def _command(self, cmd: model.Announce, topology: Topology) -> model.CommandResult:
        if cmd.action not in ACTIONS:
            return model.CommandResult(
                False, f"action must be one of {', '.join(ACTIONS)}, got {cmd.action!r}"
            )
        if not self.enabled:
            return model.CommandResult(False, "VIP announcement is off (settings.announce.enabled = false)")
        served = {name: p.cfg.vip for name, p in topology.proxies.items()}
        if cmd.proxy is not None:
            vips = {topology.proxy(cmd.proxy).cfg.vip}
        else:
            vips = set(self._vips) | set(served.values())
        # a VIP is one route: the hold names every proxy on it, so it survives any one of them going
        proxies = {name for name, vip in served.items() if vip in vips}
        overrides = self._intent.overrides.with_withdrawn(proxies, cmd.action == "withdraw")
        self._intent.change(overrides, "announce")
        shown = ", ".join(sorted(vips)) or "no VIP"
        if cmd.action == "withdraw":
            message = f"{shown} withdrawn by the operator: out of BGP rotation until `announce`"
        else:
            message = f"{shown} released: announced again while enough backends are usable"
        self._events.emit("announce", message, level=model.Level.WARNING)
        return model.CommandResult(True, message)

    async def watch_bird(self) -> None:
        """Read BIRD's BGP sessions every BIRD_POLL_S (the socket may come and go with BIRD)."""
        while True:
            if self.enabled:
                await self.read_bird()
            await asyncio.sleep(BIRD_POLL_S)

    async def read_bird(self) -> None:
        bird = BirdControl(self._settings.bird_socket, timeout_s=BIRD_TIMEOUT_S)
        try:
            sessions = await asyncio.to_thread(bird.bgp_sessions)
        except (BirdError, OSError) as exc:
            self._bird_error, self._bgp = str(exc) or type(exc).__name__, ()
            return
        self._bird_error = None
        self._bgp = tuple(
            model.BgpSessionView(s.name, s.state, s.neighbor, s.neighbor_as, s.since, s.last_error)
            for s in sessions
        )

    def view(self) -> model.AnnounceView:
        if not self.enabled and not self._vips:
            return model.AnnounceView()
        vips = tuple(
            model.VipAnnouncement(
                vip=vip,
                proxies=s.proxies,
                announced=s.announced,
                reason=s.reason,
                usable_backends=s.usable,
                held=bool(self._intent.overrides.withdrawn & set(s.proxies)),
                since=s.since,
                error=s.error,
            )
            for vip, s in sorted(self._vips.items())
        )
        return model.AnnounceView(self.enabled, self._settings.table, vips, self._bgp, self._bird_error)


class ScaleOut:
    """The engine's scale-out part (docs/scale-out.md): announcement decisions from the topology,
    the operator's Announce command, the stop, the snapshot's announcement and table fingerprints."""

    def __init__(
        self,
        events: EventLog,
        clock: Clock,
        topology: Topology,
        intent: Intent,
        factory: RoutesFactory = kernel_routes,
    ) -> None:
        self.announcer = Announcer(events, clock, intent, factory)
        self._events = events
        self._topology = topology
        self._running = False
        self._bird_task: asyncio.Task[None] | None = None
        # a backend going down or up withdraws or announces at once (the supervisors call this)
        self.set_factors = self.deciding_after(topology.set_factors)

    def start(self, settings: AnnounceConfig, watch_bird: bool = True) -> None:
        """The programs are attached: announce what may be announced; watch_bird: read BIRD's
        sessions every few seconds until the stop."""
        self._running = True
        self.announcer.configure(settings)
        self.decide()
        if watch_bird:
            self._bird_task = asyncio.create_task(self.announcer.watch_bird())

    def decide(self) -> None:
        self.announcer.update(readiness(self._topology), self._running)

    def deciding_after(self, setter: Callable[[K, V], None]) -> Callable[[K, V], None]:
        """`setter`, then a decision: a backend going down or up withdraws or announces at once."""

        def set_and_decide(key: K, value: V) -> None:
            setter(key, value)
            if self._running:
                self.decide()

        return set_and_decide

    async def execute(
        self, cmd: model.Command, otherwise: Callable[[model.Command], Awaitable[model.CommandResult]]
    ) -> model.CommandResult:
        """An Announce command here, any other `otherwise`; then a decision (a command may change
        which backends are usable)."""
        if isinstance(cmd, model.Announce):
            result = self.announcer.command(cmd, self._topology)
        else:
            result = await otherwise(cmd)
        self.decide()
        return result

    async def stop(self, grace: bool = True) -> None:
        """Withdraw first, then (grace) keep the data path serving for withdraw_grace_s while the
        routers converge: new flows go to the other hosts, and the established flows ECMP moves
        there keep their backend (the same Maglev table on every host). Only then the caller
        detaches; no wait when nothing was withdrawn."""
        self._running = False
        if self._bird_task is not None:
            self._bird_task.cancel()
            await asyncio.gather(self._bird_task, return_exceptions=True)
            self._bird_task = None
        withdrawn = self.announcer.stop()
        wait = self.announcer.settings.withdraw_grace_s
        if grace and withdrawn and wait > 0:
            vips = ", ".join(withdrawn)
            self._events.emit("announce", f"stopping: {vips} withdrawn, serving {wait:g} s more")
            await asyncio.sleep(wait)

    def decorate(self, snap: model.Snapshot) -> model.Snapshot:
        return replace(snap, announce=self.announcer.view(), tables=table_fingerprints(self._topology))


def is_usable(m: Member) -> bool:
    """A backend new flows may go to by its own state (no panic rule): in rotation (not drained, not
    in maintenance), not down (forced down included), circuit not open, weight above 0. A backend not
    checked yet counts, as it does for traffic."""
    in_rotation = m.drain == model.DrainState.ACTIVE and not m.maintenance
    return in_rotation and m.weight > 0 and m.factors.health > 0 and m.factors.circuit > 0


def readiness(topology: Topology) -> list[ProxyReadiness]:
    """Each proxy's VIP and its usable backends (the default group: what clients without a source
    route get)."""
    out = []
    for name, proxy in topology.proxies.items():
        group = proxy.groups.get(DEFAULT_GROUP)
        members = list(group.members.values()) if group is not None else []
        out.append(ProxyReadiness(name, proxy.cfg.vip, sum(map(is_usable, members)), len(members)))
    return out
