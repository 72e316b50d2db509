# SPDX-License-Identifier: Apache-2.0
"""The console in a real terminal (tmux): `lbtui demo` (one host and `--hosts 3`), and `lbtui attach` to a
headless instance.

Keys go in with `tmux send-keys`, the screen comes back with `tmux capture-pane`; what the screen
claims is checked against the data path (the engine's counters through the control socket, or
which backend answers new connections).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lbtui import model
from lbtui.control_client import SocketEngineHandle
from lbtui.engine import PIN_ROOT, instance_name
from lbtui.lab import LabSpec, lab_namespaces
from lbtui.scaleout_lab import scaleout_namespaces
from tests.support.lab import ClientLab
from tests.support.labtools import start_lbtui, wait_until

pytestmark = pytest.mark.requires("tmux")

REPO = Path(__file__).resolve().parents[2]
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


class Tmux:
    def __init__(self, name: str, command: str, width: int = 160, height: int = 48):
        self.name = name
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", name, "-x", str(width), "-y", str(height), command],
            check=True,
        )

    def screen(self) -> str:
        r = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return r.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.name], capture_output=True).returncode == 0

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def rows(screen: str, proxy: str = "web") -> dict[str, dict[str, str]]:
    """The Backends table's rows of one proxy: address -> {drain, bytes_in, ...}."""
    out = {}
    for line in screen.splitlines():
        m = re.match(
            rf"\s*{proxy}\s+\S+\s+(\d+\.\d+\.\d+\.\d+:\d+|\[[0-9a-f:]+\]:\d+)\s+(\d+)\s+(\d+)\s+(\w+)\s+(\S+)\s+(\w+)\s+(\d+)"
            r"\s+(\S+)\s+\S+\s+(\S+ \w+|—)\s+(\S+ \w+|—)",  # \S+: the new/s sparkline
            line,
        )
        if m:
            out[m.group(1)] = {
                "eff": m.group(3),
                "health": m.group(4),
                "drain": m.group(6),
                "bytes_in": m.group(9),
            }
    return out


def size(text: str) -> float:
    if text == "—":
        return 0.0
    value, unit = text.split()
    return float(value) * UNITS[unit]


def new_flows(h: SocketEngineHandle, address: str) -> int:
    b = h.snapshot().backend("web", address)
    assert b is not None
    return b.counters.new_flows


def test_demo_under_the_console(tmp_path):
    prefix = "ltc"
    tmux = Tmux("lbtui-demo-test", f"cd {REPO} && {sys.executable} -m lbtui demo --prefix {prefix} --rate 30")
    try:
        assert wait_until(lambda: len(rows(tmux.screen())) == 3, timeout=60), tmux.screen()
        addresses = sorted(rows(tmux.screen()))
        first = {a: size(r["bytes_in"]) for a, r in rows(tmux.screen()).items()}
        assert wait_until(
            lambda: all(size(rows(tmux.screen())[a]["bytes_in"]) > first[a] for a in addresses), timeout=20
        ), tmux.screen()
        # the IPv6 VIP beside it: its backends shown whole, bracketed, and carrying the IPv6 traffic
        assert wait_until(lambda: len(rows(tmux.screen(), "web6")) == 3, timeout=20), tmux.screen()
        six = rows(tmux.screen(), "web6")
        assert sorted(six) == [f"[fd00:20::1{i}]:8080" for i in (1, 2, 3)], six
        assert wait_until(
            lambda: all(
                size(r["bytes_in"]) > size(six[a]["bytes_in"]) for a, r in rows(tmux.screen(), "web6").items()
            ),
            timeout=30,
        ), tmux.screen()
        # drain the selected (first) backend: d, then confirm
        h = SocketEngineHandle(f"/run/lbtui/{prefix}.sock")
        target = addresses[0]
        tmux.keys("d")
        assert wait_until(lambda: "Drain " in tmux.screen() and "(y)" in tmux.screen(), timeout=10), (
            tmux.screen()
        )
        tmux.keys("y")
        assert wait_until(
            lambda: rows(tmux.screen()).get(target, {}).get("drain") in ("draining", "drained"), timeout=10
        ), tmux.screen()
        assert h.snapshot().backend("web", target).drain != model.DrainState.ACTIVE
        time.sleep(1.0)  # let connections opened before the drain finish
        before = {a: new_flows(h, a) for a in addresses}
        # a window in which every other backend took 10 new connections (~1.5 s at the demo's rate)
        others = [a for a in addresses if a != target]
        assert wait_until(lambda: all(new_flows(h, a) >= before[a] + 10 for a in others), timeout=20), before
        after = {a: new_flows(h, a) for a in addresses}
        assert after[target] == before[target], (before, after)  # no new connections to it
        assert all(after[a] > before[a] for a in addresses if a != target), (before, after)
        # quit: q, confirm; the lab goes away with the demo
        tmux.keys("q")
        assert wait_until(lambda: "Quit lbtui?" in tmux.screen(), timeout=10), tmux.screen()
        tmux.keys("y")
        assert wait_until(lambda: not tmux.alive(), timeout=30)
        assert wait_until(lambda: not lab_namespaces(prefix), timeout=15)
        h.close()
    finally:
        tmux.kill()
        subprocess.run(["pkill", "-f", f"lbtui demo --prefix {prefix}"], capture_output=True)
        wait_until(lambda: not lab_namespaces(prefix), timeout=15)


def peers_line(screen: str) -> str:
    return next((line for line in screen.splitlines() if line.strip().startswith("peers")), "")


def test_scaleout_demo_shows_every_host_under_the_console():
    """`lbtui demo --hosts 3`: the console on host 1 (its proxies and BGP state), the two others on
    its peers line, traffic through all three; quitting removes everything the demo made."""
    prefix = "ltx"
    sockets = [f"/run/lbtui/{prefix}h{i}.sock" for i in (1, 2, 3)]
    tmux = Tmux(
        "lbtui-demo-hosts-test",
        f"cd {REPO} && {sys.executable} -m lbtui demo --hosts 3 --prefix {prefix} --rate 30",
    )
    handles = [SocketEngineHandle(s) for s in sockets]

    def new_flows_on(h: SocketEngineHandle) -> int:
        try:
            return sum(b.counters.new_flows for s in h.snapshot().services for b in s.all_backends())
        except (ConnectionError, OSError):
            return 0

    try:
        assert wait_until(lambda: len(rows(tmux.screen())) == 3, timeout=240), tmux.screen()
        # every host announces the VIP: host 1 in the header, h2 and h3 on the peers line
        assert wait_until(
            lambda: "BGP 1/1 up, 1/1 VIPs announced" in tmux.screen().splitlines()[0], timeout=240
        ), tmux.screen()
        assert wait_until(
            lambda: peers_line(tmux.screen()).count("BGP 1/1 up, 1/1 VIPs announced") == 2, timeout=60
        ), tmux.screen()
        assert "h2:" in peers_line(tmux.screen()) and "h3:" in peers_line(tmux.screen())
        # the background traffic goes through every host (ECMP) to every backend (DSR: no reply back)
        first = {a: size(r["bytes_in"]) for a, r in rows(tmux.screen()).items()}
        assert wait_until(
            lambda: all(size(rows(tmux.screen())[a]["bytes_in"]) > first[a] for a in first), timeout=30
        ), tmux.screen()
        before = [new_flows_on(h) for h in handles]
        assert wait_until(
            lambda: all(new_flows_on(h) > n for h, n in zip(handles, before, strict=True)), timeout=30
        )
        # a host that stops cleanly (h3): shown so on the peers line, gone from the router's route
        assert handles[2].submit(model.Stop()).ok
        assert wait_until(lambda: "h3: unreachable" in peers_line(tmux.screen()), timeout=60), tmux.screen()
        assert peers_line(tmux.screen()).count("BGP 1/1 up, 1/1 VIPs announced") == 1, tmux.screen()
        # quit: q, confirm; the lab goes away with the demo, and with it every host's lbtui
        tmux.keys("q")
        assert wait_until(lambda: "Quit lbtui?" in tmux.screen(), timeout=10), tmux.screen()
        tmux.keys("y")
        assert wait_until(lambda: not tmux.alive(), timeout=120)
        assert wait_until(lambda: not scaleout_namespaces(prefix), timeout=15)
        leftovers = [s for s in sockets if os.path.exists(s)]
        leftovers += [p for s in sockets if os.path.exists(p := os.path.join(PIN_ROOT, instance_name(s)))]
        leftovers += [str(p) for p in Path("/run/lbtui").glob("backend-setup-netns*.json")]
        assert not leftovers, leftovers
        assert not subprocess.run(["pgrep", "-f", f"lbtui-lab-{prefix}-"], capture_output=True).stdout
    finally:
        for h in handles:
            h.close()
        tmux.kill()
        subprocess.run(["pkill", "-f", f"lbtui demo --hosts 3 --prefix {prefix}"], capture_output=True)
        wait_until(lambda: not scaleout_namespaces(prefix), timeout=30)


def test_attach_drives_a_headless_instance(tmp_path):
    prefix = "lta"
    lab = ClientLab(LabSpec(prefix=prefix, second_client=False))
    lab.up()
    proc = None
    tmux = None
    try:
        lab.start_backends()
        cfg = tmp_path / "lbtui.toml"
        cfg.write_text(lab.config_toml(weights=(1, 1, 1)))
        log = tmp_path / "lbtui.log"
        log.write_text("")
        proc = start_lbtui(lab, cfg, log)
        sock = f"/run/lbtui/{prefix}.sock"
        tmux = Tmux("lbtui-attach-test", f"cd {REPO} && {sys.executable} -m lbtui attach --socket {sock}")
        assert wait_until(lambda: len(rows(tmux.screen())) == 3, timeout=30), tmux.screen()
        before = {a: size(r["bytes_in"]) for a, r in rows(tmux.screen()).items()}
        lab.http_requests(60)
        assert wait_until(
            lambda: all(size(rows(tmux.screen())[a]["bytes_in"]) > before[a] for a in before), timeout=10
        ), tmux.screen()  # live counters
        # the conntrack filter is answered by the engine over all its flows (20 held open meanwhile)
        held = lab.hold(20, seconds=30.0)
        held.opened()
        for keys in (["2"], ["/"], ["-l", f"{lab.client_ips[0]}: established"], ["Enter"]):
            tmux.keys(*keys)
            time.sleep(0.3)  # typed, not pasted
        matching = re.compile(r"showing (\d+) of (\d+) matching flows \((\d+) in conntrack\)")
        assert wait_until(
            lambda: (m := matching.search(tmux.screen())) is not None and int(m.group(2)) == 20, timeout=15
        ), tmux.screen()
        held.stop()
        tmux.keys("1")
        target = sorted(before)[0]
        name = f"b{int(target.split(':')[0].rsplit('.', 1)[1]) - 10}"
        tmux.keys("d")
        assert wait_until(lambda: "(y)" in tmux.screen(), timeout=10), tmux.screen()
        tmux.keys("y")
        assert wait_until(
            lambda: rows(tmux.screen()).get(target, {}).get("drain") in ("draining", "drained"), timeout=10
        ), tmux.screen()
        got = lab.http_requests(90)
        assert name not in {k for k, v in got.items() if v and k != "errors"} and not got.get("errors"), got
        tmux.keys("q")
        assert wait_until(lambda: "keeps running" in tmux.screen(), timeout=10), tmux.screen()
        tmux.keys("y")
        assert wait_until(lambda: not tmux.alive(), timeout=15)
        assert proc.poll() is None, "quitting an attached console leaves the load balancer running"
        got = lab.http_requests(60)
        assert got.get("errors", 0) == 0 and sum(v for k, v in got.items() if k != "errors") == 60
    finally:
        if tmux is not None:
            tmux.kill()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        lab.down()
