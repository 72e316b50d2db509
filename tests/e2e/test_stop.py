# SPDX-License-Identifier: Apache-2.0
"""A stop at any moment of start-up is a clean stop (docs/architecture.md#stopping).

`lbtui --no-ui` is started in a lab again and again and sent SIGTERM (or SIGINT) at a different
moment each time, each step of start-up once: the moment it takes its signal handlers (the first
thing lbtui/__main__.py does, read from /proc/<pid>/status: before it only the interpreter's own
start runs, about 30 ms, and a signal there ends the process as it would end any program, before
anything is touched), fixed delays after the exec of the interpreter (during the imports, the host
checks, the BCC compile), and moments read from the host (the control socket appears, the maps are
pinned, XDP is attached, "started" is logged while the first health checks run). SIGTERM and SIGINT
share one handler (lbtui/stopping.py), so SIGINT is sent at a subset of the moments, not all of them.
Every run must end with exit 0 and leave nothing behind: no XDP program and no clsact qdisc or TC
filter on the lab's interfaces, no pin directory, no control socket file. Each run plays systemd's
notify socket too: a run stopped by a signal says STOPPING=1 and never READY=1 after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lbtui.engine import PIN_ROOT
from lbtui.lab import LabSpec
from tests.e2e.test_systemd import NotifySocket
from tests.support.lab import ClientLab
from tests.support.labtools import wait_until

PREFIX = "lsq"
SOCK = f"/run/lbtui/{PREFIX}.sock"
PINS = Path(PIN_ROOT, PREFIX)
HEALTH_PORT = 8081
HEALTH = f"""
[proxy.health]
type = "http"
path = "/healthz"
port = {HEALTH_PORT}
interval_ms = 200
timeout_ms = 100
rise = 1
fall = 1
"""
# after exec: the imports, the host checks, the BCC compile (the run's line says what was there)
DELAYS_S = (0.25, 1.5, 3.0)
Moment = Callable[[float, Path, int], bool]  # (seconds since exec, lbtui's log, its pid) -> now?


@dataclass
class Run:
    moment: str
    code: int | None
    seconds: float  # from the signal to the exit
    left: list[str]
    notified: list[str]
    there: str  # what start-up had made when the signal went: the socket, the pinned maps

    def line(self) -> str:
        return (
            f"{self.moment:34} at [{self.there:12}] exit {self.code}  stop {self.seconds:.2f} s  "
            f"left {self.left or 'nothing'}"
        )


@pytest.fixture(scope="module")
def lab() -> Iterator[ClientLab]:
    lab = ClientLab(LabSpec(prefix=PREFIX, second_client=False))
    lab.up()
    try:
        lab.start_backends(health_port=HEALTH_PORT)
        yield lab
    finally:
        lab.down()
        if PINS.is_dir():
            subprocess.run(["rm", "-r", str(PINS)], check=False)


def leftovers(lab: ClientLab) -> list[str]:
    """What a start left on the host: programs, qdiscs, filters, pins, the socket file."""
    left = []
    for ifname in (*lab.client_ifaces, f"{lab.prefix}br0"):  # the bridge: the fast path's reply program
        link = json.loads(lab.run(lab.ns_lb, "ip", "-j", "-d", "link", "show", "dev", ifname).stdout)[0]
        if "xdp" in link:
            left.append(f"xdp on {ifname}")
        if "clsact" in lab.run(lab.ns_lb, "tc", "qdisc", "show", "dev", ifname).stdout:
            left.append(f"clsact on {ifname}")
        for direction in ("ingress", "egress"):
            if lab.run(lab.ns_lb, "tc", "filter", "show", "dev", ifname, direction).stdout.strip():
                left.append(f"tc {direction} filter on {ifname}")
    if PINS.exists():
        left.append(f"pins {sorted(os.listdir(PINS))}")
    if os.path.lexists(SOCK):
        left.append(f"socket {SOCK}")
    return left


def xdp_attached(lab: ClientLab) -> bool:
    out = lab.run(lab.ns_lb, "ip", "-d", "link", "show", "dev", lab.client_ifaces[0], check=False).stdout
    return "xdp" in out


def run_once(
    lab: ClientLab,
    tmp: Path,
    moment: str,
    when: Moment,
    sig: signal.Signals = signal.SIGTERM,
    *extra: str,
) -> Run:
    """Start lbtui, send `sig` once `when(...)` holds, wait for the exit, look what is left."""
    cfg = tmp / "lbtui.toml"
    cfg.write_text(lab.config_toml(weights=(1, 1, 1), extra_proxy_toml=HEALTH))
    log = tmp / f"lbtui-{len(list(tmp.glob('lbtui-*.log')))}.log"
    notify_path = tmp / "notify"
    notify_path.unlink(missing_ok=True)
    notify = NotifySocket(notify_path)
    env = lab._child_env()
    env["NOTIFY_SOCKET"] = str(notify_path)
    try:
        with open(log, "w") as err:
            proc = lab.popen(
                lab.ns_lb,
                sys.executable,
                "-m",
                "lbtui",
                "-c",
                str(cfg),
                "--no-ui",
                *extra,
                stderr=err,
                env=env,
            )
        try:
            # `ip netns exec` runs first: the time counts from the exec of the interpreter
            assert wait_until(lambda: interpreter_runs(proc.pid) or proc.poll() is not None, 60, 0.001)
            execed = time.monotonic()
            assert wait_until(
                lambda: when(time.monotonic() - execed, log, proc.pid) or proc.poll() is not None,
                timeout=60,
                interval=0.005,
            )
            assert proc.poll() is None, f"{moment}: ended before the signal: {log.read_text()}"
            made = (("socket", SOCK), ("maps", PINS / "lb_ct_established"))
            there = " ".join(name for name, path in made if os.path.lexists(path))
            proc.send_signal(sig)
            sent = time.monotonic()
            code = proc.wait(30)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        time.sleep(0.1)  # the last notification is read
        notified = [text for _, text in notify.messages]
    finally:
        notify.close()
    run = Run(moment, code, took, leftovers(lab), notified, there)
    if run.code != 0:
        run.left.append(f"log: {log.read_text()[-600:]}")
    return run


def interpreter_runs(pid: int) -> bool:
    try:
        return os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(sys.executable)
    except OSError:
        return False


def handlers_taken(_elapsed: float, _log: Path, pid: int) -> bool:
    """Whether process `pid` catches SIGTERM (its SigCgt mask): lbtui's handlers are in place."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:")), 0)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def after(delay_s: float) -> Moment:
    return lambda elapsed, _log, _pid: elapsed >= delay_s


def logged(text: str) -> Moment:
    return lambda _elapsed, log, _pid: text in log.read_text()


def on_host(predicate: Callable[[], bool]) -> Moment:
    return lambda _elapsed, _log, _pid: predicate()


def check(runs: list[Run]) -> None:
    report = "\n".join(r.line() for r in runs)
    print("\n" + report)
    assert all(r.code == 0 and not r.left for r in runs), report
    for r in runs:
        stopping = [i for i, text in enumerate(r.notified) if "STOPPING=1" in text.split("\n")]
        ready = [i for i, text in enumerate(r.notified) if "READY=1" in text.split("\n")]
        if r.notified:  # lbtui's code ran (it says STATUS=starting first)
            assert stopping, f"{r.moment}: no STOPPING=1 in {r.notified}"
            assert not ready or ready[0] < stopping[0], f"{r.moment}: READY after STOPPING: {r.notified}"


def test_sigterm_at_fixed_moments_of_start_up(lab: ClientLab, tmp_path: Path) -> None:
    assert leftovers(lab) == []
    runs = [run_once(lab, tmp_path, "SIGTERM as the handlers are taken", handlers_taken)]
    for delay in DELAYS_S:
        runs.append(run_once(lab, tmp_path, f"SIGTERM {delay:.2f} s after exec", after(delay)))
    check(runs)


def test_a_stop_at_each_step_of_start_up(lab: ClientLab, tmp_path: Path) -> None:
    """Moments read from the host, SIGTERM and SIGINT: every step of the start is covered."""
    socket_appears = on_host(lambda: os.path.lexists(SOCK))
    pinned = on_host(lambda: (PINS / "lb_ct_established").exists())
    attached = on_host(lambda: xdp_attached(lab))
    moments: list[tuple[str, Moment, signal.Signals]] = [
        ("SIGINT as the handlers are taken", handlers_taken, signal.SIGINT),
        ("SIGTERM: control socket appears", socket_appears, signal.SIGTERM),
        ("SIGINT: maps pinned (compile)", pinned, signal.SIGINT),
        ("SIGTERM: XDP attached", attached, signal.SIGTERM),
        ("SIGINT: started (health checks)", logged("msg=started"), signal.SIGINT),
    ]
    runs = [run_once(lab, tmp_path, name, when, sig) for name, when, sig in moments]
    check(runs)
