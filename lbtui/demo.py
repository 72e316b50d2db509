# SPDX-License-Identifier: Apache-2.0
"""`lbtui demo`: a live load balancer to look at, in one command.

Builds the lab (client namespaces, the load-balancer namespace, three backends answering with their
names over both IPv4 and IPv6), serves an IPv4 VIP and an IPv6 VIP (10.0.0.1 and fd00:10::1, HTTP
and UDP each), starts light background traffic to both that tells a story every 4 minutes (a slow
backend, a short failure burst that opens and closes a circuit), writes an access log, and runs
lbtui on the lab's client-facing interfaces, with the console or headless. Everything is removed on
exit, including leftovers of a crashed earlier run.

The engine must run inside the lab's LB namespace (XDP/TC attach by interface of the current
namespace), so the demo re-executes lbtui there: `ip netns exec <prefix>lb python -m lbtui -c CFG`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from lbtui.addresses import FAMILY_NAMES, IPV4, IPV6
from lbtui.dataplane.bpffs import remove_pins
from lbtui.engine import PIN_ROOT
from lbtui.lab import DUAL_STACK_BIND, Lab, LabSpec, TrafficGenerator
from lbtui.stopping import Stopper

log = logging.getLogger(__name__)

HEALTH_PORT = 8081  # health checks on a port of their own: a failure burst on :8080 leaves them up
HEALTH = f"""
[proxy.health]
type = "http"
path = "/healthz"
port = {HEALTH_PORT}
interval_ms = 1000
timeout_ms = 500
rise = 2
fall = 2

[proxy.circuit_breaker]
error_rate = 0.5
min_requests = 10
window_s = 10
open_s = 10
half_open_successes = 3
"""


def demo_config(lab: Lab, access_log: str) -> str:
    """The lab's configuration with health checks, a circuit breaker and an access log (CLF): proxies
    "web" and "udp" on the IPv4 VIP, their twins "web6" and "udp6" on the IPv6 VIP."""
    base = lab.config_toml(weights=(3, 2, 1), extra_proxy_toml=HEALTH, ipv6_twins=True)
    return base + f'\n[settings.access_log]\nformat = "clf"\nfile = "{access_log}"\n'


# The background traffic's story, repeated every CYCLE_S seconds so that the charts, the latency
# windows and the circuit pane always have something recent to show: (start s, end s, backend,
# delay_ms, refuse). b3 answers after ~50 ms for a minute; b2 refuses connections for 12 s, which
# opens its circuit (error_rate 0.5 over 10 s), and closes it again once the burst is over.
CYCLE_S = 240
STORY = (
    (40, 100, 3, 50, False),
    (140, 152, 2, 0, True),
)


class Story:
    """Plays STORY on the lab's backends on a thread of its own (a file write per change)."""

    def __init__(
        self, lab: Lab, cycle_s: float = CYCLE_S, story: tuple[tuple[int, int, int, int, bool], ...] = STORY
    ):
        self.lab = lab
        self.cycle_s = cycle_s
        self.story = story
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-story", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def wanted(self, t: float) -> dict[int, tuple[int, bool]]:
        """backend -> (delay_ms, refuse) at t seconds into the cycle; every backend listed."""
        now = t % self.cycle_s
        out = {i: (0, False) for i in self.lab.backend_ids}
        for start, end, backend, delay_ms, refuse in self.story:
            if start <= now < end:
                out[backend] = (delay_ms, refuse)
        return out

    def _run(self) -> None:
        started = time.monotonic()
        current: dict[int, tuple[int, bool]] = {}
        while not self._stop.is_set():
            for backend, behaviour in self.wanted(time.monotonic() - started).items():
                if current.get(backend) != behaviour:
                    try:
                        self.lab.set_backend_behaviour(backend, *behaviour)
                    except OSError:
                        log.exception("demo story: backend b%d", backend)
                    current[backend] = behaviour
            self._stop.wait(0.5)


def _wait_ready(lab: Lab, proc: subprocess.Popen[bytes], stopper: Stopper, timeout_s: float = 30.0) -> None:
    """Start the background traffic only once both VIPs answer (no failures from a cold start)."""
    deadline = time.monotonic() + timeout_s
    waiting = [IPV4, IPV6]
    while waiting and time.monotonic() < deadline and proc.poll() is None and not stopper.requested:
        if lab.vip_answers(timeout=1.0, family=waiting[0]):
            waiting.pop(0)
            continue
        stopper.wait(0.3)


def is_root() -> bool:
    if os.geteuid() != 0:
        print(
            "lbtui demo must run as root (it creates network namespaces and loads BPF programs)",
            file=sys.stderr,
        )
    return os.geteuid() == 0


def supervise(
    proc: subprocess.Popen[bytes],
    stopper: Stopper,
    traffic: Iterable[TrafficGenerator],
    duration_s: float | None,
) -> int:
    """Wait for lbtui (`proc`, the one with the console) to end: by itself (the console quit), at
    `duration_s`, or on a signal, which stops the traffic first (no request fails on the way out)
    and is passed on to lbtui. Its exit code."""
    deadline = None if duration_s is None else time.monotonic() + duration_s
    passed_on = False
    while proc.poll() is None:
        stopper.wait(0.2)
        if deadline is not None and time.monotonic() > deadline and not stopper.requested:
            stopper.request(signal.SIGTERM)
        if stopper.requested and not passed_on:
            passed_on = True
            for generator in traffic:
                generator.stop()
            proc.send_signal(signal.SIGINT if stopper.signum == signal.SIGINT else signal.SIGTERM)
    return proc.returncode


def report_traffic(traffic: dict[int, TrafficGenerator]) -> None:
    for family, generator in traffic.items():
        counts = generator.counts()
        udp = f", {dict(counts.udp_ok)} (udp)" if generator.udp else ""
        print(
            f"lbtui demo: background traffic over {FAMILY_NAMES[family]} answered by "
            f"{dict(counts.http_ok)} (http){udp}; failed {counts.http_failed + counts.udp_failed}",
            file=sys.stderr,
        )


def run_demo(
    stopper: Stopper,
    no_ui: bool,
    prefix: str = "lbtd",
    rate: float = 20.0,
    stats_interval_s: float = 10.0,
    duration_s: float | None = None,
) -> int:
    """The lab, lbtui on it, the traffic, until the console quits, `duration_s` passes or a signal
    (SIGTERM, SIGINT, SIGHUP) stops it, whenever it comes: every step is undone in order (the
    signal is passed to lbtui, which stops cleanly, then the lab goes) and the exit code is 0."""
    stopper.install(hup_stops=True)  # before anything is built: a signal never leaves a half lab
    if not is_root():
        return 3
    lab = Lab(LabSpec(prefix=prefix))
    workdir = Path(tempfile.mkdtemp(prefix="lbtui-demo-"))
    # IPv4 at `rate`, IPv6 beside it at half that (requests per second, HTTP and UDP alternating)
    traffic = {
        IPV4: TrafficGenerator(lab, rate_per_s=rate),
        IPV6: TrafficGenerator(lab, rate / 2, family=IPV6),
    }
    story = Story(lab)
    proc: subprocess.Popen[bytes] | None = None
    try:
        print(f"lbtui demo: building the lab ({', '.join(lab.namespaces)})...", file=sys.stderr)
        lab.up()
        # the lab is new: state pinned by a crashed earlier demo belongs to namespaces that are gone
        remove_pins(f"{PIN_ROOT}/{prefix}")
        lab.start_backends(health_port=HEALTH_PORT, bind=DUAL_STACK_BIND)
        if stopper.requested:
            return 0
        cfg = workdir / "demo.toml"
        cfg.write_text(demo_config(lab, str(workdir / "access.log")))
        cmd = ["ip", "netns", "exec", lab.ns_lb, sys.executable, "-m", "lbtui", "-c", str(cfg)]
        if no_ui:
            cmd += ["--no-ui", "--stats-interval", str(stats_interval_s)]
        print(
            f"lbtui demo: VIPs {lab.vip} and {lab.vip_of(IPV6)}, :80 (tcp) and :5353 (udp) each, backends "
            f"{', '.join(lab.backend_ip(i) for i in lab.backend_ids)} and "
            f"{', '.join(lab.backend_ip6(i) for i in lab.backend_ids)}; config {cfg}",
            file=sys.stderr,
        )
        # the child gets the terminal (console) or our stderr (headless); Ctrl-C reaches both
        proc = subprocess.Popen(cmd)
        _wait_ready(lab, proc, stopper)
        if no_ui and not stopper.requested:  # the console is elsewhere: say how to reach this instance
            sock = lab.control_socket
            print(
                f"lbtui demo: running; attach the console with: sudo lbtui attach --socket {sock}\n"
                f"lbtui demo: or ask it from a shell: sudo lbtui ctl --socket {sock} status",
                file=sys.stderr,
                flush=True,
            )
        if not stopper.requested:
            for generator in traffic.values():
                generator.start()
            story.start()
        rc = supervise(proc, stopper, traffic.values(), duration_s)
        report_traffic(traffic)
        return 0 if rc in (0, -signal.SIGTERM, -signal.SIGINT) else rc
    finally:
        story.stop()
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for generator in traffic.values():
            generator.stop()
        lab.down()
        print("lbtui demo: lab removed", file=sys.stderr)
