# SPDX-License-Identifier: Apache-2.0
"""Runtime operations and runtime state end to end (issue 19, must-show 1, 2 and 5), in a lab with
four backends of which the file names three; `lbtui --no-ui` runs in the lab's LB namespace and
`lbtui ctl` drives it from outside.

- A backend added at run time gets its share of new connections (chi-square); a removed one gets
  no new connection while its established ones finish, and with --cut they are cut; maintenance and
  forced health do what the README says.
- Drain b2, a runtime weight on b1, b4 added: all three still in force after a restart with SIGTERM
  and after kill -9, the state file valid after each; a reload of a changed file drops b4's
  addition with an event.
- `ctl events --follow` shows a drain issued by another client within a second.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbtui import model
from lbtui.control_client import SocketEngineHandle
from lbtui.engine.statefile import decode
from lbtui.lab import LabSpec, lab_state_file
from tests.support.lab import ClientLab
from tests.support.labtools import served, start_lbtui, wait_until

PREFIX = "lro"
SOCK = f"/run/lbtui/{PREFIX}.sock"


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lbtui", "ctl", "--socket", SOCK, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(*args: str) -> str:
    r = ctl(*args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def chi_square_p(observed: list[int], expected: list[float]) -> float:
    """P(X >= x) of the chi-square statistic with len-1 degrees of freedom (3 here)."""
    x = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    assert len(observed) == 4
    return math.erfc(math.sqrt(x / 2)) + math.sqrt(2 * x / math.pi) * math.exp(-x / 2)


class Instance:
    """`lbtui -c CFG --no-ui` in the lab's LB namespace, started and stopped (or killed) at will."""

    def __init__(self, lab: ClientLab, cfg: Path, log: Path) -> None:
        self.lab, self.cfg, self.log = lab, cfg, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_lbtui(self.lab, self.cfg, self.log)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # kill -9: no cleanup at all
        self.proc.wait(10)


@pytest.fixture(scope="module")
def lab() -> Iterator[ClientLab]:
    lab = ClientLab(LabSpec(prefix=PREFIX, backends=4, second_client=False))
    lab.up()
    try:
        lab.start_backends()
        yield lab
    finally:
        lab.down()


def three_of_four(lab: ClientLab, extra: str = "") -> str:
    """The lab's configuration without backend 4 (an operator adds it at run time)."""
    text = lab.config_toml(weights=(1, 1, 1, 1), extra_proxy_toml=extra)
    for port in (8080, 5353):
        text = text.replace(f'[[proxy.backend]]\naddress = "{lab.backend_ip(4)}:{port}"\nweight = 1\n', "")
    return text.replace("[settings]\n", "[settings]\nsweep_interval_s = 0.25\n", 1)


@pytest.fixture
def lb(lab: ClientLab, tmp_path: Path) -> Iterator[tuple[ClientLab, Instance]]:
    cfg = tmp_path / "lbtui.toml"
    cfg.write_text(three_of_four(lab))
    Path(lab_state_file(PREFIX)).unlink(missing_ok=True)  # each test starts without overrides
    instance = Instance(lab, cfg, tmp_path / "lbtui.log")
    instance.start()
    try:
        yield lab, instance
    finally:
        if instance.proc is not None and instance.proc.poll() is None:
            instance.stop()


def b(lab: ClientLab, i: int) -> str:
    return f"{lab.backend_ip(i)}:8080"


def test_an_added_backend_gets_its_share_and_a_removed_one_finishes_or_is_cut(lb):
    lab, _ = lb
    assert "b4" not in served(lab.http_requests(60))
    assert ok("add-backend", "web", b(lab, 4)) == f"added {b(lab, 4)} weight 1 to web\n"
    got = lab.http_requests(400)
    observed = [got.get(f"b{i}", 0) for i in (1, 2, 3, 4)]
    assert got.get("errors", 0) == 0 and sum(observed) == 400, got
    assert chi_square_p(observed, [100.0] * 4) > 1e-4, observed

    # removed: no new connection, the established ones finish
    held = lab.hold(24, seconds=3.0)
    opened = held.opened()
    assert opened["backends"].get("b4", 0) > 0 and opened.get("errors", 0) == 0, opened
    assert ok("remove-backend", "web", b(lab, 4)).endswith("its established flows continue\n")
    after = lab.http_requests(200)
    assert "b4" not in served(after) and after.get("errors", 0) == 0, after
    done = held.done()
    assert done.get("errors", 0) == 0 and done["backends"] == opened["backends"], (opened, done)

    # --cut: its established connections are cut, nobody else's
    assert ok("add-backend", "web", b(lab, 4)).startswith("added")
    held = lab.hold(24, seconds=3.0)
    opened = held.opened()
    on_b4 = opened["backends"].get("b4", 0)
    assert on_b4 > 0, opened
    out = ok("remove-backend", "web", b(lab, 4), "--cut")
    assert out == f"removed {b(lab, 4)} from web; {on_b4} flows cut (conntrack entries removed)\n", out
    done = held.done()
    assert done.get("errors", 0) == on_b4, (opened, done)
    assert done["backends"] == {k: v for k, v in opened["backends"].items() if k != "b4"}, (opened, done)


def test_maintenance_and_forced_health(lab, tmp_path):
    """Health checks on the backends' service port: maintenance pauses them (the backend sees no
    check while in maintenance), forced health decides whatever they say."""
    health = "\n".join(
        ("[proxy.health]", 'type = "http"', 'path = "/healthz"', "interval_ms = 200", "timeout_ms = 100")
    )
    health += "\nrise = 1\nfall = 1"
    cfg = tmp_path / "lbtui.toml"
    cfg.write_text(three_of_four(lab, health))
    Path(lab_state_file(PREFIX)).unlink(missing_ok=True)
    instance = Instance(lab, cfg, tmp_path / "lbtui.log")
    instance.start()
    h = SocketEngineHandle(SOCK)
    try:
        assert wait_until(
            lambda: all(x.health is model.Health.UP for x in h.snapshot().service("web").backends)
        )
        clients = set(lab.client_ips)

        def checks_of(i: int) -> int:  # connections to backend i from the load balancer (health checks)
            return sum(1 for ip, _ in lab.recorded_peers(i) if ip not in clients)

        # maintenance: no new connections, no health checks, established connections continue
        held = lab.hold(15, seconds=3.0)
        opened = held.opened()
        assert ok("maint", "web", b(lab, 1)).startswith(f"{b(lab, 1)} in maintenance")
        checked = checks_of(1)
        got = lab.http_requests(150)
        assert "b1" not in served(got) and got.get("errors", 0) == 0, got
        time.sleep(1.0)  # five check intervals
        assert checks_of(1) <= checked + 1  # at most one that was on its way
        assert "maint" in ok("status", "web").split(b(lab, 1), 1)[1].splitlines()[0]
        done = held.done()
        assert done.get("errors", 0) == 0 and done["backends"] == opened["backends"], (opened, done)
        ok("ready", "web", b(lab, 1))
        assert wait_until(lambda: checks_of(1) > checked + 2, 5)  # checks run again
        assert "b1" in served(lab.http_requests(150))

        # forced down: a healthy backend gets nothing; auto: it is back
        ok("health", "web", b(lab, 2), "force-down")
        got = lab.http_requests(150)
        assert "b2" not in served(got) and got.get("errors", 0) == 0, got
        ok("health", "web", b(lab, 2), "auto")
        assert "b2" in served(lab.http_requests(150))

        # forced up: a backend whose checks fail gets new connections anyway (and they fail)
        lab.set_backend_behaviour(3, refuse=True)
        assert wait_until(lambda: h.snapshot().backend("web", b(lab, 3)).health is model.Health.DOWN, 10)
        assert "b3" not in served(lab.http_requests(60))
        ok("health", "web", b(lab, 3), "force-up")
        new_flows = h.snapshot().backend("web", b(lab, 3)).counters.new_flows
        got = lab.http_requests(90, timeout=1.0)
        assert got.get("errors", 0) > 0  # its connections are refused: the data path sent them there
        assert wait_until(lambda: h.snapshot().backend("web", b(lab, 3)).counters.new_flows > new_flows, 5)
        ok("health", "web", b(lab, 3), "auto")
        got = lab.http_requests(90)
        assert "b3" not in served(got) and got.get("errors", 0) == 0, got
    finally:
        lab.set_backend_behaviour(3, refuse=False)
        h.close()
        instance.stop()


def in_force(lab: ClientLab) -> dict[str, object]:
    h = SocketEngineHandle(SOCK)
    try:
        svc = h.snapshot().service("web")
    finally:
        h.close()
    assert svc is not None
    return {x.address: (x.configured_weight, x.drain.value) for x in svc.backends}


def test_overrides_survive_sigterm_and_kill_9_and_a_reload_drops_b4_with_an_event(lb):
    lab, instance = lb
    ok("drain", "web", b(lab, 2), "--timeout", "600")
    ok("weight", "web", b(lab, 1), "5")
    ok("add-backend", "web", b(lab, 4), "--weight", "2")
    wanted = {b(lab, 1): (5, "active"), b(lab, 3): (1, "active"), b(lab, 4): (2, "active")}

    def check() -> None:
        force = in_force(lab)
        assert {a: force[a] for a in wanted} == wanted and force[b(lab, 2)][1] in ("draining", "drained"), (
            force
        )
        # 5 : 2 : 1 by weighted random: b4 - b3 is 50 +- 12 (sd) in 400 requests, below 1 about once
        # in 50,000 checks (in 160 requests 20 +- 7.6: about once in 200, and CI saw b4 27, b3 27)
        got = lab.http_requests(400)
        assert "b2" not in served(got) and got.get("errors", 0) == 0, got
        assert got["b1"] > got["b4"] > got["b3"], got
        state = decode(Path(lab_state_file(PREFIX)).read_bytes())  # the file is valid
        assert [r.backend for r in state.drains] == [b(lab, 2)] and [r.weight for r in state.weights] == [5]
        assert [(r.backend, r.weight) for r in state.added] == [(b(lab, 4), 2)]

    check()
    assert instance.stop() == 0
    instance.start()
    assert "restored 3 runtime overrides" in ok("events")
    check()
    instance.kill()
    instance.start()
    assert "took over the data path" in instance.log.read_text()
    check()

    # a reload of a changed file: b4 goes (the file says which backends exist), with an event
    instance.cfg.write_text(
        instance.cfg.read_text().replace("sweep_interval_s = 0.25", "sweep_interval_s = 0.3")
    )
    ok("reload")
    events = ok("events")
    assert f"backend added at run time of web {b(lab, 4)} dropped: a reload of a changed file" in events
    assert b(lab, 4) not in in_force(lab)
    assert not decode(Path(lab_state_file(PREFIX)).read_bytes()).added
    assert "b4" not in served(lab.http_requests(60))


def test_events_follow_shows_a_drain_from_another_terminal_within_a_second(lb):
    lab, _ = lb
    follower = subprocess.Popen(
        [sys.executable, "-m", "lbtui", "ctl", "--socket", SOCK, "events", "--follow", "--json"],
        stdout=subprocess.PIPE,
        text=True,
    )
    seen: list[tuple[float, dict[str, object]]] = []

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            seen.append((time.time(), json.loads(line)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert wait_until(lambda: len(seen) >= 1, 10)  # the backlog: it is following
        time.sleep(0.5)
        ok("drain", "web", b(lab, 3))  # from another terminal
        assert wait_until(lambda: any(e["kind"] == "drain" for _, e in seen), 5)
        shown, event = next((t, e) for t, e in seen if e["kind"] == "drain")
        # the engine stamps the event when it takes the drain; the follower prints it this much later
        assert shown - float(event["ts"]) < 1.0, shown - float(event["ts"])  # type: ignore[arg-type]
    finally:
        follower.terminate()
        follower.wait(10)
