#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""How fast the router follows a load-balancer host, in the scale-out lab (docs/scale-out.md).

Every time is measured at the router: from the moment of the event to the moment the router's
kernel route for the VIP has (or no longer has) the host as a next hop, polled over netlink every
~2 ms (lbtui.dataplane.announce.RouteReader). Events, each on one host, --reps times:

  announce       lbtui adds the VIP's route to its table (VipRoutes.announce)        -> host appears
  withdraw       lbtui deletes it (VipRoutes.withdraw: a clean stop, no usable backend, an operator)
  bird-stopped   BIRD stops cleanly (SIGTERM: it sends a Cease NOTIFICATION)         -> host gone
  bird-killed    BIRD is killed (SIGKILL: the kernel closes its TCP session)
  host-hung      BIRD is frozen (SIGSTOP): the link stays up, nothing answers; BFD 3 x 100 ms
  link-down      the router's end of the host's link goes down (a port shut, a cable pulled)
  host-link-down the host's end goes down (the router sees the carrier go)
and the way back for each (BIRD restarted, SIGCONT, link up): a restarted BIRD learns the VIP route
lbtui left in the kernel table and announces it again. With --no-bfd the sessions rely on the hold
timer (3 s) alone, as with a router without BFD. Finally the ECMP spread: new connections from one
client (one source address, new source ports) counted per host.

With --lbtui, lbtui itself runs on every host ([settings.announce], NAT forwarding, health checks
every 100 ms; tests/support/scaleout_lbtui.py) and decides, and the events are what make it withdraw:

  clean stop     SIGTERM to lbtui (it withdraws before it detaches)       / lbtui started again
  no backend     every backend unreachable from the host (health checks)  / reachable again
  operator       `lbtui ctl announce withdraw`                            / `... announce`
  host death     lbtui and BIRD SIGKILLed together                        / BIRD and lbtui started

    sudo flock /tmp/lbtui-e2e.lock .venv/bin/python bench/scaleout_bgp.py [--reps 5] [--no-bfd] [--lbtui]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's root
from lbtui.bird import BirdControl  # noqa: E402
from lbtui.scaleout_lab import VIP, ScaleOutSpec  # noqa: E402
from tests.support.scaleout import ScaleOutClientLab  # noqa: E402
from tests.support.scaleout_lbtui import LbtuiHosts  # noqa: E402

POLL_S = 0.001


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(
    lab: ScaleOutClientLab, action: Callable[[], object], present: bool, host: int, limit: float
) -> float:
    """Seconds from `action` to the host being (present) or not being a next hop at the router."""
    addr = lab.host_ip(host)
    t0 = time.monotonic()
    # the action runs beside the polling: one that blocks (a process that exits, one that starts)
    # must not add its own duration to the router's
    worker = threading.Thread(target=action)
    worker.start()
    while (addr in lab.router_nexthops()) != present:
        if time.monotonic() - t0 > limit:
            raise TimeoutError(f"host {host} {'did not appear' if present else 'did not go'} within {limit}s")
        time.sleep(POLL_S)
    took = time.monotonic() - t0
    worker.join()
    return took


def all_announced(lab: ScaleOutClientLab, by_lbtui: bool = False) -> None:
    for i in lab.host_ids:
        if not by_lbtui:
            lab.host_routes(i).announce(VIP)
    deadline = time.monotonic() + 30
    while lab.router_nexthops() != {lab.host_ip(i) for i in lab.host_ids}:
        if time.monotonic() > deadline:
            raise TimeoutError("not every host is a next hop at the router")
        time.sleep(0.01)
    time.sleep(0.5)  # let BFD sessions come up too after a restart


def events(lab: ScaleOutClientLab) -> dict[str, tuple[Callable[[int], object], Callable[[int], object]]]:
    def bird(sig: int) -> Callable[[int], object]:
        return lambda i: lab.signal_bird(lab.ns_host(i), sig)

    def host_link(i: int, up: bool) -> None:
        lab.run(lab.ns_host(i), "ip", "link", "set", lab.host_iface(i), "up" if up else "down")
        if up:  # the host's routes over the link went with it
            lab.run(lab.ns_host(i), "ip", "route", "replace", "default", "via", lab.host_gateway(i))

    return {
        "withdraw / announce": (
            lambda i: lab.host_routes(i).withdraw(VIP),
            lambda i: lab.host_routes(i).announce(VIP),
        ),
        "bird-stopped / restarted": (bird(signal.SIGTERM), lab.start_bird_host),
        "bird-killed / restarted": (bird(signal.SIGKILL), lab.start_bird_host),
        "host-hung / continued": (bird(signal.SIGSTOP), bird(signal.SIGCONT)),
        "link-down / up (router end)": (
            lambda i: lab.set_host_link(i, up=False),
            lambda i: lab.set_host_link(i, up=True),
        ),
        "link-down / up (host end)": (lambda i: host_link(i, False), lambda i: host_link(i, True)),
    }


def lbtui_events(hosts: LbtuiHosts) -> dict[str, tuple[Callable[[int], object], Callable[[int], object]]]:
    return {
        "lbtui: clean stop / started (BCC compile included)": (hosts.stop, hosts.start),
        "lbtui: no usable backend / reachable again": (
            lambda i: hosts.backends_reachable(i, False),
            lambda i: hosts.backends_reachable(i, True),
        ),
        "lbtui: ctl announce withdraw / announce": (
            lambda i: hosts.ctl(i, "announce", "withdraw"),
            lambda i: hosts.ctl(i, "announce", "announce"),
        ),
        "lbtui: host death (lbtui + BIRD killed) / revived": (hosts.kill_host, hosts.revive_host),
    }


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:,.0f} ({min(values) * 1000:,.0f}-{max(values) * 1000:,.0f})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--prefix", default="bsx")
    p.add_argument("--no-bfd", action="store_true", help="BGP sessions without BFD (hold timer 3 s)")
    p.add_argument("--connections", type=int, default=300, help="new connections for the ECMP spread")
    p.add_argument("--json", metavar="FILE", help="write every sample here")
    p.add_argument("--lbtui", action="store_true", help="lbtui on every host decides (its events only)")
    a = p.parse_args()
    if os.geteuid() != 0:
        log("needs root")
        return 3
    lab = ScaleOutClientLab(ScaleOutSpec(prefix=a.prefix, bfd=not a.no_bfd))
    hosts = LbtuiHosts(lab)
    hosts.remove_pins()
    samples: dict[str, dict[str, list[float]]] = {}
    spread: dict[str, int] = {}
    got = {"errors": 0}
    try:
        lab.up()
        # with lbtui: backends on every address, so its health checks reach them on their own
        lab.start_backends(http_port=80, udp_port=5353, bind="0.0.0.0" if a.lbtui else VIP)
        for i in lab.host_ids:
            if a.lbtui:
                hosts.start(i)
            else:
                lab.start_relay(i)
        router = BirdControl(lab.bird_socket(lab.ns_router))
        deadline = time.monotonic() + 30
        while sum(s.established for s in router.bgp_sessions()) < lab.spec.hosts:
            if time.monotonic() > deadline:
                raise TimeoutError("BGP sessions did not come up")
            time.sleep(0.05)
        for name, (down, up) in (lbtui_events(hosts) if a.lbtui else events(lab)).items():
            gone, back = [], []
            for rep in range(a.reps):
                host = 1 + rep % lab.spec.hosts
                all_announced(lab, by_lbtui=a.lbtui)
                gone.append(timed(lab, lambda down=down, host=host: down(host), False, host, 30))
                back.append(timed(lab, lambda up=up, host=host: up(host), True, host, 60))
            samples[name] = {"gone": gone, "back": back}
            log(f"{name}: gone {ms(gone)} ms, back {ms(back)} ms")
        if not a.lbtui:
            all_announced(lab)
            before = {i: len(lab.relayed_flows(i)) for i in lab.host_ids}
            got = lab.http_requests(a.connections, new_conn=True)
            spread = {f"host {i}": len(lab.relayed_flows(i)) - before[i] for i in lab.host_ids}
    finally:
        hosts.stop_all()
        lab.down()

    bfd = "without BFD (hold time 3 s)" if a.no_bfd else "BFD 3 x 100 ms, hold time 3 s"
    print(f"\nRouter's kernel route for {VIP}, {bfd}; median (min-max) ms of {a.reps} runs:\n")
    print("| event / recovery | host gone from the route | host back in the route |")
    print("|---|---:|---:|")
    for name, s in samples.items():
        print(f"| {name} | {ms(s['gone'])} | {ms(s['back'])} |")
    if spread:
        print(
            f"\nECMP spread of {a.connections} new connections from one client: {spread}; "
            f"errors {got['errors']}"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"samples": samples, "spread": spread, "bfd": not a.no_bfd}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
