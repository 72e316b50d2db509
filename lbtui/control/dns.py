# SPDX-License-Identifier: Apache-2.0
"""DNS backends: resolve host names to A records and follow changes (docs/architecture.md#who-gets-traffic).

One asyncio task per (proxy, hostname) re-resolves the name every refresh interval, jittered by
±10 % each time so many names drift apart instead of querying in lockstep. Every valid A record is
a backend address; a name of an IPv6 proxy is asked for its AAAA records instead (`record_type`).
Every answer is screened (control.dns_screen: only the asked family, no loopback, VIP, local,
multicast... address, at most max_records per name); what the screen refused is announced
(`on_warning`) whenever it changes. A failed resolution (timeout, SERVFAIL, NXDOMAIN, no answer, an empty or
all-invalid answer, or anything else that raises) never removes backends: the last good set stays
and the status records the error and the number of failures in a row. `on_change` is called only
when a good answer gives a different set, so it never sees an empty set; if it raises AnswerRefused
(the set does not fit the data path), the last good set stays, as after a failed resolution.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

from lbtui import model
from lbtui.addresses import IPV6, family
from lbtui.control.dns_screen import FAMILIES, RefuseFn, screen_answers
from lbtui.deadline import within

log = logging.getLogger(__name__)

JITTER = 0.10  # each wait is the refresh interval ±10 %
MIN_INTERVAL_S = 0.01  # a floor so a tiny configured interval cannot become a busy loop
DNS_PORT = 53
MAX_RECORDS = 64  # usable addresses used per name (settings.dns.max_records)

NameKey = tuple[str, str]  # (proxy, hostname)
ResolveFn = Callable[[str, str], Awaitable[tuple[str, ...]]]  # (hostname, "A" | "AAAA") -> answers
OnChange = Callable[[str, str, tuple[str, ...], tuple[str, ...]], None]
OnWarning = Callable[[str, str, str], None]  # (proxy, hostname, what was refused)


@dataclass(frozen=True)
class Resolution:
    hostname: str
    addresses: tuple[str, ...]  # sorted, distinct addresses of the record type's family; never empty


class ResolveError(Exception):
    """A resolution that gave no usable address; the message is what the status shows."""


class AnswerRefused(Exception):
    """Raised by on_change: the new set cannot be applied; the message is what the status shows."""


def jittered_interval(interval_s: float, rng: random.Random) -> float:
    """The wait before the next resolution: interval_s ±10 %, never below MIN_INTERVAL_S."""
    base = max(interval_s, MIN_INTERVAL_S)
    return base * rng.uniform(1.0 - JITTER, 1.0 + JITTER)


def describe_error(exc: BaseException, timeout_s: float, rdtype: str = "A") -> str:
    """A short, human description of why a resolution failed."""
    if isinstance(exc, ResolveError):
        return str(exc)
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return "NXDOMAIN (no such name)"
    if isinstance(exc, dns.resolver.NoAnswer):
        return f"no {rdtype} records"
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
        self.rdtype = "A"
        self.refused = ""  # what the screen refused in the last answer, as last announced


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
        max_records: int = MAX_RECORDS,
        refuse: RefuseFn | None = None,
        on_warning: OnWarning | None = None,
    ) -> None:
        self._nameservers = tuple(nameservers)
        self._on_change = on_change
        self._clock = clock
        self._rng = rng or random.Random()
        self._timeout_s = timeout_s
        self._resolve_fn: ResolveFn = resolve_fn or self._query_dns
        self.max_records = max_records  # followed at the next refresh (a reload may change it)
        self._refuse = refuse
        self._on_warning = on_warning
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._intervals: dict[NameKey, float] = {}
        self._states: dict[NameKey, _NameState] = {}
        self._tasks: dict[NameKey, asyncio.Task[None]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._retyped: set[NameKey] = set()  # names whose record type changed: restart their task

    # ---- configuration ---------------------------------------------------------------------------

    def set_names(self, names: Mapping[NameKey, float], rdtypes: Mapping[NameKey, str] | None = None) -> None:
        """Follow exactly these (proxy, hostname) -> refresh interval (s). Call on the running loop.

        New names start a task whose first refresh comes one (jittered) interval from now; use
        resolve_now() for an immediate first answer. Removed names stop and forget their state; a
        name whose interval changed is restarted and keeps its last good set. rdtypes: the record
        type of a name ("AAAA" for IPv6 proxies, `record_type`), "A" when not given; a name whose
        type changed starts over with no addresses (the old ones are of the other family).
        """
        for key, rdtype in (rdtypes or {}).items():
            self._set_rdtype(key, rdtype)
        for key in list(self._intervals):
            if key not in names:
                self._stop(key)
                del self._intervals[key]
        for key in list(self._states):
            if key not in names:
                del self._states[key]
        loop = asyncio.get_running_loop()
        for key, interval_s in names.items():
            if self._intervals.get(key) == interval_s and key in self._tasks and key not in self._retyped:
                continue
            self._retyped.discard(key)
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

    async def resolve_now(
        self, proxy: str, hostname: str, notify: bool = False, rdtype: str | None = None
    ) -> Resolution | None:
        """Resolve one name at once and record the outcome in its status.

        Returns the new set, or None when the resolution failed (the last good set, if any, stays;
        see status()). The caller gets the answer directly, so on_change is called only when
        `notify` is true (and the set changed). rdtype: as in set_names (None: keep the name's type).
        """
        if rdtype is not None:
            self._set_rdtype((proxy, hostname), rdtype)
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

    def _set_rdtype(self, key: NameKey, rdtype: str) -> None:
        if rdtype not in FAMILIES:
            raise ValueError(f"record type must be one of {sorted(FAMILIES)}, got {rdtype!r}")
        state = self._states.setdefault(key, _NameState())
        if state.rdtype != rdtype:
            self._states[key] = fresh = _NameState()
            fresh.rdtype = rdtype
            self._retyped.add(key)

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
        state = self._states.setdefault(key, _NameState())
        rdtype = state.rdtype
        try:
            # The outer timeout is a safety net: a resolve function must never hang a task.
            answers = await within(self._timeout_s + 1.0, self._resolve_fn(hostname, rdtype))
            screened = screen_answers(answers, self.max_records, self._refuse, rdtype)
            self._announce(key, screened.problems(self.max_records))
            addresses = screened.addresses
            if not addresses:
                raise ResolveError(f"no usable {FAMILIES[rdtype][1]} address in the answer")
        except Exception as exc:  # every failure of any kind is a status, never an error of ours
            self._record_failure(key, describe_error(exc, self._timeout_s, rdtype))
            return None
        if self._states.get(key) is not state:
            return None  # the name was dropped or changed its type while this query ran
        old = state.addresses
        state.addresses = addresses
        if addresses != old:
            log.info("DNS %s (%s): %s -> %s", hostname, proxy, list(old), list(addresses))
            if notify and self._on_change is not None:
                try:
                    self._on_change(proxy, hostname, old, addresses)
                except AnswerRefused as exc:
                    state.addresses = old
                    self._record_failure(key, f"answer not applied: {exc}")
                    return None
                except Exception:
                    log.exception("DNS change callback failed for %s", hostname)
        state.last_success = self._clock()
        state.last_error = None
        state.consecutive_failures = 0
        return Resolution(hostname, addresses)

    def _announce(self, key: NameKey, refused: str) -> None:
        """Say what the screen refused when it differs from the last answer's (not every refresh)."""
        state = self._states.setdefault(key, _NameState())
        if refused == state.refused:
            return
        state.refused = refused
        if refused:
            log.warning("DNS %s (%s): %s", key[1], key[0], refused)
            if self._on_warning is not None:
                self._on_warning(key[0], key[1], refused)

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

    async def _query_dns(self, hostname: str, rdtype: str) -> tuple[str, ...]:
        if self._resolver is None:
            # Made on first use (not in __init__), so a missing resolv.conf is a failure status
            # of each name, retried at every refresh, not an exception at start.
            self._resolver = self._make_resolver()
        answer = await self._resolver.resolve(hostname, rdtype, search=False)
        return tuple(str(getattr(rdata, "address", "")) for rdata in answer)


# ---- IPv6 proxies: AAAA records ------------------------------------------------------------------


def record_type(vip: str) -> str:
    """The records a proxy's DNS backends resolve to: AAAA for an IPv6 VIP, A for an IPv4 one."""
    return "AAAA" if family(vip) == IPV6 else "A"
