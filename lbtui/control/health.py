# SPDX-License-Identifier: Apache-2.0
"""Active health checks: TCP connect or HTTP GET on one asyncio loop (docs/architecture.md#who-gets-traffic).

- `check_tcp` / `check_http`: one check, never raising; the result says what happened. A DSR
  backend is checked through the tunnel (`Tunnel`): the connection goes to the VIP and the data path
  sends it to that backend inside IPIP (docs/scale-out.md#health-checks-through-the-tunnel).
- `HealthTracker`: rise/fall hysteresis and the slow-start ramp of one backend (pure, injected clock).
- `HealthChecker`: one asyncio task per target running checks every interval and reporting each
  result (and any health change) through a callback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from lbtui.addresses import format_endpoint, host_text
from lbtui.deadline import within
from lbtui.model import Health

log = logging.getLogger(__name__)

# An UP backend in slow start never gets a factor below this, so it takes some traffic at once.
MIN_RAMP = 0.01
_MAX_STATUS_LINE = 8192


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    latency_s: float
    detail: str  # "connected", "HTTP 200", "HTTP 503 (expected 200)", "timeout after 1s", ...


# ---- single checks ------------------------------------------------------------------------------


def _failure(started: float, timeout_s: float, exc: BaseException) -> CheckResult:
    latency = time.monotonic() - started
    if isinstance(exc, TimeoutError):
        return CheckResult(False, latency, f"timeout after {timeout_s:g}s")
    if isinstance(exc, ConnectionRefusedError):
        return CheckResult(False, latency, "connection refused")
    if isinstance(exc, OSError) and exc.strerror:
        return CheckResult(False, latency, exc.strerror.lower())
    return CheckResult(False, latency, f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Tunnel:
    """Check a backend through the DSR tunnel: connect to `vip` on `interface`, the socket marked with
    `mark` and its priority set to the backend's IPv4 address (what the TC program encapsulates)."""

    vip: str
    interface: str
    mark: int


async def _open(
    ip: str, port: int, tunnel: Tunnel | None, limit: int = 2**16
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to ip:port, or through `tunnel` to the backend ip (on the VIP)."""
    if tunnel is None:
        return await asyncio.open_connection(ip, port, limit=limit)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, tunnel.mark)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, int(ipaddress.IPv4Address(ip)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, tunnel.interface.encode())
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (tunnel.vip, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=limit)


async def check_tcp(ip: str, port: int, timeout_s: float, tunnel: Tunnel | None = None) -> CheckResult:
    """Healthy when a TCP connection to ip:port (through `tunnel`: to the VIP, delivered to ip) is
    established within timeout_s."""
    started = time.monotonic()
    try:
        _, writer = await within(timeout_s, _open(ip, port, tunnel))
    except Exception as exc:  # any failure to connect is a failed check, never an error of ours
        return _failure(started, timeout_s, exc)
    latency = time.monotonic() - started
    writer.close()
    return CheckResult(True, latency, "connected")


async def _http_status_line(ip: str, port: int, request: bytes, tunnel: Tunnel | None) -> bytes:
    reader, writer = await _open(ip, port, tunnel, limit=_MAX_STATUS_LINE)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.readline()
    finally:
        # Not awaiting wait_closed(): this may run while being cancelled by the timeout.
        writer.close()


def _parse_status(line: bytes) -> int | None:
    parts = line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        return None
    code = parts[1]
    if len(code) != 3 or not code.isdigit():
        return None
    return int(code)


async def check_http(
    ip: str,
    port: int,
    path: str,
    host: str | None,
    expected: Sequence[int],
    timeout_s: float,
    tunnel: Tunnel | None = None,
) -> CheckResult:
    """GET path over HTTP/1.1 with Connection: close; healthy when the status is in `expected`.

    Only the status line is read. `host` is the Host header; None means the backend's address.
    """
    if host is None:
        host = host_text(ip) if port == 80 else format_endpoint(ip, port)  # IPv6 in brackets (RFC 7230)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lbtui-health\r\nAccept: */*\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    started = time.monotonic()
    try:
        line = await within(timeout_s, _http_status_line(ip, port, request, tunnel))
    except Exception as exc:
        return _failure(started, timeout_s, exc)
    latency = time.monotonic() - started
    status = _parse_status(line)
    if status is None:
        shown = line[:60].decode("latin-1").strip()
        return CheckResult(False, latency, f"bad status line {shown!r}" if shown else "no response")
    if status in expected:
        return CheckResult(True, latency, f"HTTP {status}")
    wanted = ",".join(str(s) for s in expected)
    return CheckResult(False, latency, f"HTTP {status} (expected {wanted})")


# ---- hysteresis and slow start ------------------------------------------------------------------


class HealthTracker:
    """Turns check results into a health state: `rise` successes in a row -> UP, `fall` failures in a
    row -> DOWN. Starts UNKNOWN, which counts as up for traffic until the first fall. After a DOWN ->
    UP change the factor ramps linearly from 0 to 1 over slow_start_s (at least MIN_RAMP)."""

    def __init__(
        self, rise: int, fall: int, slow_start_s: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self.rise = max(1, rise)
        self.fall = max(1, fall)
        self.slow_start_s = slow_start_s
        self._health = Health.UNKNOWN
        self._successes = 0  # in a row
        self._failures = 0  # in a row
        self._up_since: float | None = None  # set when coming back from DOWN

    @property
    def health(self) -> Health:
        return self._health

    @property
    def consecutive_successes(self) -> int:
        return self._successes

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def reconfigure(self, rise: int, fall: int, slow_start_s: float = 0.0) -> None:
        """New thresholds (config reload), keeping the current state."""
        self.rise = max(1, rise)
        self.fall = max(1, fall)
        self.slow_start_s = slow_start_s

    def observe(self, ok: bool) -> tuple[Health, Health] | None:
        """Record one check result; (old, new) when the health state changes, else None."""
        if ok:
            self._successes += 1
            self._failures = 0
        else:
            self._failures += 1
            self._successes = 0
        old = self._health
        if ok and old is not Health.UP and self._successes >= self.rise:
            # A backend that was never down took full traffic already: no ramp from UNKNOWN.
            self._up_since = self._clock() if old is Health.DOWN else None
            self._health = Health.UP
        elif not ok and old is not Health.DOWN and self._failures >= self.fall:
            self._up_since = None
            self._health = Health.DOWN
        else:
            return None
        return old, self._health

    @property
    def in_slow_start(self) -> bool:
        """True while the factor is still ramping (the caller should recompute weights)."""
        return self._ramp() is not None

    @property
    def factor(self) -> float:
        if self._health is Health.DOWN:
            return 0.0
        ramp = self._ramp()
        return 1.0 if ramp is None else ramp

    def _ramp(self) -> float | None:
        if self._health is not Health.UP or self._up_since is None or self.slow_start_s <= 0:
            return None
        elapsed = self._clock() - self._up_since
        if elapsed >= self.slow_start_s:
            return None
        return max(MIN_RAMP, elapsed / self.slow_start_s)


# ---- running checks -----------------------------------------------------------------------------


class HealthConfigLike(Protocol):
    """The [proxy.health] settings (config.HealthConfig fits). Optional attributes read if present:
    `port` (check this port instead of the target's) and `slow_start_s`."""

    @property
    def type(self) -> str: ...  # "tcp" | "http"
    @property
    def path(self) -> str: ...
    @property
    def http_host(self) -> str | None: ...
    @property
    def interval_ms(self) -> int: ...
    @property
    def timeout_ms(self) -> int: ...
    @property
    def rise(self) -> int: ...
    @property
    def fall(self) -> int: ...
    @property
    def expected_status(self) -> Sequence[int]: ...


@dataclass(frozen=True)
class Target:
    ip: str
    port: int
    cfg: HealthConfigLike
    tunnel: Tunnel | None = None  # a DSR backend: checked on the VIP through the tunnel


async def run_check(target: Target) -> CheckResult:
    """One check of the kind the target's config asks for (on cfg.port when the config sets one)."""
    cfg = target.cfg
    port = getattr(cfg, "port", None) or target.port
    timeout_s = cfg.timeout_ms / 1000
    if cfg.type == "http":
        return await check_http(
            target.ip, port, cfg.path, cfg.http_host, cfg.expected_status, timeout_s, target.tunnel
        )
    return await check_tcp(target.ip, port, timeout_s, target.tunnel)


OnResult = Callable[[str, CheckResult, tuple[Health, Health] | None], None]
CheckFn = Callable[[Target], Awaitable[CheckResult]]  # run_check, or a stand-in for tests


def _slow_start_s(cfg: HealthConfigLike) -> float:
    return float(getattr(cfg, "slow_start_s", 0.0) or 0.0)


class HealthChecker:
    """Checks many targets on the running asyncio loop: one task per target, no threads.

    `on_result(key, result, change)` is called on the loop after every check; `change` is the
    (old, new) health when it changed. A target whose address stays the same across set_targets()
    keeps its tracker state (a reload does not make a down backend look unknown again).
    """

    def __init__(
        self,
        on_result: OnResult,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        check: CheckFn = run_check,
    ) -> None:
        self._on_result = on_result
        self._check = check
        self._clock = clock
        self._rng = rng or random.Random()
        self._targets: dict[str, Target] = {}
        self._trackers: dict[str, HealthTracker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def tracker(self, key: str) -> HealthTracker | None:
        return self._trackers.get(key)

    def keys(self) -> list[str]:
        return list(self._targets)

    def set_targets(self, targets: Mapping[str, Target], paused: Collection[str] = ()) -> None:
        """Start checking new targets, stop removed ones, restart changed ones. Call on the loop.

        paused: targets not checked for now; their trackers keep the last state until they resume."""
        for key in list(self._targets):
            if key not in targets:
                self._stop(key)
                del self._targets[key]
                del self._trackers[key]
        for key, target in targets.items():
            old = self._targets.get(key)
            run = key not in paused
            if old == target and (key in self._tasks) == run:
                continue
            self._stop(key)
            cfg = target.cfg
            tracker = self._trackers.get(key)
            if tracker is not None and old is not None and (old.ip, old.port) == (target.ip, target.port):
                if old != target:
                    tracker.reconfigure(cfg.rise, cfg.fall, _slow_start_s(cfg))
            else:
                tracker = HealthTracker(cfg.rise, cfg.fall, _slow_start_s(cfg), clock=self._clock)
                self._trackers[key] = tracker
            self._targets[key] = target
            if run:
                self._tasks[key] = asyncio.get_running_loop().create_task(
                    self._run(key, target, tracker), name=f"health {key}"
                )

    async def close(self) -> None:
        """Stop every check and wait until the tasks have ended."""
        for key in list(self._tasks):
            self._stop(key)
        self._targets.clear()
        self._trackers.clear()
        pending = list(self._stopping)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _stop(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is None:
            return
        task.cancel()
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _run(self, key: str, target: Target, tracker: HealthTracker) -> None:
        interval_s = max(target.cfg.interval_ms / 1000, 0.001)
        loop = asyncio.get_running_loop()
        # Spread the checks over the interval so many backends are not probed in one burst.
        await asyncio.sleep(self._rng.uniform(0, interval_s))
        while True:
            started = loop.time()
            try:
                result = await self._check(target)
            except Exception as exc:  # a bug in a check must not end the task
                log.exception("health check of %s failed unexpectedly", key)
                result = CheckResult(False, 0.0, f"internal error: {exc}")
            change = tracker.observe(result.ok)
            try:
                self._on_result(key, result, change)
            except Exception:
                log.exception("health result callback failed for %s", key)
            await asyncio.sleep(max(0.0, interval_s - (loop.time() - started)))
