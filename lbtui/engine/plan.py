# SPDX-License-Identifier: Apache-2.0
"""What a reload changes, in words: the change list a reload reports and `reload --dry-run` shows
before anything is applied (README.md#hot-reload).

- `topology_changes` reads the running topology against the desired state a reload would install
  and says what Topology.apply will do to the maps, in its words (proxies, routes, backends,
  weights, rate limits, algorithms). It is computed apart from Topology.apply, on purpose: the
  engine checks after each reload that the two agree (a disagreement is logged), and the tests
  compare a dry run with the reload that follows it.
- `config_changes` lists what else the file changes: per-proxy settings (interfaces, health
  checks, circuit breaker) and [settings], with what a reload cannot apply marked.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from lbtui.config import Config
from lbtui.engine.desired import Desired, MemberSpec
from lbtui.engine.group import Group
from lbtui.engine.ids import DEFAULT_GROUP
from lbtui.engine.instance import RESTART_SETTINGS
from lbtui.engine.topology import Topology

# [settings] keys read once at start: a reload takes the rest of the file, these wait for a restart
AT_START = ("read_only",)
# per-proxy keys whose changes topology_changes already says in its own words
SAID_BY_TOPOLOGY = ("name", "vip", "port", "protocol", "algorithm", "backends", "source_routes", "rate_limit")


def topology_changes(topology: Topology, desired: Desired) -> list[str]:
    """What Topology.apply(desired) would report, without touching anything."""
    changes = [f"removed proxy {name}" for name in topology.proxies if name not in desired.proxies]
    for spec in desired.proxies.values():
        cfg = spec.cfg
        proxy = topology.proxies.get(cfg.name)
        groups: Mapping[str, Group] = {}
        if proxy is not None and (proxy.cfg.vip, proxy.cfg.port, proxy.cfg.protocol) != (
            cfg.vip,
            cfg.port,
            cfg.protocol,
        ):
            changes.append(f"{cfg.name}: moved to {cfg.vip}:{cfg.port}/{cfg.protocol}")
            proxy = None
        if proxy is None:
            changes.append(f"added proxy {cfg.name}")
        else:
            groups = proxy.groups
            if spec.limits != proxy.limits:
                changes.append(f"{cfg.name}: rate limits changed")
            if proxy.cfg.algorithm != cfg.algorithm:
                changes.append(f"{cfg.name}: algorithm {proxy.cfg.algorithm} -> {cfg.algorithm}")
        changes += [f"{cfg.name}: removed route {label}" for label in groups if label not in spec.groups]
        for label, members in spec.groups.items():
            group = groups.get(label)
            if group is None and label != DEFAULT_GROUP:
                changes.append(f"{cfg.name}: added route {label}")
            changes += _member_changes(cfg.name, group, members)
    return changes


def _member_changes(proxy: str, group: Group | None, wanted: Mapping[str, MemberSpec]) -> list[str]:
    have = group.members if group is not None else {}
    changes = [f"{proxy}: removed backend {address}" for address in have if address not in wanted]
    for address, spec in wanted.items():
        m = have.get(address)
        if m is None:
            changes.append(f"{proxy}: added backend {address} weight {spec.weight}")
        elif m.configured != spec.configured:
            changes.append(f"{proxy}: {address} weight {m.weight} -> {spec.weight}")
    return changes


def config_changes(old: Config, new: Config) -> list[str]:
    """Per-proxy settings and [settings] that differ, one line per key."""
    changes = []
    if old.path != new.path:
        changes.append(f"configuration file {old.path} -> {new.path}")
    before = {p.name: p for p in old.proxies}
    for proxy in new.proxies:
        was = before.get(proxy.name)
        if was is None or (was.vip, was.port, was.protocol) != (proxy.vip, proxy.port, proxy.protocol):
            continue  # a new or moved proxy: said by topology_changes, its settings with it
        for key, a, b in _differences(was, proxy, skip=SAID_BY_TOPOLOGY):
            changes.append(f"{proxy.name}: {key} {a} -> {b}")
    for key, a, b in _differences(old.settings, new.settings):
        top = key.split(".", 1)[0]
        note = " (needs a restart: the reload is refused)" if top in RESTART_SETTINGS else ""
        note = " (applies at the next start)" if top in AT_START else note
        changes.append(f"settings.{key} {a} -> {b}{note}")
    return changes


def restart_changes(old: Config, new: Config) -> list[str]:
    """The lines of config_changes that make a reload impossible."""
    return [c for c in config_changes(old, new) if c.endswith("(needs a restart: the reload is refused)")]


def _differences(
    old: Any, new: Any, skip: tuple[str, ...] = (), prefix: str = ""
) -> list[tuple[str, str, str]]:
    out = []
    for f in dataclasses.fields(old):
        if f.name in skip:
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b) and type(a) is type(b):
            out += _differences(a, b, prefix=f"{key}.")
        else:
            out.append((key, _text(a), _text(b)))
    return out


def _text(value: Any) -> str:
    if value is None:
        return "(none)"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return "(set)"
    if isinstance(value, tuple):
        return json.dumps([_text(v) if not isinstance(v, (str, int, float)) else v for v in value])
    return json.dumps(value) if isinstance(value, str) else str(value)
