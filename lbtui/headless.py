# SPDX-License-Identifier: Apache-2.0
"""`lbtui --no-ui`: the engine without the console, for systemd and scripts.

Logs go to stderr (structured key=value lines), a one-line stats summary is logged periodically,
SIGHUP reloads the configuration, SIGTERM/SIGINT stop cleanly (programs detached).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from lbtui import model

log = logging.getLogger("lbtui")


def stats_line(snap: model.Snapshot) -> str:
    parts = [f"flows={snap.conntrack.flows}", f"ct_entries={snap.conntrack.entries}"]
    for svc in snap.services:
        per_backend = " ".join(
            f"{b.address}:{b.counters.new_flows}/{b.active_flows}" for b in svc.all_backends()
        )
        drops = sum(svc.drops.values())
        parts.append(
            f"[{svc.name} new={svc.counters.new_flows} active={svc.active_flows} "
            f"in={svc.counters.bytes_in}B out={svc.counters.bytes_out}B drops={drops} "
            f"backends(new/active)={per_backend}]"
        )
    return "stats " + " ".join(parts)


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


def run_headless(
    handle: model.EngineHandle, stats_interval_s: float = 10.0, is_alive: Callable[[], bool] | None = None
) -> int:
    """Block until a signal or a Stop command ends the engine; returns the exit code."""
    stop = threading.Event()
    reload = threading.Event()

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        reload.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    next_stats = time.monotonic() + stats_interval_s
    try:
        while not stop.is_set():
            stop.wait(0.2)
            if reload.is_set():
                reload.clear()
                result = handle.submit(model.Reload())
                log.info("SIGHUP reload: %s", result.message if result.ok else "refused: " + result.message)
            if is_alive is not None and not is_alive():
                log.info("engine stopped")
                break
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + stats_interval_s
                try:
                    log.info(stats_line(handle.snapshot()))
                except Exception as exc:
                    log.warning("stats: %s", exc)
    finally:
        handle.close()
    return 0
