# SPDX-License-Identifier: Apache-2.0
"""The real Engine over the in-memory dataplane, for tests without root.

`ManualClock` is the engine's and the dataplane's clock (tests step it); `Probes` stands in for DNS
lookups and health checks (answers set by the test, nothing leaves the process). `start_engine`
builds and starts an engine from TOML text; with loops=False no background task runs and the test
steps `engine.tick()` and `await engine.sweep()` itself.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

from lbtui.config import load_config, parse_config
from lbtui.control.health import CheckResult, Target
from lbtui.dataplane.memory import MemoryDataplane, MemoryPins
from lbtui.engine import Engine, dataplane_spec

START_WALL = 1_700_000_000.0

BASE_SETTINGS = """
[settings]
table_size = 97
max_connections = 4096
control_socket = "/run/lbtui/unit.sock"
[settings.metrics]
enabled = false
"""


WATCHED_SETTINGS = BASE_SETTINGS.replace("[settings]\n", "[settings]\nwatch_config = true\n", 1)


class ManualClock:
    """Wall and monotonic time that move only when told to."""

    def __init__(self, wall: float = START_WALL, mono: float = 1000.0):
        self.wall = wall
        self.mono = mono

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def monotonic_ns(self) -> int:
        return int(self.mono * 1e9)

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@dataclass
class Probes:
    """DNS answers and health-check results, as the test sets them."""

    dns: dict[str, tuple[str, ...]] = field(default_factory=dict)  # host -> A records
    dns_failing: set[str] = field(default_factory=set)
    down: dict[str, str] = field(default_factory=dict)  # "ip:port" -> failure detail
    checks: list[str] = field(default_factory=list)  # every check made, "ip:port"
    targets: list[Target] = field(default_factory=list)  # every check made, as the checker asked
    queries: list[tuple[str, str]] = field(default_factory=list)  # every DNS query, (host, record type)

    async def resolve(self, host: str, rdtype: str = "A") -> tuple[str, ...]:
        self.queries.append((host, rdtype))
        if host in self.dns_failing or host not in self.dns:
            raise TimeoutError("no answer")
        return self.dns[host]

    async def check(self, target: Target) -> CheckResult:
        address = f"{target.ip}:{target.port}"
        self.checks.append(address)
        self.targets.append(target)
        if address in self.down:
            return CheckResult(False, 0.002, self.down[address])
        return CheckResult(True, 0.001, "connected")


def config_file(text: str, path: str | None = None) -> str:
    """`text` (with BASE_SETTINGS unless it has its own [settings]) in a file (`path`, else a new
    temporary one); its path."""
    if "[settings]" not in text:
        text = BASE_SETTINGS + text
    if path is None:
        fd, path = tempfile.mkstemp(suffix=".toml")
        os.close(fd)
    with open(path, "w") as f:
        f.write(text)
    return path


def make_engine(
    text: str,
    *,
    clock: ManualClock | None = None,
    probes: Probes | None = None,
    pins: MemoryPins | None = None,
    interfaces: set[str] | None = None,
    loops: bool = False,
    from_file: bool = True,
    path: str | None = None,
    **kwargs: object,
) -> tuple[Engine, MemoryDataplane]:
    """An engine (not started) over a fresh memory dataplane for the configuration `text` (written
    to `path`, else to a temporary file; from_file=False: no file at all)."""
    clock = clock or ManualClock()
    probes = probes or Probes()
    if from_file:
        config = load_config(config_file(text, path))
    else:
        config = replace(parse_config(BASE_SETTINGS + text), path=None)
    dp = MemoryDataplane(
        dataplane_spec(config), pins=pins, clock_ns=clock.monotonic_ns, available_interfaces=interfaces
    )
    engine = Engine(
        config,
        dp,
        clock=clock,
        resolve=probes.resolve,
        health_check=probes.check,
        loops=loops,
        allow_stdout=False,
        **kwargs,  # type: ignore[arg-type]
    )
    return engine, dp


@asynccontextmanager
async def running(text: str, **kwargs: object) -> AsyncIterator[tuple[Engine, MemoryDataplane]]:
    """A started engine; stopped (and its file removed) afterwards."""
    engine, dp = make_engine(text, **kwargs)  # type: ignore[arg-type]
    await engine.start()
    try:
        yield engine, dp
    finally:
        await engine.stop()
        if engine.config.path and os.path.exists(engine.config.path):
            os.unlink(engine.config.path)


async def settle(predicate: Callable[[], object], what: str, timeout_s: float = 5.0) -> None:
    """Let the loop run (health checks, DNS refreshes) until predicate() holds."""
    for _ in itertools.count():
        if predicate():
            return
        if _ * 0.005 > timeout_s:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def messages(engine: Engine, kind: str | None = None) -> list[str]:
    return [e.message for e in engine.events_since(0, 100_000) if kind is None or e.kind == kind]


# Two proxies like a small production setup: TCP "web" (three backends, a source route, health
# checks and a circuit breaker) and UDP "dns" (two backends, per-source rate limit).
TWO_PROXIES = """
[[proxy]]
name = "web"
interfaces = ["lb0"]
vip = "10.0.0.1"
port = 80
[proxy.health]
type = "tcp"
interval_ms = 20
timeout_ms = 10
rise = 1
fall = 1
[proxy.circuit_breaker]
error_rate = 0.5
min_requests = 10
window_s = 10
open_s = 30
half_open_successes = 3
syn_timeout_ms = 3000
[proxy.rate_limit]
per_source = { rate = 100, burst = 200 }
per_backend = { rate = 5000, burst = 10000 }
[[proxy.backend]]
address = "10.0.2.11:8080"
weight = 3
[[proxy.backend]]
address = "10.0.2.12:8080"
weight = 2
[[proxy.backend]]
address = "10.0.2.13:8080"
weight = 1
[[proxy.source_route]]
cidr = "192.168.0.0/16"
backends = [{ address = "10.0.3.10:8080", weight = 1 }]

[[proxy]]
name = "dns"
interfaces = ["lb0"]
vip = "10.0.0.1"
port = 53
protocol = "udp"
algorithm = "maglev"
[[proxy.backend]]
address = "10.0.4.10:53"
weight = 1
[[proxy.backend]]
address = "10.0.4.11:53"
weight = 1
"""
