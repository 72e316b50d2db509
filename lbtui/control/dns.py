# SPDX-License-Identifier: Apache-2.0
"""DNS backends: resolve host names to A records and follow changes (docs/architecture.md#who-gets-traffic).

One asyncio task per (proxy, hostname) re-resolves the name every refresh interval, jittered by
±10 % each time so many names drift apart instead of querying in lockstep. Every valid A record is
a backend address. A failed resolution (timeout, SERVFAIL, NXDOMAIN, no answer, an empty or
all-invalid answer, or anything else that raises) never removes backends: the last good set stays
and the status records the error and the number of failures in a row. `on_change` is called only
when a good answer gives a different set, so it never sees an empty set.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

from lbtui import model

log = logging.getLogger(__name__)

JITTER = 0.10  # each wait is the refresh interval ±10 %
MIN_INTERVAL_S = 0.01  # a floor so a tiny configured interval cannot become a busy loop
DNS_PORT = 53

NameKey = tuple[str, str]  # (proxy, hostname)
ResolveFn = Callable[[str], Awaitable[tuple[str, ...]]]
OnChange = Callable[[str, str, tuple[str, ...], tuple[str, ...]], None]


@dataclass(frozen=True)
class Resolution:
    hostname: str
    addresses: tuple[str, ...]  # sorted, distinct IPv4 addresses; never empty


class ResolveError(Exception):
    """A resolution that gave no usable address; the message is what the status shows."""


def jittered_interval(interval_s: float, rng: random.Random) -> float:
    """The wait before the next resolution: interval_s ±10 %, never below MIN_INTERVAL_S."""
    base = max(interval_s, MIN_INTERVAL_S)
    return base * rng.uniform(1.0 - JITTER, 1.0 + JITTER)


def usable_addresses(answers: Sequence[object]) -> tuple[str, ...]:
    """The distinct IPv4 addresses among `answers`, sorted numerically.

    Anything that is not an IPv4 address is dropped, and so are addresses that can never be a
    backend (0.0.0.0, multicast, 255.255.255.255): a lying server must not steer traffic there.
    """
    found: set[ipaddress.IPv4Address] = set()
    for answer in answers:
        if not isinstance(answer, str):
            continue
        try:
            address = ipaddress.IPv4Address(answer)
        except ValueError:
            continue
        if address.is_unspecified or address.is_multicast or address == ipaddress.IPv4Address(2**32 - 1):
            continue
        found.add(address)
    return tuple(str(address) for address in sorted(found))


def describe_error(exc: BaseException, timeout_s: float) -> str:
    """A short, human description of why a resolution failed."""
    if isinstance(exc, ResolveError):
        return str(exc)
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return "NXDOMAIN (no such name)"
    if isinstance(exc, dns.resolver.NoAnswer):
        return "no A records"
    if isinstance(exc, dns.exception.Timeout | TimeoutError):
        return f"timeout after {timeout_s:g}s"
    if isinstance(exc, dns.resolver.NoNameservers):
        return f"no server answered: {exc}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _NameState:
    """What is known about one (proxy, hostname); mutated only on the event loop."""

    def __init__(self) -> None:
        self.addresses: tuple[str, ...] = ()  # last good set
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.consecutive_failures = 0


class DnsBackendResolver:
    """Keeps the A records of the configured DNS backends up to date, on the running asyncio loop.

    `on_change(proxy, hostname, old, new)` is called on the loop when a periodic refresh finds a
    different, non-empty set of addresses. `resolve_fn(hostname)` replaces the DNS lookup (tests);
    it returns the answers (invalid ones are filtered out here) or raises on failure.
    """

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        on_change: OnChange | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        timeout_s: float = 2.0,
        resolve_fn: ResolveFn | None = None,
    ) -> None:
        self._nameservers = tuple(nameservers)
        self._on_change = on_change
        self._clock = clock
        self._rng = rng or random.Random()
        self._timeout_s = timeout_s
        self._resolve_fn: ResolveFn = resolve_fn or self._query_dns
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._intervals: dict[NameKey, float] = {}
        self._states: dict[NameKey, _NameState] = {}
        self._tasks: dict[NameKey, asyncio.Task[None]] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    # ---- configuration ---------------------------------------------------------------------------

    def set_names(self, names: Mapping[NameKey, float]) -> None:
        """Follow exactly these (proxy, hostname) -> refresh interval (s). Call on the running loop.

        New names start a task whose first refresh comes one (jittered) interval from now; use
        resolve_now() for an immediate first answer. Removed names stop and forget their state; a
        name whose interval changed is restarted and keeps its last good set.
        """
        for key in list(self._intervals):
            if key not in names:
                self._stop(key)
                del self._intervals[key]
        for key in list(self._states):
            if key not in names:
                del self._states[key]
        loop = asyncio.get_running_loop()
        for key, interval_s in names.items():
            if self._intervals.get(key) == interval_s and key in self._tasks:
                continue
            self._stop(key)
            self._intervals[key] = interval_s
            self._states.setdefault(key, _NameState())
            proxy, hostname = key
            self._tasks[key] = loop.create_task(self._run(key, interval_s), name=f"dns {proxy} {hostname}")

    async def close(self) -> None:
        """Stop every refresh task and wait until they have ended."""
        for key in list(self._tasks):
            self._stop(key)
        self._intervals.clear()
        pending = list(self._stopping)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # ---- queries ---------------------------------------------------------------------------------

    async def resolve_now(self, proxy: str, hostname: str, notify: bool = False) -> Resolution | None:
        """Resolve one name at once and record the outcome in its status.

        Returns the new set, or None when the resolution failed (the last good set, if any, stays;
        see status()). The caller gets the answer directly, so on_change is called only when
        `notify` is true (and the set changed).
        """
        return await self._refresh((proxy, hostname), notify=notify)

    def addresses(self, proxy: str, hostname: str) -> tuple[str, ...]:
        """The last good set of addresses of a name (empty: never resolved successfully)."""
        state = self._states.get((proxy, hostname))
        return state.addresses if state is not None else ()

    def status(self) -> tuple[model.DnsStatus, ...]:
        """One status per known name, sorted by (proxy, hostname)."""
        return tuple(
            model.DnsStatus(
                hostname=hostname,
                proxy=proxy,
                addresses=state.addresses,
                last_success=state.last_success,
                last_error=state.last_error,
                consecutive_failures=state.consecutive_failures,
            )
            for (proxy, hostname), state in sorted(self._states.items())
        )

    # ---- internals -------------------------------------------------------------------------------

    def _stop(self, key: NameKey) -> None:
        task = self._tasks.pop(key, None)
        if task is None:
            return
        task.cancel()
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _run(self, key: NameKey, interval_s: float) -> None:
        while True:
            await asyncio.sleep(jittered_interval(interval_s, self._rng))
            try:
                await self._refresh(key, notify=True)
            except Exception:  # a bug here must not end the refresh of this name
                log.exception("DNS refresh of %s failed unexpectedly", key[1])

    async def _refresh(self, key: NameKey, notify: bool) -> Resolution | None:
        proxy, hostname = key
        try:
            # The outer timeout is a safety net: a resolve function must never hang a task.
            answers = await asyncio.wait_for(self._resolve_fn(hostname), self._timeout_s + 1.0)
            addresses = usable_addresses(answers)
            if not addresses:
                raise ResolveError("no usable IPv4 address in the answer")
        except Exception as exc:  # every failure of any kind is a status, never an error of ours
            self._record_failure(key, describe_error(exc, self._timeout_s))
            return None
        state = self._states.setdefault(key, _NameState())
        old = state.addresses
        state.addresses = addresses
        state.last_success = self._clock()
        state.last_error = None
        state.consecutive_failures = 0
        if addresses != old:
            log.info("DNS %s (%s): %s -> %s", hostname, proxy, list(old), list(addresses))
            if notify and self._on_change is not None:
                try:
                    self._on_change(proxy, hostname, old, addresses)
                except Exception:
                    log.exception("DNS change callback failed for %s", hostname)
        return Resolution(hostname, addresses)

    def _record_failure(self, key: NameKey, error: str) -> None:
        state = self._states.setdefault(key, _NameState())
        state.last_error = error
        state.consecutive_failures += 1
        keeping = f"keeping {list(state.addresses)}" if state.addresses else "no addresses yet"
        log.warning(
            "DNS %s (%s) failed %d time(s) in a row: %s; %s",
            key[1],
            key[0],
            state.consecutive_failures,
            error,
            keeping,
        )

    def _make_resolver(self) -> dns.asyncresolver.Resolver:
        if self._nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = list(self._nameservers)
            resolver.port = DNS_PORT
        else:
            resolver = dns.asyncresolver.Resolver()  # /etc/resolv.conf
        resolver.lifetime = self._timeout_s
        resolver.timeout = self._timeout_s
        resolver.cache = None  # every refresh asks the server; the answers are ours to compare
        return resolver

    async def _query_dns(self, hostname: str) -> tuple[str, ...]:
        if self._resolver is None:
            # Made on first use (not in __init__), so a missing resolv.conf is a failure status
            # of each name, retried at every refresh, not an exception at start.
            self._resolver = self._make_resolver()
        answer = await self._resolver.resolve(hostname, "A", search=False)
        return tuple(str(getattr(rdata, "address", "")) for rdata in answer)
