# SPDX-License-Identifier: Apache-2.0
"""The console-time tests' engine: the real Engine over the in-memory dataplane (ConsoleEngine),
after a story played second by second on its manual clock, so that the history and the latency
windows it recorded have something to show.

Each second of the story: new connections to each backend in proportion to the effective weights
the engine composed (counters and latency histograms advanced through the memory dataplane's
helpers, as the data path counts them), a few real flows opened and closed (active flows, the access
log), the control tick, a sweep every 5 s, and the snapshot of the second (its history point).
What happens, in seconds before the end of a STORY_S story (a shorter story plays only its tail):
10.0.2.12 is drained from -820 s and back at -760 s, and its handshakes take ~50 ms from -500 s to
-380 s; 10.0.2.13 refuses new connections from -700 s (its circuit opens) and its health check
fails from -625 s; web drops a burst of connections for the per-source rate limit from -430 s to
-400 s; the configuration is reloaded at -300 s (nothing changed). The scene of ConsoleEngine
follows (its last 3 s).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from lbtui import model
from tests.support.console_engine import DNS1, DNS2, ROUTED, WEB1, WEB2, WEB3, ConsoleEngine

STORY_S = 960  # 16 minutes: a 15-minute chart is full
SHORT_S = 130  # enough for the sparklines' 2 minutes
DRAIN = (820, 760)
FAILING = 700
HEALTH_DOWN = 625
SLOW = (500, 380)
DROPS = (430, 400)
RELOAD = 300
SWEEP_EVERY_S = 5
POOL_CLIENT = "198.51.100"  # the story's real flows come from here


class TimeStory:
    """Plays the story (tests/support/console_engine.Story)."""

    def __init__(self, seconds: int = STORY_S) -> None:
        self.seconds = seconds
        self._carry: dict[int, float] = defaultdict(float)  # fractions of a connection, per backend id
        self._pool: list[tuple[Any, int]] = []  # real flows open: (flow, the second it closes)
        self._port = 1024
        self._t = 0  # seconds played
        self._mono = 0.0  # the manual clock when the story last made traffic

    def prepare(self, engine: ConsoleEngine) -> None:
        engine.probes.down.clear()  # 10.0.2.13 is healthy until the story says otherwise

    async def play(self, engine: ConsoleEngine) -> None:
        for ago in range(self.seconds, 0, -1):
            await self._second(engine, ago)

    async def step(self, engine: ConsoleEngine) -> None:
        await self._second(engine, 0)

    async def between(self, engine: ConsoleEngine) -> None:
        self._traffic(engine, engine.clock.mono - self._mono, 0)
        self._mono = engine.clock.mono
        engine.engine.tick()
        engine.engine.publish()

    # ---- one second -----------------------------------------------------------------------------

    async def _second(self, ce: ConsoleEngine, ago: int) -> None:
        e, dp = ce.engine, ce.dp
        self._t += 1
        t = self._t
        self._traffic(ce, 1.0, ago)
        if DROPS[1] <= ago <= DROPS[0]:
            dp.add_service_counters(e.topology.proxies["web"].service_id, drops={"rate_limit_source": 3})
        if t % 10 == 0:
            self._pool_flows(ce, t)
        ce.clock.advance(1.0)
        self._mono = ce.clock.mono
        e.tick()
        await self._events(ce, ago)
        if t % SWEEP_EVERY_S == 0:
            await e.sweep()
            dp.poll_events()
        e.publish()

    def _traffic(self, ce: ConsoleEngine, seconds: float, ago: int) -> None:
        """New connections of `seconds` to every group, at the story's rates of the moment."""
        t = self._t
        failing = 0 < ago <= FAILING
        slow = SLOW[1] <= ago <= SLOW[0]
        web = 60.0 * (1 + 0.35 * math.sin(2 * math.pi * t / 300) + 0.1 * math.sin(2 * math.pi * t / 7))
        dns = 15.0 * (1 + 0.3 * math.sin(2 * math.pi * t / 240 + 1.0))
        routed = 2.0 * (1 + 0.5 * math.sin(2 * math.pi * t / 180 + 2.0))
        self._connections(ce, "web", "default", web * seconds, failing, slow)
        self._connections(ce, "web", "192.168.0.0/16", routed * seconds, failing, slow)
        self._connections(ce, "dns", "default", dns * seconds, failing, slow)

    def _connections(
        self, ce: ConsoleEngine, proxy: str, group: str, rate: float, failing: bool, slow: bool
    ) -> None:
        """`rate` new connections this second, shared by the group's effective weights."""
        e, dp = ce.engine, ce.dp
        members = list(e.topology.proxies[proxy].groups[group].members.values())
        total = sum(m.effective for m in members)
        service = e.topology.proxies[proxy].service_id
        udp = proxy == "dns"
        for m in members:
            self._carry[m.id] += rate * m.effective / total if total else 0.0
            n = int(self._carry[m.id])
            self._carry[m.id] -= n
            if not n:
                continue
            if m.address == WEB3 and failing:  # refused: a RST answers each SYN
                dp.add_counters(m.id, new_flows=n, packets_in=n, bytes_in=60 * n, conn_failures=n)
                dp.add_service_counters(service, new_flows=n, packets_in=n, bytes_in=60 * n)
                continue
            page = int(120_000 * (1 + 0.5 * math.sin(2 * math.pi * self._t / 200)))  # bytes per response
            size = {"packets_in": 5 * n, "bytes_in": 400 * n, "packets_out": 90 * n, "bytes_out": page * n}
            if udp:
                size = {"packets_in": n, "bytes_in": 80 * n, "packets_out": n, "bytes_out": 240 * n}
            dp.add_counters(m.id, new_flows=n, handshakes=0 if udp else n, **size)
            dp.add_service_counters(service, new_flows=n, **size)
            spread = [(self._t * 7 + i * 13) % 10 for i in range(n)]  # 0..9, deterministic
            handshake = [48_000 + 400 * k if slow and m.address == WEB2 else 350 + 25 * k for k in spread]
            duration = [
                (1_200 if udp else 12_000) * (6 if slow and m.address == WEB2 else 1) + 300 * k
                for k in spread
            ]
            dp.add_latency(m.id, handshake_us=() if udp else handshake, duration_us=duration)

    def _pool_flows(self, ce: ConsoleEngine, t: int) -> None:
        """Every 10 s: a new real flow to web, and those older than a lifetime that varies close (one
        close per 10 s at most: long-lived, and too few to be the p99 of the durations)."""
        if self._pool and self._pool[0][1] <= t:  # the oldest, when its time has come
            ce.dp.finish(self._pool.pop(0)[0])
        self._port += 1
        flow = ce.dp.connect(f"{POOL_CLIENT}.{1 + self._port % 200}:{self._port}", "10.0.0.1:80")
        if flow is not None:
            ce.dp.answer(flow)
            ce.dp.transfer(flow, bytes_in=400, bytes_out=20_000)
            lifetime = 200 + 60 * math.sin(2 * math.pi * t / 900)  # below tcp_timeout_s: never idle
            self._pool.append((flow, t + int(lifetime)))

    async def _events(self, ce: ConsoleEngine, ago: int) -> None:
        e = ce.engine
        if ago == DRAIN[0]:
            await e.execute(model.Drain("web", WEB2))
        elif ago == DRAIN[1]:
            await e.execute(model.Undrain("web", WEB2))
        elif ago == HEALTH_DOWN:
            ce.probes.down[WEB3] = "connection refused"
            await ce._settle(lambda: ce._health(WEB3) is model.Health.DOWN, "10.0.2.13 down")
        elif ago == RELOAD:
            await e.execute(model.Reload())


def make_engine(*, story_s: int = SHORT_S, **knobs: Any) -> ConsoleEngine:
    """A ConsoleEngine after `story_s` seconds of the story (0: none); knobs as ConsoleEngine's
    (grow, traffic, access_log, circuit_breaker, loops). Call shutdown() when done."""
    knobs.setdefault("loops", False)
    return ConsoleEngine(story=TimeStory(story_s) if story_s else None, **knobs)


__all__ = ["DNS1", "DNS2", "ROUTED", "STORY_S", "WEB1", "WEB2", "WEB3", "TimeStory", "make_engine"]
