# SPDX-License-Identifier: Apache-2.0
"""`lbtui --no-ui`: the engine without the console, for systemd and scripts.

Logs go to stderr (structured key=value lines), a one-line stats summary is logged periodically,
SIGHUP reloads the configuration, SIGTERM/SIGINT stop cleanly (programs detached). Under systemd
(Type=notify) the summary is also the unit's STATUS=, and WATCHDOG=1 is sent while the engine's
control loop is alive (its heartbeat is fresh), so a stuck loop gets the service restarted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from lbtui import model
from lbtui.sdnotify import Notifier
from lbtui.stopping import Stopper

log = logging.getLogger("lbtui")

STATUS_INTERVAL_S = 5.0  # systemd's STATUS= (`systemctl status`), independent of the stats log lines


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


def status_line(snap: model.Snapshot) -> str:
    """The unit's STATUS=: what `systemctl status lbtui` shows."""
    backends = [b for svc in snap.services for b in svc.all_backends()]
    serving = sum(1 for b in backends if b.effective_weight > 0)
    rates = [b.new_flows_per_s for b in backends if b.new_flows_per_s is not None]
    return (
        f"{len(snap.services)} proxies, {serving}/{len(backends)} backends with weight, "
        f"{snap.conntrack.flows} flows, {sum(rates):.1f} new/s"
    )


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


def run_headless(
    handle: model.EngineHandle,
    stats_interval_s: float = 10.0,
    is_alive: Callable[[], bool] | None = None,
    notifier: Notifier | None = None,
    heartbeat: Callable[[], float] | None = None,
    stopper: Stopper | None = None,
) -> int:
    """Block until a signal or a Stop command ends the engine; returns the exit code.

    heartbeat: time.monotonic() of the engine loop's last control tick (WATCHDOG=1 only while fresh).
    stopper: the signals, taken before the start (lbtui.stopping); without one, they are taken here.
    """
    notifier = notifier or Notifier({})
    if stopper is None:
        stopper = Stopper()
        stopper.install(hup_stops=False)
    watchdog_s = notifier.watchdog_s if heartbeat is not None else None
    next_ping = time.monotonic()
    tick = min(0.2, watchdog_s / 4) if watchdog_s else 0.2
    next_stats = time.monotonic() + stats_interval_s
    next_status = time.monotonic() + STATUS_INTERVAL_S
    try:
        while not stopper.wait(tick):
            if stopper.reload.is_set():
                stopper.reload.clear()
                result = handle.submit(model.Reload())
                log.info("SIGHUP reload: %s", result.message if result.ok else "refused: " + result.message)
            if is_alive is not None and not is_alive():
                log.info("engine stopped")
                break
            now = time.monotonic()
            if watchdog_s is not None and heartbeat is not None and now >= next_ping:
                # the engine loop ticks every 0.25 s; a heartbeat older than half the watchdog
                # interval means it is stuck: stay silent and let systemd restart us
                if now - heartbeat() < watchdog_s / 2:
                    notifier.watchdog()
                next_ping = now + watchdog_s / 4
            if now >= next_status and notifier.enabled:
                next_status = now + STATUS_INTERVAL_S
                try:
                    notifier.status(f"running: {status_line(handle.snapshot())}")
                except Exception as exc:
                    log.warning("status: %s", exc)
            if now >= next_stats:
                next_stats = now + stats_interval_s
                try:
                    log.info(stats_line(handle.snapshot()))
                except Exception as exc:
                    log.warning("stats: %s", exc)
        else:
            log.info("%s: stopping", stopper.describe())
    finally:
        notifier.stopping("stopping: detaching the programs")
        handle.close()
    return 0
