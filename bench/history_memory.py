#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Memory and CPU of the engine's history over hours of synthetic traffic, on its recording path.

Runs the real Engine over the in-memory dataplane with --backends backends in --proxies TCP proxies
on a manual clock, and every simulated second (no sleeping) advances each backend's counters and
latency histograms through the memory dataplane (a few new connections, handshakes of 0.3-5 ms,
durations of 5-80 ms, a drop now and then), runs the control tick and publishes the second's
snapshot, which lbtui/engine/history.py records (every series of model.HISTORY_SERIES per backend
and proxy, drops per reason, the 10 s / 1 min / 5 min windows). With --churn N, N backends per
simulated minute are removed and N new ones added (as DNS answers that change would): their series
must age out. Reports after each simulated half-hour the memory the history holds (every object
reachable from the engine's HistoryRecorder: its float32 rings, the latency windows' samples, the
last counters and windows per target, counted once each with sys.getsizeof) and the process's RSS;
then the CPU per recorded second of the recorder and of the whole publication (snapshot included),
once the longest window is full.

    .venv/bin/python bench/history_memory.py [--backends 100] [--proxies 4] [--hours 2] [--keep-s 3600]
                                             [--churn N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import sys
import tempfile
import time
from array import array
from collections import deque
from dataclasses import fields, is_dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's root
from lbtui import model  # noqa: E402
from lbtui.config import load_config  # noqa: E402
from lbtui.dataplane.memory import MemoryDataplane  # noqa: E402
from lbtui.engine import Engine, dataplane_spec  # noqa: E402
from tests.support.engine import ManualClock  # noqa: E402

T0 = 1_700_000_000.0


def address(i: int) -> str:
    return f"10.1.{i // 250}.{i % 250 + 1}:8080"


def config_text(proxies: int, backends: int, keep_s: int) -> str:
    lines = [
        "[settings]",
        "max_connections = 4096",
        "table_size = 1009",
        f"history_s = {keep_s}",
        'control_socket = "/run/lbtui/bench-history.sock"',
        "[settings.metrics]",
        "enabled = false",
    ]
    for p in range(proxies):
        lines += [
            "[[proxy]]",
            f'name = "p{p}"',
            'interfaces = ["lb0"]',
            'vip = "10.0.0.1"',
            f"port = {80 + p}",
        ]
        for i in range(p, backends, proxies):
            lines += ["[[proxy.backend]]", f'address = "{address(i)}"']
    return "\n".join(lines) + "\n"


class Simulation:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.clock = ManualClock(T0)
        fd, self.path = tempfile.mkstemp(suffix=".toml")
        os.close(fd)
        with open(self.path, "w") as f:
            f.write(config_text(args.proxies, args.backends, args.keep_s))
        config = load_config(self.path)
        self.dp = MemoryDataplane(dataplane_spec(config), clock_ns=self.clock.monotonic_ns)
        self.engine = Engine(config, self.dp, clock=self.clock, loops=False, allow_stdout=False)
        self.next_backend = args.backends
        self.s = 0
        self.recorder_s = self.publish_s = 0.0
        observe = self.engine.recorder.observe

        def timed(snap: model.Snapshot) -> model.Snapshot:
            started = time.process_time()
            try:
                return observe(snap)
            finally:
                self.recorder_s += time.process_time() - started

        self.engine.recorder.observe = timed  # type: ignore[method-assign]

    async def start(self) -> None:
        await self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()
        os.unlink(self.path)

    async def second(self) -> None:
        """One simulated second: traffic on every backend, the tick, the publication."""
        e, dp, s = self.engine, self.dp, self.s
        for m in list(e.topology.backends.values()):
            n = 2 + (s + m.id) % 5
            spread = [(s * 7 + m.id * 13 + k * 31) % 100 for k in range(n)]
            dp.add_counters(
                m.id, new_flows=n, handshakes=n, packets_in=6 * n, bytes_in=500 * n, packets_out=8 * n,
                bytes_out=9000 * n, conn_failures=1 if (s + m.id) % 97 == 0 else 0,
            )  # fmt: skip
            dp.add_latency(
                m.id,
                handshake_us=[300 + 47 * k for k in spread],
                duration_us=[5000 + 750 * k for k in spread],
            )
        if s % 13 == 0:
            dp.add_service_counters(e.topology.proxies["p0"].service_id, drops={"rate_limit_source": 2})
        self.clock.advance(1.0)
        started = time.process_time()
        e.tick()
        e.publish()
        self.publish_s += time.process_time() - started
        if self.args.churn and s % 60 == 59:
            await self._churn()
        self.s += 1

    async def _churn(self) -> None:
        members = sorted(self.engine.topology.backends.values(), key=lambda m: m.id)
        for m in members[: self.args.churn]:
            await self.engine.execute(model.RemoveBackend(m.proxy, m.address))
            await self.engine.execute(model.AddBackend(m.proxy, address(self.next_backend)))
            self.next_backend += 1


def deep_size(*roots: object) -> int:
    """Bytes of every object reachable from roots through containers, dataclasses and __slots__
    (each counted once); strings and numbers shared with the rest of the process are counted too."""
    seen: set[int] = set()
    stack = list(roots)
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack += list(obj.keys()) + list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset, deque)):
            stack += list(obj)
        elif isinstance(obj, array) or isinstance(obj, (str, bytes, int, float, bool)) or obj is None:
            continue
        elif is_dataclass(obj):
            stack += [getattr(obj, f.name) for f in fields(obj)]
        else:
            stack += [getattr(obj, n) for n in getattr(type(obj), "__slots__", ()) if hasattr(obj, n)]
            stack += list(getattr(obj, "__dict__", {}).values())
    return total


def history_bytes(engine: Engine) -> int:
    r = engine.recorder
    return deep_size(r.store, r.windows, r._seen, r._views, r._retired)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=int, default=100)
    parser.add_argument("--proxies", type=int, default=4)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--keep-s", type=int, default=3600)
    parser.add_argument("--churn", type=int, default=0, help="backends replaced per simulated minute")
    args = parser.parse_args()

    sim = Simulation(args)
    await sim.start()
    seconds = int(args.hours * 3600)
    # CPU is timed once the longest window is full (a run shorter than that: all of it)
    warm = max(model.LATENCY_WINDOWS_S) if seconds > max(model.LATENCY_WINDOWS_S) else 0
    for s in range(seconds):
        if s == warm:
            sim.recorder_s = sim.publish_s = 0.0
        await sim.second()
        if (s + 1) % 1800 == 0:
            gc.collect()
            store = sim.engine.recorder.store
            print(
                json.dumps(
                    {
                        "simulated_h": round((s + 1) / 3600, 2),
                        "history_mib": round(history_bytes(sim.engine) / 2**20, 2),
                        "ring_buffers_mib": round(store.nbytes() / 2**20, 2),
                        "targets": len(store.targets),
                        "backends_live": len(sim.engine.topology.backends),
                        "rss_mib": round(rss_mib(), 1),
                    }
                ),
                flush=True,
            )
    series = sum(
        len(sim.engine.history(model.HistoryQuery(p, b)).histories[0].series)
        for p, b in sim.engine.recorder.store.targets
    )
    await sim.stop()
    timed = max(1, seconds - warm)
    print(
        json.dumps(
            {
                "backends": args.backends,
                "proxies": args.proxies,
                "series": series,
                "keep_s": args.keep_s,
                "churn_per_min": args.churn,
                "recorder_cpu_ms_per_second": round(sim.recorder_s / timed * 1000, 3),
                "publish_cpu_ms_per_second": round(sim.publish_s / timed * 1000, 3),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
