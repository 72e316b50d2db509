# SPDX-License-Identifier: Apache-2.0
"""What the data path should hold: the configuration (with its DNS answers) and the runtime overrides,
composed in one place (`compose`: `prune` drops the overrides that no longer apply, `overlay` lays
the rest over the configuration).

`Desired` is a frozen value per proxy: its configuration, rate limits and, per group, the members
with their configured weight, the weight selection uses, any drain and maintenance. Topology.apply
makes the maps match it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from lbtui import model
from lbtui.addresses import AddressError, format_endpoint, parse_endpoint
from lbtui.config import BackendConfig, Config, ProxyConfig
from lbtui.dataplane.port import DataplaneSpec, RateLimits
from lbtui.engine.ids import DEFAULT_GROUP
from lbtui.engine.overrides import BackendRef, DrainOverride, Dropped, MemberRef, Overrides, dropped

Addresses = Callable[[str, str], tuple[str, ...]]  # (proxy, host name) -> its last good A records


@dataclass(frozen=True)
class MemberSpec:
    configured: int  # from the configuration (or the weight it was added with at run time)
    weight: int  # what selection uses: configured, or the operator's runtime weight
    source: str = "static"  # "static" or "dns:<host>"
    drain: DrainOverride | None = None
    maintenance: bool = False


@dataclass(frozen=True)
class ProxySpec:
    cfg: ProxyConfig
    limits: RateLimits
    groups: Mapping[str, Mapping[str, MemberSpec]]  # label -> "ip:port" -> member; default first


@dataclass(frozen=True)
class Desired:
    proxies: Mapping[str, ProxySpec]
    flow_events: tuple[bool, bool]  # ring-buffer events wanted: (when flows close, when they open)

    def backends(self) -> set[BackendRef]:
        return {(p, a) for p, spec in self.proxies.items() for g in spec.groups.values() for a in g}

    def members(self) -> set[MemberRef]:
        return {
            (p, label, a) for p, spec in self.proxies.items() for label, g in spec.groups.items() for a in g
        }

    def configured_weights(self) -> dict[BackendRef, tuple[int, ...]]:
        out: dict[BackendRef, tuple[int, ...]] = {}
        for p, spec in self.proxies.items():
            for group in spec.groups.values():
                for a, m in group.items():
                    out[(p, a)] = (*out.get((p, a), ()), m.configured)
        return out

    def limits(self) -> dict[str, RateLimits]:
        return {p: spec.limits for p, spec in self.proxies.items()}


class CapacityError(ValueError):
    """A desired state larger than the data path's maps; raised before any map is written."""


def check_capacity(desired: Desired, spec: DataplaneSpec) -> None:
    """Refuse (CapacityError) what the maps cannot hold, so that no write starts that would fail half
    way (ids taken, tables half written) whatever asked for it: a reload, a command, a DNS answer."""
    groups = [
        (name, label, len(members))
        for name, p in desired.proxies.items()
        for label, members in p.groups.items()
    ]
    members = sum(n for _, _, n in groups)
    if len(desired.proxies) > spec.max_services:
        raise CapacityError(f"{len(desired.proxies)} proxies: the data path holds {spec.max_services}")
    if len(groups) > spec.max_groups:
        raise CapacityError(f"{len(groups)} backend groups: the data path holds {spec.max_groups}")
    for name, label, n in groups:
        if n > spec.table_size:
            raise CapacityError(
                f"{name}: {n} backends in group {label} do not fit settings.table_size = {spec.table_size}"
            )
    if members > spec.max_backends:
        raise CapacityError(f"{members} backends in all groups: the data path holds {spec.max_backends}")


def config_limits(cfg: ProxyConfig) -> RateLimits:
    rl = cfg.rate_limit
    src = rl.per_source if rl else None
    be = rl.per_backend if rl else None
    return RateLimits(
        src_rate=src.rate if src else 0,
        src_burst=src.burst if src else 0,
        be_rate=be.rate if be else 0,
        be_burst=be.burst if be else 0,
        src_prefix6=rl.ipv6_source_prefix if rl else RateLimits.src_prefix6,
    )


def split_address(address: str) -> tuple[str, int]:
    """(ip, port) of a backend written "ip:port" or "[ip]:port" (lbtui/addresses.py); ValueError."""
    try:
        return parse_endpoint(address, unicast=True)
    except AddressError as problem:
        raise ValueError(f"backend {address!r}: {problem}") from None


def all_backends(p: ProxyConfig) -> list[BackendConfig]:
    return [*p.backends, *(b for r in p.source_routes for b in r.backends)]


def flow_events(config: Config) -> tuple[bool, bool]:
    """Ring-buffer events feed only the access log (latency histograms live in the data path):
    without a log, a connection costs userspace nothing."""
    log_cfg = config.settings.access_log
    on = bool(log_cfg.file or log_cfg.stdout or log_cfg.syslog)
    return on, on and log_cfg.log_new


def group_members(
    proxy: str, backends: Sequence[BackendConfig], addresses: Addresses
) -> dict[str, MemberSpec]:
    """address -> member of a group: static backends, then the addresses of DNS names.

    The A (AAAA) records of a name share its weight (each gets weight // n, at least 1); an address that
    is also configured statically keeps its static entry.
    """
    members = {str(b.address): MemberSpec(b.weight, b.weight) for b in backends if b.address is not None}
    for b in backends:
        if not b.host or b.port is None:
            continue
        found = addresses(proxy, b.host)
        for ip in found:
            w = max(1, b.weight // len(found))
            members.setdefault(format_endpoint(ip, b.port), MemberSpec(w, w, f"dns:{b.host}"))
    return members


def from_config(config: Config, addresses: Addresses) -> Desired:
    """The configuration alone (with the DNS answers it refers to)."""
    proxies = {}
    for p in config.proxies:
        groups = {DEFAULT_GROUP: group_members(p.name, p.backends, addresses)}
        for route in p.source_routes:
            groups[route.cidr] = group_members(p.name, route.backends, addresses)
        proxies[p.name] = ProxySpec(p, config_limits(p), groups)
    return Desired(proxies, flow_events(config))


def compose(config: Config, addresses: Addresses, overrides: Overrides) -> Desired:
    """The configuration with the runtime overrides laid over it: the one place they meet."""
    base = from_config(config, addresses)
    return overlay(base, prune(overrides, base)[0])


def overlay(base: Desired, overrides: Overrides) -> Desired:
    """`base` (the configuration alone) with `overrides` (pruned against it) laid over it."""
    proxies = {}
    for name, spec in base.proxies.items():
        groups = {}
        for label, found in spec.groups.items():
            members = {a: m for a, m in found.items() if (name, label, a) not in overrides.removed}
            for (p, g, address), w in overrides.added.items():
                if (p, g) == (name, label):
                    members[address] = MemberSpec(w, w)
            groups[label] = {
                a: replace(
                    m,
                    weight=overrides.weights.get((name, a), m.weight),
                    drain=overrides.drains.get((name, a)),
                    maintenance=(name, a) in overrides.maintenance,
                )
                for a, m in members.items()
            }
        proxies[name] = replace(spec, limits=overrides.limits.get(name, spec.limits), groups=groups)
    return Desired(proxies, base.flow_events)


def prune(overrides: Overrides, base: Desired) -> tuple[Overrides, Dropped]:
    """The overrides that still apply to the configuration `base`, and one line per dropped one
    saying why (docs/architecture.md#state)."""
    in_file = base.members()
    groups = {(p, label) for p, spec in base.proxies.items() for label in spec.groups}
    added = {m: w for m, w in overrides.added.items() if (m[0], m[1]) in groups and m not in in_file}
    removed = frozenset(m for m in overrides.removed if m in in_file)
    exists = {(p, a) for p, g, a in in_file if (p, g, a) not in removed} | {(p, a) for p, _, a in added}
    breakers = {p for p, spec in base.proxies.items() if spec.cfg.circuit_breaker is not None}
    kept = Overrides(
        weights={r: w for r, w in overrides.weights.items() if r in exists},
        drains={r: d for r, d in overrides.drains.items() if r in exists},
        maintenance=frozenset(r for r in overrides.maintenance if r in exists),
        health={r: h for r, h in overrides.health.items() if r in exists},
        circuits={r: c for r, c in overrides.circuits.items() if r in exists and r[0] in breakers},
        added=added,
        removed=removed,
        limits={p: lim for p, lim in overrides.limits.items() if p in base.proxies},
        withdrawn=frozenset(p for p in overrides.withdrawn if p in base.proxies),
    )
    if kept == overrides:
        return overrides, []

    def why(e: model.OverrideView) -> str:
        if e.proxy not in base.proxies:
            return f"proxy {e.proxy} is no longer in the configuration"
        if e.kind == "added" and (e.proxy, e.group) not in groups:
            return f"route {e.group} is no longer in the configuration"
        if e.kind == "added":
            return "the configuration has this backend now"
        if e.kind == "circuit" and e.proxy not in breakers:
            return f"proxy {e.proxy} has no circuit breaker any more"
        return "the backend is no longer in the configuration"

    return kept, dropped(overrides, kept, why)
