# SPDX-License-Identifier: Apache-2.0
"""Commands: what a front end may ask the engine to do, and the result it gets back."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SetWeight:
    proxy: str
    backend: str  # "ip:port"
    weight: int


@dataclass(frozen=True)
class AdjustWeight:
    """A weight relative to the present one (`step`, e.g. +1 or -1) or to the configured one
    (`percent` of it, e.g. 50); exactly one of the two."""

    proxy: str
    backend: str
    step: int = 0
    percent: float | None = None


@dataclass(frozen=True)
class AddBackend:
    proxy: str
    backend: str
    weight: int = 1
    group: str | None = None  # None: the default group; else a source route's CIDR


@dataclass(frozen=True)
class RemoveBackend:
    proxy: str
    backend: str
    cut: bool = False  # also cut its established flows (their conntrack entries removed)


@dataclass(frozen=True)
class Maintenance:
    """No new connections and no health checks until Ready; established flows continue."""

    proxy: str
    backend: str


@dataclass(frozen=True)
class Ready:
    """Back to normal: out of maintenance and of any drain."""

    proxy: str
    backend: str


HEALTH_ACTIONS = ("up", "down", "auto")


@dataclass(frozen=True)
class ForceHealth:
    proxy: str
    backend: str
    state: str  # "up" | "down" (held until "auto") | "auto" (the health checks decide again)


@dataclass(frozen=True)
class Drain:
    proxy: str
    backend: str
    timeout_s: float | None = None  # None: settings.drain_timeout_s
    cut: bool = False  # at the timeout, cut the flows still open (their conntrack entries removed)


@dataclass(frozen=True)
class Undrain:
    proxy: str
    backend: str


@dataclass(frozen=True)
class SetRateLimit:
    proxy: str
    per_source_rate: int | None = None  # None: unchanged; 0: limit removed
    per_source_burst: int | None = None
    per_backend_rate: int | None = None
    per_backend_burst: int | None = None


@dataclass(frozen=True)
class Reload:
    path: str | None = None  # None: the file the running configuration came from
    dry_run: bool = False  # say what a reload would change (result.changes), change nothing


@dataclass(frozen=True)
class ClearOverrides:
    """Back to what the configuration says: every runtime override, a proxy's, or one backend's."""

    proxy: str | None = None
    backend: str | None = None  # needs proxy


@dataclass(frozen=True)
class CircuitCommand:
    proxy: str
    backend: str
    action: str  # "force_open" | "force_close" | "reset"


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Announce:
    """Take VIPs out of BGP rotation ("withdraw") or put them back ("announce"): one proxy's VIP, or
    every VIP (proxy None). The load balancer keeps running and keeps its flows either way."""

    action: str  # "withdraw" | "announce"
    proxy: str | None = None


Command = (
    SetWeight
    | AdjustWeight
    | AddBackend
    | RemoveBackend
    | Drain
    | Undrain
    | Maintenance
    | Ready
    | ForceHealth
    | SetRateLimit
    | Reload
    | CircuitCommand
    | ClearOverrides
    | Stop
    | Announce
)

COMMAND_TYPES: dict[str, type] = {
    c.__name__: c
    for c in (
        SetWeight,
        AdjustWeight,
        AddBackend,
        RemoveBackend,
        Drain,
        Undrain,
        Maintenance,
        Ready,
        ForceHealth,
        SetRateLimit,
        Reload,
        CircuitCommand,
        ClearOverrides,
        Stop,
        Announce,
    )
}


@dataclass(frozen=True)
class CommandResult:
    ok: bool
    message: str
    changes: tuple[str, ...] = ()  # a reload's (or a dry run's) change list, one line each
