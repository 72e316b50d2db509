#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Metrics endpoint: scrape time of a realistic page with N idle connections held open.

A Metrics instance over a snapshot of P proxies x B backends (with latency histograms) serves on
127.0.0.1; the bench opens N connections that send nothing (idle keep-alives, stuck clients), then
times S scrapes (a new connection each, as Prometheus after an idle close). No root needed.

    .venv/bin/python bench/metrics_scrape.py [--proxies 4] [--backends 50] [--idle 0,500,5000]
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lbtui import model  # noqa: E402
from lbtui.dataplane.structs import HIST_BOUNDS_MS, HIST_BUCKETS  # noqa: E402
from lbtui.observe.histogram import histogram_from_counts  # noqa: E402
from lbtui.observe.metrics import Metrics  # noqa: E402


def snapshot(proxies: int, backends: int) -> model.Snapshot:
    counts = [i % 7 for i in range(HIST_BUCKETS)]
    services, latency = [], []
    for p in range(proxies):
        views = []
        for b in range(backends):
            address = f"10.{p}.{b // 250}.{b % 250 + 1}:8080"
            views.append(
                model.BackendView(
                    proxy=f"svc{p}",
                    address=address,
                    group="default",
                    configured_weight=1,
                    effective_weight=1000,
                    counters=model.Counters(10**6, 10**9, 10**6, 10**9, 10**5, 10**5, 10),
                    active_flows=100,
                    health=model.Health.UP,
                    circuit=model.Circuit.CLOSED,
                )
            )
            hist = histogram_from_counts(HIST_BOUNDS_MS, counts, 1234.0)
            latency.append(model.LatencyView(proxy=f"svc{p}", backend=address, handshake=hist, duration=hist))
        services.append(
            model.ServiceView(
                name=f"svc{p}",
                vip=f"192.0.2.{p + 1}",
                port=80,
                protocol="tcp",
                algorithm="maglev",
                interfaces=("eth0",),
                backends=tuple(views),
                drops={"no_backend": 1, "conntrack_full": 0, "rate_limit_source": 5},
            )
        )
    return model.Snapshot(
        taken_at=time.time(),
        started_at=time.time() - 60,
        config_path=None,
        services=tuple(services),
        conntrack=model.ConntrackSummary(entries=10**5, flows=5 * 10**4, capacity=2 * 262144),
        flows=(),
        latency=tuple(latency),
    )


def scrape(address: tuple[str, int]) -> tuple[float, int]:
    t0 = time.perf_counter()
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        size = 0
        while chunk := sock.recv(1 << 16):
            size += len(chunk)
    return time.perf_counter() - t0, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proxies", type=int, default=4)
    ap.add_argument("--backends", type=int, default=50)
    ap.add_argument("--idle", default="0,500,5000")
    ap.add_argument("--scrapes", type=int, default=30)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    snap = snapshot(args.proxies, args.backends)
    metrics = Metrics(lambda: snap)
    metrics.start("127.0.0.1:0")
    address = metrics.server_address
    assert address is not None
    t0 = time.perf_counter()
    page = metrics.render()
    render_ms = (time.perf_counter() - t0) * 1000
    rows = []
    try:
        for n in (int(x) for x in args.idle.split(",")):
            idle = [socket.create_connection(address, timeout=10) for _ in range(n)]
            times = sorted(scrape(address)[0] * 1000 for _ in range(args.scrapes))
            server = metrics.server
            assert server is not None
            rows.append(
                {
                    "idle_connections": n,
                    "median_ms": round(statistics.median(times), 2),
                    "p90_ms": round(times[int(len(times) * 0.9) - 1], 2),
                    "max_ms": round(times[-1], 2),
                    "server_open": server.open_connections,
                    "evicted": server.evicted,
                }
            )
            for sock in idle:
                sock.close()
    finally:
        metrics.stop()
    print(json.dumps({"page_bytes": len(page), "render_ms": round(render_ms, 1), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
