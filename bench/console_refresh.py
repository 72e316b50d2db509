#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Console refresh with 1,000,000 established flows in conntrack (issues: operator console, 15).

Runs a real Engine (BPF programs loaded and attached to a veth in a private namespace), fills its
established conntrack table with N flows (2 entries each, written with batch syscalls, counted in
lb_backend_stats as the data path counts the flows it establishes), then measures:
  - the engine's sweep (the transient table and one slice of the established one),
  - the engine's CPU share and RSS while idle-running with that map (sweep every
    settings.sweep_interval_s, control tick every 250 ms, no front end asking for flows),
  - the snapshot fetch a console makes every refresh,
  - the console's refresh (snapshot fetch + table updates), headless with App.run_test, and the
    process CPU share and RSS with the console running, on the backends pane (no flow asked for)
    then on the conntrack pane,
  - a filtered, sorted flow query over every flow (what the console's `/` and `s` ask for),
  - removing every entry at once through lbtui_reap (the sweep's compare-and-delete).

    sudo .venv/bin/python bench/console_refresh.py [--flows 500000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

NS = "lbtbench-ct"


def in_namespace() -> None:
    """Re-exec inside a private namespace with a veth to attach to."""
    if os.environ.get("LBTUI_BENCH_NS") == NS:
        return
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        subprocess.run(
            ["ip", "-n", NS, "link", "add", "bv0", "type", "veth", "peer", "name", "bv1"], check=True
        )
        for dev in ("bv0", "bv1"):
            subprocess.run(["ip", "-n", NS, "link", "set", dev, "up"], check=True)
        env = dict(os.environ, LBTUI_BENCH_NS=NS)
        r = subprocess.run(["ip", "netns", "exec", NS, sys.executable, *sys.argv], env=env)
        sys.exit(r.returncode)
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


CONFIG = """
[settings]
max_connections = {max_conn}
control_socket = "/run/lbtui/lbtbench.sock"
sweep_interval_s = 2.0
[settings.metrics]
enabled = false
[[proxy]]
name = "web"
interfaces = ["bv0"]
vip = "10.0.0.1"
port = 80
[[proxy.backend]]
address = "10.0.2.11:8080"
weight = 3
[[proxy.backend]]
address = "10.0.2.12:8080"
weight = 2
[[proxy.backend]]
address = "10.0.2.13:8080"
weight = 1
"""


def fill(engine, flows: int) -> None:  # type: ignore[no-untyped-def]
    """Write `flows` established TCP flows (forward + reverse entries) into conntrack."""
    import numpy as np
    from bcc.libbcc import lib

    from lbtui.dataplane import structs
    from lbtui.dataplane.records import CT_ENTRY_DTYPE, CT_KEY_DTYPE

    table = engine.dataplane.loaded.table("lb_ct_established")
    now = time.monotonic_ns()
    vip = structs.ip_to_be32("10.0.0.1")
    backends = [
        (
            structs.ip_to_be32(f"10.0.2.1{i}"),
            socket.htons(8080),
            engine.backend_id("web", f"10.0.2.1{i}:8080"),
        )
        for i in (1, 2, 3)
    ]
    chunk = 100_000
    for start in range(0, flows, chunk):
        n = min(chunk, flows - start)
        idx = np.arange(start, start + n, dtype=np.uint64)
        client_ip = (np.uint64(0x0A640000) + idx // np.uint64(60000)).astype(np.uint32)  # 10.100.x.y
        client_ip = client_ip.byteswap()  # network byte order in memory
        client_port = (np.uint16(1024) + (idx % np.uint64(60000)).astype(np.uint16)).byteswap()
        b = (idx % np.uint64(3)).astype(np.int64)
        bip = np.array([x[0] for x in backends], dtype=np.uint32)[b]
        bport = np.array([x[1] for x in backends], dtype=np.uint16)[b]
        bid = np.array([x[2] for x in backends], dtype=np.uint32)[b]
        for direction in (structs.DIR_FORWARD, structs.DIR_REVERSE):
            keys = np.zeros(n, dtype=CT_KEY_DTYPE)
            vals = np.zeros(n, dtype=CT_ENTRY_DTYPE)
            if direction == structs.DIR_FORWARD:
                keys["saddr"], keys["daddr"], keys["sport"], keys["dport"] = (
                    client_ip,
                    vip,
                    client_port,
                    socket.htons(80),
                )
            else:
                keys["saddr"], keys["daddr"], keys["sport"], keys["dport"] = (
                    bip,
                    client_ip,
                    bport,
                    client_port,
                )
            keys["proto"] = structs.IPPROTO_TCP
            vals["client_ip"], vals["vip"], vals["backend_ip"] = client_ip, vip, bip
            vals["client_port"], vals["vip_port"], vals["backend_port"] = client_port, socket.htons(80), bport
            vals["proto"], vals["dir"], vals["backend_id"], vals["service_id"] = (
                structs.IPPROTO_TCP,
                direction,
                bid,
                0,
            )
            vals["flags"] = structs.CT_F_SYN | structs.CT_F_SYNACK | structs.CT_F_EST
            vals["created_ns"] = vals["last_seen_ns"] = now
            vals["packets"] = 10 + (idx % np.uint64(1000))
            vals["bytes"] = 1000 + (idx % np.uint64(100000))
            count = ctypes.c_uint32(n)
            r = lib.bpf_update_batch(
                table.map_fd,
                ctypes.c_void_p(keys.ctypes.data),
                ctypes.c_void_p(vals.ctypes.data),
                ctypes.byref(count),
            )
            if r != 0:
                raise OSError(ctypes.get_errno(), f"batch update failed after {count.value}")
    # the data path counts each flow it establishes (live flows = established - ended): do the same
    stats = engine.dataplane.loaded.table("lb_backend_stats")
    for i, (_, _, bid) in enumerate(backends):
        key = stats.Key(bid)
        per_cpu = stats.getvalue(key)
        per_cpu[0].established += len(range(i, flows, 3))
        stats[key] = per_cpu


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def measure(flows: int, seconds: float) -> dict[str, object]:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from lbtui.app import LbtuiApp
    from lbtui.config import load_config
    from lbtui.engine import Engine, kernel_dataplane
    from lbtui.runner import EngineRunner

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(CONFIG.format(max_conn=max(1024, flows + flows // 4)))
    config = load_config(f.name)
    runner = EngineRunner(Engine(config, kernel_dataplane(config)))
    runner.start()
    engine = runner.engine
    out: dict[str, object] = {"flows": flows}
    try:
        t0 = time.perf_counter()
        fill(engine, flows)
        out["fill_s"] = round(time.perf_counter() - t0, 2)
        sweeps = []
        for _ in range(3):
            t = time.perf_counter()
            asyncio.run_coroutine_threadsafe(engine.sweep(), runner.loop).result(120)
            sweeps.append(time.perf_counter() - t)
        out["sweep_ms_median"] = round(statistics.median(sweeps) * 1000, 1)
        # the engine alone: CPU share over a window (sweeps every 2 s, control tick every 250 ms)
        c0, w0 = cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        out["engine_cpu_share"] = round((cpu_seconds() - c0) / (time.monotonic() - w0), 3)
        out["engine_rss_mb"] = round(rss_mb(), 1)
        snap = runner.snapshot()
        out["conntrack_flows"] = snap.conntrack.flows  # the data path's live counts
        out["conntrack_entries"] = snap.conntrack.entries
        out["sweeps_per_pass"] = round(2 * flows / max(1, engine.sweeper.last_slice), 1)

        from lbtui.model import FlowQuery

        fetch = []
        for _ in range(10):  # no flow query: asking for flows would make the engine read them all
            t = time.perf_counter()  # for 30 s (engine/flowquery.py), into the console's measurements
            runner.snapshot()
            fetch.append(time.perf_counter() - t)
        out["snapshot_fetch_ms_median"] = round(statistics.median(fetch) * 1000, 2)
        # the console on top, headless: refresh = snapshot fetch on a worker + table updates
        app = LbtuiApp(runner, refresh_s=1.0)
        applied: list[float] = []
        original = app._apply

        def timed(snapshot, events):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            original(snapshot, events)
            applied.append(time.perf_counter() - t)

        app._apply = timed  # type: ignore[method-assign]
        async with app.run_test(size=(160, 48)) as pilot:
            # the backends pane first (where the console opens): no flow is asked for
            c0, w0 = cpu_seconds(), time.monotonic()
            await asyncio.sleep(seconds)
            out["backends_pane_cpu_share"] = round((cpu_seconds() - c0) / (time.monotonic() - w0), 3)
            out["backends_pane_rss_mb"] = round(rss_mb(), 1)
            await pilot.press("2")  # the conntrack pane, the heaviest table
            c0, w0 = cpu_seconds(), time.monotonic()
            await asyncio.sleep(seconds)
            out["with_console_cpu_share"] = round((cpu_seconds() - c0) / (time.monotonic() - w0), 3)
            out["conntrack_pane_rss_mb"] = round(rss_mb(), 1)
            lat = []
            for _ in range(5):
                t = time.perf_counter()
                await pilot.press("s")  # a key press is handled while refreshes go on
                await pilot.pause()
                lat.append(time.perf_counter() - t)
            out["key_response_ms_median"] = round(statistics.median(lat) * 1000, 1)
        out["refreshes"] = len(applied)
        out["refresh_apply_ms_median"] = round(statistics.median(applied) * 1000, 2) if applied else None
        out["refresh_apply_ms_max"] = round(max(applied) * 1000, 2) if applied else None
        out["rss_mb_after_console"] = round(rss_mb(), 1)
        # a console's filter, answered by the engine over every flow (then cached until the next read)
        query = FlowQuery(text="10.100.0.7: established", sort="age")
        runner.snapshot(query)  # asks the sweeps to keep every flow from now on
        sweeps = []
        for _ in range(3):
            t = time.perf_counter()
            asyncio.run_coroutine_threadsafe(engine.sweep(), runner.loop).result(120)
            sweeps.append(time.perf_counter() - t)
        out["sweep_ms_median_keeping_flows"] = round(statistics.median(sweeps) * 1000, 1)
        t = time.perf_counter()
        found = runner.snapshot(query)
        out["query_ms_first"] = round((time.perf_counter() - t) * 1000, 1)
        t = time.perf_counter()
        runner.snapshot(query)
        out["query_ms_cached"] = round((time.perf_counter() - t) * 1000, 2)
        out["query_matched"] = found.flows_matched
        # expiring everything at once: removal through lbtui_reap (compare-and-swap per entry)
        maps = engine.dataplane.maps
        keys, vals = maps.conntrack_arrays()
        keys, created = keys.copy(), vals["created_ns"].copy()
        t = time.perf_counter()
        out["reaped_entries"] = maps.reap_conntrack(keys, created)
        out["reap_all_ms"] = round((time.perf_counter() - t) * 1000, 1)
    finally:
        runner.close()
        os.unlink(f.name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=500_000, help="flows (2 conntrack entries each)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    in_namespace()
    out = asyncio.run(measure(args.flows, args.seconds))
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:28} {v}")


if __name__ == "__main__":
    main()
