# SPDX-License-Identifier: Apache-2.0
"""The real Engine, over the in-memory dataplane, as the console and the control socket meet it.

`ConsoleEngine` is a model.EngineHandle: the engine runs on its own thread (lbtui.runner, as
`lbtui` embeds it) with a small production-like topology (tests/support/engine.TWO_PROXIES) and
traffic made through the memory dataplane: established, closing and UDP flows, counters and rates,
latency histograms, a backend down by its health check and its circuit open, an access log. Time
is a ManualClock and health checks are answered in a fixed order, so what it shows is the same on
every run (the console's snapshot pictures depend on it).

The handle itself records what front ends asked (commands, flow queries, history queries) and can
fail on purpose (`snapshot_error`, `history_error`); `grow=True` closes one more flow on every
snapshot() call, as a live instance's access log grows. A `Story` (tests/support/console_time.py)
plays seconds of traffic and events before the scene, so the engine's history has something to
show; with a story, every second of the scene has its snapshot (a point), and `grow` moves the clock
on by one more second of the story on every snapshot() call.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from lbtui import model
from lbtui.control.health import CheckResult, Target
from lbtui.dataplane.announce import MemoryVipRoutes
from lbtui.engine import Engine
from lbtui.runner import EngineRunner
from tests.support.engine import TWO_PROXIES, ManualClock, Probes, make_engine

T = TypeVar("T")
START = 1_700_000_000.0
UPTIME_S = 3723.0  # the snapshot is taken 1h02m03s after the start
WEB1, WEB2, WEB3, ROUTED = "10.0.2.11:8080", "10.0.2.12:8080", "10.0.2.13:8080", "10.0.3.10:8080"
DNS1, DNS2 = "10.0.4.10:53", "10.0.4.11:53"
HEALTH_ORDER = (WEB1, WEB2, WEB3, ROUTED)
LOGGED_PORT = 41000  # client port of the first flow in the access log; each next one is +1

SETTINGS = """
[settings]
table_size = 97
max_connections = 131072
drain_timeout_s = 10
sweep_interval_s = 0.1
control_socket = "/run/lbtui/console.sock"
[settings.metrics]
enabled = false
[settings.access_log]
format = "json"
file = "{log}"
"""


class GatedProbes(Probes):
    """Health checks that wait until the test lets each backend answer, so health changes happen
    in a fixed order."""

    def __init__(self) -> None:
        super().__init__(down={WEB3: "connection refused"})
        self.open: set[str] = set()

    async def check(self, target: Target) -> CheckResult:
        while f"{target.ip}:{target.port}" not in self.open:
            await asyncio.sleep(0.005)
        return await super().check(target)


class Story(Protocol):
    """Seconds of traffic and events played on the engine before the scene (ConsoleEngine)."""

    seconds: int

    def prepare(self, engine: ConsoleEngine) -> None:
        """Before the engine starts (health-check answers)."""

    async def play(self, engine: ConsoleEngine) -> None:
        """`seconds` seconds, one at a time, each ending with its snapshot."""

    async def step(self, engine: ConsoleEngine) -> None:
        """One more second of steady traffic, ending with its snapshot."""

    async def between(self, engine: ConsoleEngine) -> None:
        """Steady traffic for the time the scene moved the clock on since the last snapshot, the
        control tick and a snapshot."""


def without_table(text: str, header: str) -> str:
    """TOML text without one table (its header line up to the next header)."""
    out, skipping = [], False
    for line in text.splitlines():
        if line.startswith("["):
            skipping = line.strip() == header
        if not skipping:
            out.append(line)
    return "\n".join(out) + "\n"


class ConsoleEngine:
    def __init__(
        self,
        *,
        grow: bool = False,
        loops: bool = True,
        big_flows: int = 0,
        story: Story | None = None,
        traffic: bool = True,
        access_log: bool = True,
        circuit_breaker: bool = True,
        announce: bool = False,
    ) -> None:
        """traffic=False: no flows at all; access_log, circuit_breaker=False: not configured;
        announce=True: [settings.announce] on, its routes in `self.routes` (MemoryVipRoutes)."""
        self.grow = grow
        self.story = story
        self.traffic = traffic
        self.commands: list[model.Command] = []
        self.flow_queries: list[model.FlowQuery | None] = []
        self.history_queries: list[model.HistoryQuery] = []
        self.snapshot_calls = 0
        self.snapshot_error: Exception | None = None
        self.history_error: Exception | None = None
        self.keeps_history = True  # False: answers as an instance from before history did
        self.closed = False
        self._lock = threading.Lock()
        self._logged = 0
        self.dir = tempfile.mkdtemp(prefix="lbtce-")
        self.config_path = os.path.join(self.dir, "demo.toml")  # the console shows the file's name
        if story is not None:
            # named relative to the directory while the story plays, so the events that name the
            # file (a reload) read the same on every run
            self.config_path = "demo.toml"
        self.access_log_path = os.path.join(self.dir, "access.log")
        text = SETTINGS.format(log=self.access_log_path) + TWO_PROXIES
        if not access_log:
            text = without_table(text, "[settings.access_log]")
        if not circuit_breaker:
            text = without_table(text, "[proxy.circuit_breaker]")
        self.routes = MemoryVipRoutes()
        if announce:
            text = text.replace("[[proxy]]", "[settings.announce]\nenabled = true\n\n[[proxy]]", 1)
        self.clock = ManualClock(wall=START)
        self.probes = GatedProbes()
        if story is not None:
            story.prepare(self)
        here = os.getcwd()
        os.chdir(self.dir)
        try:
            engine, self.dp = make_engine(
                text,
                clock=self.clock,
                probes=self.probes,
                loops=loops,
                path=self.config_path,
                announce_routes=lambda table, proto: self.routes,
            )
            self.engine: Engine = engine
            self.runner = EngineRunner(engine)
            self.runner.start()
            self.on_loop(self._setup(big_flows))
        finally:
            os.chdir(here)

    # ---- the scene ------------------------------------------------------------------------------

    def on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the engine's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.runner.loop).result(30)

    async def _settle(self, predicate: Any, what: str) -> None:
        for _ in range(2000):
            if predicate():
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"timed out waiting for {what}")

    def _health(self, address: str) -> model.Health:
        m = next(m for m in self.engine.topology.backends.values() if m.address == address)
        return m.factors.health_state

    async def _setup(self, big_flows: int) -> None:
        e, dp, clock = self.engine, self.dp, self.clock
        for address in HEALTH_ORDER:  # one at a time: the events come in this order
            self.probes.open.add(address)
            await self._settle(lambda a=address: self._health(a) is not model.Health.UNKNOWN, address)
        # the story, then the last seconds before the snapshot: WEB3's circuit opens, the traffic of 2.9 s
        story = self.story
        clock.advance(UPTIME_S - 3.15 - (story.seconds if story else 0))
        if story is not None:
            await story.play(self)
        e.tick()  # the circuit breakers' baseline
        dp.add_counters(e.backend_id("web", WEB3), handshakes=3, conn_failures=12)
        clock.advance(0.25)
        e.tick()  # WEB3's circuit opens; the rates' baseline
        await self._second_done()
        if self.traffic:
            self._traffic()
            await self._second_done()
        if big_flows:
            web = e.topology.proxies["web"].groups["default"]
            dp.add_established(big_flows, "10.0.0.1:80", [m.id for m in web.members.values() if m.effective])
        for _ in range(2):
            clock.advance(1)
            await self._second_done()
        e.tick()
        e.queries.ask()  # a console looks at the flows: the sweep reads them
        await e.sweep()
        dp.poll_events()
        await self._settle(self._logged_all, "the access log")
        e.publish()

    async def _second_done(self) -> None:
        """With a story every second has its snapshot (the history's point), as the loop makes them."""
        if self.story is not None:
            await self.story.between(self)

    def _logged_all(self) -> bool:
        """The last flow closed is in the access log (lines are written in order)."""
        hub = self.engine.observability
        if not self._logged or hub is None or hub.access_log is None:
            return True
        tail = self._tail()
        return bool(tail) and f'"client_port":{LOGGED_PORT + self._logged - 1},' in tail[-1]

    def _traffic(self) -> None:
        dp, clock = self.dp, self.clock
        for i in range(36):  # web: established flows of every age up to a second, some bigger
            f = dp.connect(f"192.0.2.{10 + i % 23}:{40000 + 7 * i}", "10.0.0.1:80")
            assert f is not None
            dp.answer(f)
            dp.transfer(f, bytes_in=600 + (i * 7919) % 50_000, bytes_out=1500 + (i * 104_729) % 2_000_000)
            if i % 6 == 5:
                clock.advance(0.15)  # 0.9 s in all
        for i in range(4):  # routed by the client's source address
            f = dp.connect(f"192.168.7.{i + 1}:{50000 + i}", "10.0.0.1:80")
            assert f is not None and f.backend_address == ROUTED
            dp.answer(f)
            dp.transfer(f, bytes_in=900, bytes_out=40_000 * (i + 1))
        for i in range(8):  # dns
            f = dp.connect(f"192.0.2.{100 + i}:{53000 + i}", "10.0.0.1:53", protocol="udp")
            assert f is not None
            dp.answer(f)  # the backend's reply: established
            dp.transfer(f, bytes_in=80, bytes_out=240, packets_out=1)
        for _ in range(3):  # closed flows: the access log
            self._close_one()
        syn = dp.connect("192.0.2.250:60000", "10.0.0.1:80")  # a SYN not answered yet
        assert syn is not None
        for address, hs in ((WEB1, 420), (WEB2, 470), (ROUTED, 900)):
            proxy_id = self.engine.backend_id(
                "web", address, "default" if address != ROUTED else "192.168.0.0/16"
            )
            dp.add_latency(proxy_id, handshake_us=[hs] * 40 + [hs * 8] * 2)

    def _close_one(self) -> None:
        f = self.dp.connect(f"192.0.2.200:{LOGGED_PORT + self._logged}", "10.0.0.1:80")
        assert f is not None
        self.dp.answer(f)
        self.dp.transfer(f, bytes_in=300, bytes_out=4000 + 17 * self._logged)
        self.dp.finish(f)
        self._logged += 1

    def _tail(self) -> Sequence[str]:
        hub = self.engine.observability
        return hub.access_log.tail(200) if hub is not None and hub.access_log is not None else ()

    async def _grow(self) -> None:
        if self.story is not None:
            await self.story.step(self)
        self._close_one()  # the last line of the access log, once written
        self.dp.poll_events()
        await self._settle(self._logged_all, "the access log")
        self.engine.publish()

    # ---- EngineHandle ---------------------------------------------------------------------------

    def snapshot(self, flows: model.FlowQuery | None = None) -> model.Snapshot:
        with self._lock:
            self.snapshot_calls += 1
            self.flow_queries.append(flows)
            if self.snapshot_error is not None:
                raise self.snapshot_error
            if self.grow and self.runner.alive:
                self.on_loop(self._grow())
        # the version is fixed: the console's snapshot pictures must not change with every release
        snap = replace(self.runner.snapshot(flows), version="0.0.0")
        return snap if self.keeps_history else replace(snap, history_s=0)

    def submit(self, command: model.Command, timeout: float = 10.0) -> model.CommandResult:
        with self._lock:
            self.commands.append(command)
        return self.runner.submit(command, timeout)

    def events_since(self, seq: int, limit: int = 1000) -> Sequence[model.Event]:
        return self.runner.events_since(seq, limit)

    def history(self, query: model.HistoryQuery) -> model.HistoryAnswer:
        with self._lock:
            self.history_queries.append(query)
            if self.history_error is not None:
                raise self.history_error
        if not self.keeps_history:  # an instance from before history: SocketEngineHandle's answer
            return model.HistoryAnswer(taken_at=self.runner.snapshot().taken_at)
        return self.runner.history(query)

    def close(self) -> None:
        """What a front end's close does (the console's quit leaves it to the test)."""
        self.closed = True

    # ---- for tests ------------------------------------------------------------------------------

    def backend(self, proxy: str, address: str) -> model.BackendView:
        self.on_loop(self._publish())
        b = self.runner.snapshot().backend(proxy, address)
        assert b is not None, address
        return b

    async def _publish(self) -> None:
        self.engine.publish()

    def sweep(self) -> None:
        """One conntrack sweep now (and a new snapshot), as the sweep loop would make it."""
        self.on_loop(self._sweep())

    async def _sweep(self) -> None:
        await self.engine.sweep()
        self.engine.publish()

    def shutdown(self) -> None:
        """Stop the engine and remove what it wrote."""
        self.runner.close()
        shutil.rmtree(self.dir, ignore_errors=True)
