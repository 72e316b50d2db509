#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Memory and CPU of the console's history (lbtui/observe/history.py) over hours of synthetic traffic.

Feeds a HistoryStore (every series of model.HISTORY_SERIES for each backend and proxy, plus two drop
reasons per proxy) and a LatencyWindows (32-bucket handshake and duration histograms per backend)
one point per second, as an engine does, for --hours of simulated time (no sleeping), and reports
the memory they hold (tracemalloc: every Python allocation they made) after each simulated
half-hour, and the CPU per simulated second.

    .venv/bin/python bench/history_memory.py [--backends 100] [--hours 2] [--keep-s 3600]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
import tracemalloc

from lbtui import model
from lbtui.observe.history import HistoryStore, LatencyWindows

BUCKETS = 32
BOUNDS_MS = tuple(2**k / 1000 for k in range(BUCKETS - 1))
T0 = 1_700_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=int, default=100)
    parser.add_argument("--proxies", type=int, default=4)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--keep-s", type=int, default=3600)
    parser.add_argument(
        "--cpu-seconds", type=int, default=600, help="simulated seconds timed without tracing"
    )
    args = parser.parse_args()

    proxies = [f"p{i}" for i in range(args.proxies)]
    backends = [
        (proxies[i % args.proxies], f"10.1.{i // 250}.{i % 250 + 1}:8080") for i in range(args.backends)
    ]
    sim = Simulation(proxies, backends, args.keep_s)
    seconds = int(args.hours * 3600)

    tracemalloc.start()  # phase 1: memory, every allocation traced
    base = tracemalloc.get_traced_memory()[0]
    sim.build()
    for s in range(seconds):
        sim.second(s)
        if (s + 1) % 1800 == 0:
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - base
            print(
                json.dumps(
                    {
                        "simulated_h": round((s + 1) / 3600, 2),
                        "held_mib": round(held / 2**20, 2),
                        "ring_buffers_mib": round(sim.store.nbytes() / 2**20, 2),
                    }
                ),
                flush=True,
            )
    tracemalloc.stop()

    cpu = Simulation(proxies, backends, args.keep_s)  # phase 2: CPU per recorded second, untraced
    cpu.build()
    for s in range(args.cpu_seconds):
        cpu.second(s)
    series = sum(len(sim.store.history(t).series) for t in sim.targets)
    print(
        json.dumps(
            {
                "backends": args.backends,
                "proxies": args.proxies,
                "series": series,
                "keep_s": args.keep_s,
                "cpu_ms_per_second": round(cpu.busy / args.cpu_seconds * 1000, 3),
                "of_which_windows_ms": round(cpu.busy_windows / args.cpu_seconds * 1000, 3),
            }
        )
    )


class Simulation:
    """What an engine does each second: read cumulative histograms, compute windows, record points."""

    def __init__(self, proxies: list[str], backends: list[tuple[str, str]], keep_s: int) -> None:
        self.rng = random.Random(1)
        self.proxies = proxies
        self.backends = backends
        self.targets: list[tuple[str, str | None]] = [(p, None) for p in proxies] + list(backends)
        self.keep_s = keep_s
        self.busy = self.busy_windows = 0.0

    def build(self) -> None:
        self.store = HistoryStore(keep_s=self.keep_s)
        self.windows = LatencyWindows(BOUNDS_MS)
        self.cumulative = {b: ([0] * BUCKETS, [0] * BUCKETS) for b in self.backends}

    def second(self, s: int) -> None:
        rng = self.rng
        # synthetic traffic: a few handshakes and closes per backend per second, random latency
        for b in self.backends:
            hs, du = self.cumulative[b]
            for _ in range(3):
                hs[min(BUCKETS - 1, int(rng.expovariate(1 / 9)))] += 1
                du[min(BUCKETS - 1, int(rng.expovariate(1 / 14)))] += 1
        points: dict[tuple[str, str | None], dict[str, float | None]] = {
            t: {n: rng.random() * 1000 for n in NAMES} for t in self.targets
        }
        for p in self.proxies:
            points[(p, None)].update({"drops.rate_limit": float(s % 7), "drops.no_backend": 0.0})
        started = time.process_time()
        for b in self.backends:
            hs, du = self.cumulative[b]
            self.windows.observe(T0 + s, b, (hs, 0.0), (du, 0.0))
            self.windows.windows(b)
        windows_done = time.process_time()
        self.store.record(T0 + s, points)
        self.busy += time.process_time() - started
        self.busy_windows += windows_done - started


NAMES = list(model.HISTORY_SERIES)


if __name__ == "__main__":
    main()
