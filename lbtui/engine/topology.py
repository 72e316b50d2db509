# SPDX-License-Identifier: Apache-2.0
"""The running topology: proxies, groups and members as the data path holds them, and the one writer
of selection state.

`apply(desired)` makes the maps match a `Desired` value (a difference against what runs) and says
what changed; `write_group` is the only code that writes a selection table, composing the members'
weights from their inputs (configured or runtime weight, health, drain, circuit, algorithm factor).
Removed backends leave the selection tables before they are deactivated, so a new flow never picks
a slot that points at a deactivated backend (docs/architecture.md#invariants).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from lbtui import model
from lbtui.addresses import format_endpoint
from lbtui.config import ProxyConfig
from lbtui.control import selection
from lbtui.control.supervisor import BackendKey, Factors
from lbtui.dataplane.port import Dataplane, DataplaneError, RateLimits, ServiceEntry
from lbtui.engine.desired import Desired, MemberSpec, ProxySpec, split_address
from lbtui.engine.events import EventLog
from lbtui.engine.group import Group, Member, SlotDelta, delta_between
from lbtui.engine.ids import DEFAULT_GROUP, Ids

SavedTables = dict[tuple[str, str], tuple[int, np.ndarray, tuple[object, ...]]]


@dataclass
class Proxy:
    cfg: ProxyConfig
    service_id: int
    limits: RateLimits
    groups: dict[str, Group] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.cfg.name


class Topology:
    def __init__(
        self,
        dp: Dataplane,
        ids: Ids,
        events: EventLog,
        factors_of: Callable[[BackendKey], Factors],
        on_new_backend: Callable[[int], None],
    ):
        self._dp = dp
        self._ids = ids
        self._events = events
        self._factors_of = factors_of  # a new member's health and circuit state
        self._on_new_backend = on_new_backend  # a backend id starts over (its measurements too)
        self.proxies: dict[str, Proxy] = {}
        self.backends: dict[int, Member] = {}  # by backend id
        self.flow_events = (False, False)

    # ---- reading --------------------------------------------------------------------------------

    def members(self) -> Iterator[tuple[Proxy, Group, Member]]:
        for proxy in self.proxies.values():
            for group in proxy.groups.values():
                for m in group.members.values():
                    yield proxy, group, m

    def proxy(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise LookupError(f"no proxy named {name!r}")
        return proxy

    def find(self, proxy_name: str, address: str) -> tuple[Proxy, list[Member]]:
        """A backend in every group of a proxy that has it."""
        proxy = self.proxies.get(proxy_name)
        if proxy is None:
            have = ", ".join(sorted(self.proxies)) or "none"
            raise LookupError(f"no proxy named {proxy_name!r} (have: {have})")
        found = [g.members[address] for g in proxy.groups.values() if address in g.members]
        if not found:
            raise LookupError(f"proxy {proxy_name!r} has no backend {address}")
        return proxy, found

    def proxy_name(self, service_id: int) -> str:
        return next((p.name for p in self.proxies.values() if p.service_id == service_id), "?")

    # ---- desired state -> maps ------------------------------------------------------------------

    def apply(self, desired: Desired, cause: str, full: bool = True, first: bool = False) -> list[str]:
        """Make the maps match `desired`; what changed, in words.

        full: write every group's table (a configuration change); otherwise only groups whose
        members changed (a command). first: the initial fill (additions are not news).
        """
        changes: list[str] = []
        if desired.flow_events != self.flow_events:
            self.flow_events = desired.flow_events
            for existing in self.proxies.values():
                self._write_service(existing)
        for name in [n for n in self.proxies if n not in desired.proxies]:
            self._remove_proxy(name)
            changes.append(f"removed proxy {name}")
        for spec in desired.proxies.values():
            changes += self._apply_proxy(spec, cause, full, first)
        return changes

    def _apply_proxy(self, spec: ProxySpec, cause: str, full: bool, first: bool) -> list[str]:
        changes = []
        cfg = spec.cfg
        proxy = self.proxies.get(cfg.name)
        if proxy is not None and (proxy.cfg.vip, proxy.cfg.port, proxy.cfg.protocol) != (
            cfg.vip,
            cfg.port,
            cfg.protocol,
        ):
            self._remove_proxy(cfg.name)
            changes.append(f"{cfg.name}: moved to {format_endpoint(cfg.vip, cfg.port)}/{cfg.protocol}")
            proxy = None
        if proxy is None:
            proxy = Proxy(cfg, self._ids.service((cfg.vip, cfg.port, cfg.protocol)), spec.limits)
            self.proxies[cfg.name] = proxy
            if not first:
                changes.append(f"added proxy {cfg.name}")
        elif spec.limits != proxy.limits:
            proxy.limits = spec.limits
            changes.append(f"{cfg.name}: rate limits changed")
        if proxy.cfg.algorithm != cfg.algorithm:
            changes.append(f"{cfg.name}: algorithm {proxy.cfg.algorithm} -> {cfg.algorithm}")
            for g in proxy.groups.values():
                g.forget_table()  # rebuild whole tables for the new index scheme
            full = True
        proxy.cfg = cfg
        for label in [g for g in proxy.groups if g not in spec.groups]:
            self._remove_group(proxy, label)
            changes.append(f"{cfg.name}: removed route {label}")
        for label, members in spec.groups.items():
            group = proxy.groups.get(label)
            if group is None:
                gid, table = self._ids.group(proxy.service_id, label)
                group = Group(gid, label, self._dp.spec.table_size)
                if table is not None:
                    group.table = table
                proxy.groups[label] = group
                if label != DEFAULT_GROUP and not first:
                    changes.append(f"{cfg.name}: added route {label}")
            changes += self._sync_group(proxy, group, members, cause, full)
        self._write_service(proxy)
        for label, group in proxy.groups.items():
            if label != DEFAULT_GROUP:
                self._dp.set_route(proxy.service_id, label, group.id)
        return changes

    def _sync_group(
        self, proxy: Proxy, group: Group, wanted: Mapping[str, MemberSpec], cause: str, full: bool
    ) -> list[str]:
        changes = []
        name = proxy.name
        removed = [m for a, m in group.members.items() if a not in wanted]
        changes += [f"{name}: removed backend {m.address}" for m in removed]
        dirty = bool(removed)
        for address, spec in wanted.items():
            m = group.members.get(address)
            drain = spec.drain.state if spec.drain else model.DrainState.ACTIVE
            if m is None:
                m = self._add_member(proxy, group, address, spec, drain)
                changes.append(f"{name}: added backend {address} weight {spec.weight}")
                dirty = True
                continue
            if m.configured != spec.configured:
                changes.append(f"{name}: {address} weight {m.weight} -> {spec.weight}")
            was_drained = m.drain != model.DrainState.ACTIVE
            dirty |= m.weight != spec.weight or was_drained != (drain != model.DrainState.ACTIVE)
            dirty |= m.maintenance != spec.maintenance
            m.configured, m.weight, m.source, m.drain = spec.configured, spec.weight, spec.source, drain
            m.maintenance = spec.maintenance
        # removed backends leave the selection table first and are deactivated after it is written:
        # a new flow must never pick a slot that still points at a deactivated backend
        for m in removed:
            del group.members[m.address]
        try:
            if dirty or full:
                self.write_group(proxy, group, cause)
        except Exception:
            for m in removed:  # still in the table the map holds: still members
                group.members[m.address] = m
            raise
        for m in removed:
            self._retire(m)
        return changes

    def _add_member(
        self, proxy: Proxy, group: Group, address: str, spec: MemberSpec, drain: model.DrainState
    ) -> Member:
        ip, port = split_address(address)
        bid, adopted = self._ids.backend(group.id, address)
        try:
            m = Member(
                bid,
                proxy.name,
                group.label,
                ip,
                port,
                spec.configured,
                spec.weight,
                spec.source,
                drain,
                spec.maintenance,
            )
            m.factors = self._factors_of(m.key)
            if not adopted:
                self._dp.clear_backend_stats(bid)  # adopted backends keep their counters
                self._on_new_backend(bid)
            self._dp.set_backend(bid, ip, port, active=True)
        except Exception:
            self._ids.backends.give_back(bid)
            raise
        group.members[address] = m
        self.backends[bid] = m
        return m

    def _retire(self, m: Member) -> None:
        # tracked flows keep working (conntrack holds the backend's address); only new picks stop,
        # because no selection table points at it any more
        self._dp.set_backend(m.id, m.ip, m.port, active=False)
        self.backends.pop(m.id, None)
        self._ids.backends.give_back(m.id)

    def _remove_group(self, proxy: Proxy, label: str) -> None:
        group = proxy.groups.pop(label)
        if label != DEFAULT_GROUP:
            self._dp.delete_route(proxy.service_id, label)
        for m in group.members.values():
            self._retire(m)
        self._write_slots(group.id, delta_between(np.empty(0), np.full(group.table_size, selection.EMPTY)))
        self._ids.groups.give_back(group.id)

    def _remove_proxy(self, name: str) -> None:
        proxy = self.proxies.pop(name)
        self._dp.delete_service(proxy.cfg.vip, proxy.cfg.port, proxy.cfg.protocol)
        for label in list(proxy.groups):
            self._remove_group(proxy, label)
        self._ids.services.give_back(proxy.service_id)

    def _write_service(self, proxy: Proxy) -> None:
        cfg = proxy.cfg
        closed, new = self.flow_events
        self._dp.set_service(
            ServiceEntry(
                vip=cfg.vip,
                port=cfg.port,
                protocol=cfg.protocol,
                service_id=proxy.service_id,
                default_group=proxy.groups[DEFAULT_GROUP].id,
                algorithm=cfg.algorithm,
                events_closed=closed,
                events_new=new,
                limits=proxy.limits,
                ipip_source=self._ipip_source(cfg),
            )
        )

    def _ipip_source(self, cfg: ProxyConfig) -> str | None:
        """The outer source of a DSR proxy: configured, or its first interface's IPv4 address."""
        if cfg.forwarding != "ipip":
            return None
        source = cfg.ipip_source or self._dp.ipv4_address(cfg.interfaces[0])
        if source is None:
            raise DataplaneError(
                f'{cfg.name}: forwarding = "ipip" needs an outer source address: interface '
                f"{cfg.interfaces[0]} has no IPv4 address (set ipip_source)"
            )
        return source

    def _write_slots(self, group_id: int, delta: SlotDelta) -> None:
        if len(delta):
            self._dp.write_slots(group_id, delta.slots, delta.backend_ids)

    # ---- the one writer of selection state ------------------------------------------------------

    def write_group(self, proxy: Proxy, group: Group, cause: str) -> None:
        """Compose the group's weights, write the slots that change, and say what changed."""
        plan = group.plan(proxy.cfg.algorithm)
        self._write_slots(group.id, plan.delta)
        was_panic = group.panic
        changed = group.commit(plan)
        for m in group.members.values():
            # a SYN on the tuple of a flow of a backend that takes no new flows picks another
            # (docs/datapath.md#conntrack); the flag follows the effective weight
            if (m.effective > 0) != m.accepts_new:
                self._dp.set_backend(m.id, m.ip, m.port, active=True, accepts_new=m.effective > 0)
                m.accepts_new = m.effective > 0
        comp = plan.composition
        where = f"{proxy.name}/{group.label}"
        if comp.panic and not was_panic:
            self._events.emit(
                "panic",
                f"{where}: every backend is out of rotation; spreading traffic over all non-drained backends",
                level=model.Level.WARNING,
                proxy=proxy.name,
            )
        elif was_panic and not comp.panic:
            self._events.emit("panic", f"{where}: panic over, normal selection again", proxy=proxy.name)
        quiet = cause == "least-connections"  # weights move on every tick: no event each time
        if not quiet:
            for m, old in changed:
                self._events.emit(
                    "weight",
                    f"{m.address} effective weight {old} -> {m.effective} ({m.reason}; {cause})",
                    proxy=m.proxy,
                    backend=m.address,
                )
        if group.members and not any(comp.weights.values()) and not quiet:
            self._events.emit(
                "weight",
                f"{where}: no backend can take new connections; they are refused",
                level=model.Level.WARNING,
                proxy=proxy.name,
            )

    def set_factors(self, key: BackendKey, factors: Factors) -> None:
        """New health/circuit state of a backend: every group that has it is written again."""
        proxy = self.proxies.get(key.proxy)
        if proxy is None:
            return
        for group in proxy.groups.values():
            m = group.members.get(key.address)
            if m is not None:
                m.factors = factors
                self.write_group(proxy, group, factors.reason or "health/circuit")

    # ---- rollback -------------------------------------------------------------------------------

    def save_tables(self) -> SavedTables:
        return {
            (p.name, label): (g.id, g.table.copy(), g.inputs)
            for p in self.proxies.values()
            for label, g in p.groups.items()
        }

    def restore_tables(self, saved: SavedTables) -> None:
        """After a rollback, put back the exact slot layouts (a recomputed table has the same shares
        but may place them differently, which would move flows of source-hash/Maglev services)."""
        for (name, label), (gid, table, inputs) in saved.items():
            proxy = self.proxies.get(name)
            group = proxy.groups.get(label) if proxy else None
            if group is None or group.id != gid or np.array_equal(group.table, table):
                continue
            self._write_slots(group.id, delta_between(group.table, table))
            group.table, group.inputs = table, inputs
