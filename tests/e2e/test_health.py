# SPDX-License-Identifier: Apache-2.0
"""Backend health end to end: health checks, circuit breaker from data-path signals, drain, panic.

Each test runs `lbtui --no-ui` in a lab's LB namespace and drives/observes it through its control
socket (a unix socket: reachable from the test's own namespace), sending real traffic from the
client namespace.
"""

from __future__ import annotations

import subprocess
import sys
import time

from lbtui import model
from tests.support.labtools import backend, running_lb, served, wait_until

HEALTH = """
[proxy.health]
type = "http"
path = "/healthz"
interval_ms = 500
timeout_ms = 250
rise = 2
fall = 2
slow_start_s = 3
"""


def test_failed_backend_leaves_rotation_and_returns_with_slow_start(tmp_path):
    with running_lb("lhc", tmp_path, weights=(10, 10, 10), extra=HEALTH) as (lab, h):
        b2 = f"{lab.backend_ip(2)}:8080"
        assert wait_until(lambda: backend(h, b2).health == model.Health.UP, timeout=10)
        lab.stop_backend(2)
        t0 = time.monotonic()
        assert wait_until(lambda: backend(h, b2).effective_weight == 0, timeout=10, interval=0.05)
        took = time.monotonic() - t0
        # interval x fall + timeout = 1.25 s; generous bound for a loaded 2-CPU machine
        print(f"\nhealth: left rotation {took:.2f} s after the kill (interval 0.5 s x fall 2 + 0.25 s)")
        assert took < 4.0, f"left rotation after {took:.2f} s"
        assert backend(h, b2).health == model.Health.DOWN
        got = lab.http_requests(150)
        assert got.get("errors", 0) == 0 and "b2" not in served(got), got
        lab.start_backend(2)
        assert wait_until(lambda: backend(h, b2).health == model.Health.UP, timeout=10, interval=0.05)
        ramp = []
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            ramp.append(backend(h, b2).effective_weight)
            time.sleep(0.2)
        print(f"health: slow-start effective weights every 0.2 s: {ramp}")
        assert ramp[0] < 10 and ramp[-1] == 10, ramp
        assert ramp == sorted(ramp), f"slow start ramps up monotonically: {ramp}"
        assert len(set(ramp)) >= 3, f"the ramp has intermediate steps: {ramp}"
        got = lab.http_requests(90)
        assert "b2" in served(got), got


CIRCUIT = """
[proxy.health]
type = "tcp"
port = 8081
interval_ms = 500
timeout_ms = 250

[proxy.circuit_breaker]
error_rate = 0.5
min_requests = 10
window_s = 5
open_s = 2
half_open_successes = 3
"""

RST_8080 = [
    "nft add table inet lbtest",
    "nft add chain inet lbtest input { type filter hook input priority 0 ; }",
    "nft add rule inet lbtest input tcp dport 8080 reject with tcp reset",
]


def test_circuit_opens_from_data_path_signals_and_closes_after_fix(tmp_path):
    with running_lb("lcb", tmp_path, extra=CIRCUIT, health_port=8081) as (lab, h):
        b3 = f"{lab.backend_ip(3)}:8080"
        for cmd in RST_8080:
            lab.run(lab.ns_backend(3), *cmd.split())
        # traffic: b3 answers SYNs with RST (connection refused) while its health port stays up
        assert wait_until(
            lambda: (lab.http_requests(30, timeout=1.0), backend(h, b3).circuit)[1] == model.Circuit.OPEN,
            timeout=30,
            interval=0,
        )
        assert backend(h, b3).health != model.Health.DOWN, "health checks stay green"
        got = lab.http_requests(60)
        assert "b3" not in served(got) and got.get("errors", 0) == 0, "traffic moved away"
        lab.run(lab.ns_backend(3), "nft", "delete", "table", "inet", "lbtest")  # fixed
        assert wait_until(
            lambda: (lab.http_requests(40, timeout=1.0), backend(h, b3).circuit)[1] == model.Circuit.CLOSED,
            timeout=40,
            interval=0,
        )
        log = [t for t in h.snapshot().circuit_log if t.backend == b3]
        steps = [(t.old, t.new) for t in log]
        assert (model.Circuit.CLOSED, model.Circuit.OPEN) in steps
        assert (model.Circuit.OPEN, model.Circuit.HALF_OPEN) in steps
        assert steps[-1] == (model.Circuit.HALF_OPEN, model.Circuit.CLOSED)
        assert all(t.ts > 0 and t.reason for t in log)
        assert [t.ts for t in log] == sorted(t.ts for t in log)
        got = lab.http_requests(90)
        assert "b3" in served(got)
        # the operator's override through `lbtui ctl circuit`
        b1 = f"{lab.backend_ip(1)}:8080"

        def ctl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "lbtui",
                    "ctl",
                    "--socket",
                    "/run/lbtui/lcb.sock",
                    "circuit",
                    "web",
                    b1,
                    *args,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )

        assert ctl("force-open").returncode == 0
        assert backend(h, b1).circuit == model.Circuit.OPEN
        assert "b1" not in served(lab.http_requests(60))
        assert ctl("reset").returncode == 0
        assert backend(h, b1).circuit == model.Circuit.CLOSED
        assert "b1" in served(lab.http_requests(60))


def test_drain_under_load_completes_when_flows_end(tmp_path):
    with running_lb("ldr", tmp_path) as (lab, h):
        b1 = f"{lab.backend_ip(1)}:8080"
        # steer the long-lived connections to b1, then restore equal weights
        for i in (2, 3):
            assert h.submit(model.SetWeight("web", f"{lab.backend_ip(i)}:8080", 1)).ok
        assert h.submit(model.SetWeight("web", b1, 100_000)).ok
        held = lab.hold(20, seconds=4.0)
        opened = held.opened()
        assert opened["backends"].get("b1", 0) >= 19 and opened.get("errors", 0) == 0, opened
        assert h.submit(model.SetWeight("web", b1, 1)).ok
        r = h.submit(model.Drain("web", b1, timeout_s=60))
        assert r.ok, r.message
        got = lab.http_requests(120)  # new connections, right after the drain command
        assert "b1" not in served(got) and got.get("errors", 0) == 0, got
        assert backend(h, b1).drain == model.DrainState.DRAINING
        assert wait_until(lambda: backend(h, b1).active_flows >= 19, timeout=3)
        done = held.done()
        assert done.get("errors", 0) == 0 and done["backends"].get("b1", 0) == opened["backends"]["b1"], done
        assert wait_until(lambda: backend(h, b1).drain == model.DrainState.DRAINED, timeout=15)
        assert backend(h, b1).active_flows == 0
        events = [e.message for e in h.events_since(0) if e.kind == "drain"]
        assert any("drained: 0 flows left" in m for m in events), events
        assert h.submit(model.Undrain("web", b1)).ok
        assert "b1" in served(lab.http_requests(60))


def test_drain_timeout_with_open_flows(tmp_path):
    with running_lb("ldt", tmp_path) as (lab, h):
        b1 = f"{lab.backend_ip(1)}:8080"
        held = lab.hold(15, seconds=8.0)
        opened = held.opened()
        assert opened["backends"].get("b1", 0) > 0, opened
        assert h.submit(model.Drain("web", b1, timeout_s=1.5)).ok
        assert wait_until(lambda: backend(h, b1).drain == model.DrainState.DRAINED, timeout=10)
        assert backend(h, b1).active_flows > 0, "the timeout ended the drain, not the flows"
        events = [e.message for e in h.events_since(0) if e.kind == "drain"]
        assert any("drain timeout" in m for m in events), events
        done = held.done()
        assert done.get("errors", 0) == 0, done  # the flows were not cut


PANIC = """
[proxy.health]
type = "tcp"
port = 8099
interval_ms = 300
timeout_ms = 200
rise = 1
fall = 1
"""


def test_panic_when_every_backend_is_down(tmp_path):
    with running_lb("lpn", tmp_path, extra=PANIC) as (lab, h):
        # nothing listens on 8099 anywhere: every backend fails its health check
        assert wait_until(
            lambda: all(b.health == model.Health.DOWN for b in h.snapshot().service("web").backends)
        )
        assert wait_until(lambda: h.snapshot().service("web").panic)
        got = lab.http_requests(90)
        assert got.get("errors", 0) == 0 and set(served(got)) == {"b1", "b2", "b3"}, got
        assert any(e.kind == "panic" for e in h.events_since(0))
        # fix one: a listener on b1's health port
        listener = lab.popen(
            lab.ns_backend(1),
            sys.executable,
            "-c",
            "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
            "socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 8099)); s.listen(64); "
            "[c.close() for c, _ in iter(s.accept, None)]",
        )
        try:
            assert wait_until(lambda: not h.snapshot().service("web").panic)
            got = lab.http_requests(60)
            assert served(got) == {"b1": 60}, got
        finally:
            lab.stop_process(listener)


def test_drain_timeout_can_cut_the_remaining_flows(tmp_path):
    with running_lb("ldc", tmp_path) as (lab, h):
        b1 = f"{lab.backend_ip(1)}:8080"
        held = lab.hold(15, seconds=6.0)
        opened = held.opened()
        on_b1 = opened["backends"].get("b1", 0)
        assert on_b1 > 0, opened
        assert h.submit(model.Drain("web", b1, timeout_s=1.0, cut=True)).ok
        assert wait_until(lambda: backend(h, b1).drain == model.DrainState.DRAINED, timeout=10)
        events = [e.message for e in h.events_since(0) if e.kind == "drain"]
        assert any(f"{on_b1} flows cut" in m for m in events), events
        done = held.done()
        # the cut connections fail their second request; the others' work
        assert done.get("errors", 0) == on_b1, (opened, done)
        assert "b1" not in done["backends"], done
