# SPDX-License-Identifier: Apache-2.0
"""`lbtui ctl` against a headless instance in a lab: drain, undrain, weight, reload, flow queries,
exit codes.

Every effect is checked from the data path: which backend answers new connections from the client
namespace (backends answer with their own name).
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys

import pytest

from lbtui.control_client import RemoteError, SocketEngineHandle
from lbtui.lab import LabSpec
from lbtui.model import FlowQuery
from tests.support.lab import ClientLab
from tests.support.labtools import served, start_lbtui, wait_until

SOCK = "/run/lbtui/lct.sock"


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lbtui", "ctl", "--socket", SOCK, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def lb(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ctl")
    lab = ClientLab(LabSpec(prefix="lct", second_client=False))
    lab.up()
    proc = None
    try:
        lab.start_backends()
        cfg = tmp / "lbtui.toml"
        cfg.write_text(lab.config_toml(weights=(1, 1, 1)))
        log = tmp / "lbtui.log"
        log.write_text("")
        proc = start_lbtui(lab, cfg, log)
        yield lab, cfg, proc
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        lab.down()


def test_status(lb):
    lab, _, _ = lb
    r = ctl("status")
    assert r.returncode == 0, r.stderr
    assert "web" in r.stdout and f"{lab.backend_ip(1)}:8080" in r.stdout
    r = ctl("--json", "status")
    assert r.returncode == 0
    data = json.loads(r.stdout)
    assert {s["name"] for s in data["snapshot"]["services"]} == {"web", "udp"}


def test_drain_and_undrain(lb):
    lab, _, _ = lb
    b1 = f"{lab.backend_ip(1)}:8080"
    held = lab.hold(9, seconds=2.0)
    opened = held.opened()
    r = ctl("drain", "web", b1, "--timeout", "60")
    assert r.returncode == 0, r.stderr
    # the command returns once the selection table is written: the next connection already avoids b1
    got = lab.http_requests(90)
    assert "b1" not in served(got) and got.get("errors", 0) == 0, got
    done = held.done()
    assert done.get("errors", 0) == 0 and done["backends"] == opened["backends"], (opened, done)
    r = ctl("undrain", "web", b1)
    assert r.returncode == 0, r.stderr
    assert "b1" in served(lab.http_requests(90))


def test_flows_are_searched_among_all_of_them(lb):
    """250 held connections (more than the 200-row view): a filter finds any of them, exactly."""
    lab, _, _ = lb
    held = lab.hold(250, seconds=15.0)
    opened = held.opened()
    assert opened.get("errors", 0) == 0, opened
    b2 = f"{lab.backend_ip(2)}:8080"
    h = SocketEngineHandle(SOCK)
    try:
        # queries are answered from the next sweep (every 2 s) on, which also sees the new flows
        on_b2 = FlowQuery(text=f"{b2} established")
        want = opened["backends"]["b2"]

        def answered() -> bool:
            snap = h.snapshot(on_b2)
            return snap.flow_query == on_b2 and snap.flows_matched >= want

        assert wait_until(answered, timeout=10)
        snap = h.snapshot(on_b2)
        assert snap.flows_matched == want and len(snap.flows) == min(200, want)
        assert all(f.backend == b2 and f.state == "established" for f in snap.flows)

        # the default view comes with the periodic snapshot, which may trail the sweep by a tick
        assert wait_until(lambda: h.snapshot().flows_matched >= 250, timeout=10)
        assert len(h.snapshot().flows) == 200
        oldest = h.snapshot(FlowQuery(text=f"{lab.client_ips[0]}: web", sort="age"))
        assert oldest.flows_matched >= 250 and len(oldest.flows) == 200
        ages = [f.age_s for f in oldest.flows]
        assert ages == sorted(ages, reverse=True)

        # a query the engine refuses gets a clear error; the instance keeps answering
        with pytest.raises(RemoteError, match="unknown sort 'size'"):
            h.snapshot(FlowQuery(sort="size"))
        assert h.snapshot().running
    finally:
        h.close()
    r = ctl("flows", f"{b2}", "established", "--limit", "5")
    assert r.returncode == 0, r.stderr
    assert f"5 of {want} flows matching '{b2} established', by bytes" in r.stdout
    assert ctl("flows", "--sort", "size").returncode == 2
    done = held.done()
    assert done.get("errors", 0) == 0, done


def test_weight_changes_the_distribution(lb):
    lab, _, _ = lb
    r = ctl("weight", "web", f"{lab.backend_ip(1)}:8080", "8")
    assert r.returncode == 0, r.stderr
    got = lab.http_requests(500)
    observed = [got.get("b1", 0), got.get("b2", 0), got.get("b3", 0)]
    expected = [400.0, 50.0, 50.0]
    x = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    assert math.exp(-x / 2) > 1e-6, observed  # chi-square, 2 degrees of freedom
    assert ctl("weight", "web", f"{lab.backend_ip(1)}:8080", "1").returncode == 0


def test_reload_applies_an_edited_file(lb):
    lab, cfg, _ = lb
    original = cfg.read_text()
    cfg.write_text(
        lab.config_toml(weights=(1, 1, 1)).replace(
            f'address = "{lab.backend_ip(3)}:8080"\nweight = 1',
            f'address = "{lab.backend_ip(3)}:8080"\nweight = 1000',
        )
    )
    try:
        r = ctl("reload")
        assert r.returncode == 0, r.stderr
        got = lab.http_requests(100)
        assert got.get("b3", 0) >= 95, got
    finally:
        cfg.write_text(original)
        ctl("reload")


def test_refused_command_exits_1_with_the_reason(lb):
    r = ctl("drain", "web", "10.9.9.9:8080")
    assert r.returncode == 1
    assert "no backend 10.9.9.9:8080" in r.stderr + r.stdout
    r = ctl("weight", "nosuch", "10.0.2.11:8080", "3")
    assert r.returncode == 1


def test_no_instance_exits_3():
    r = subprocess.run(
        [sys.executable, "-m", "lbtui", "ctl", "--socket", "/run/lbtui/nobody-here.sock", "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 3
    assert "/run/lbtui/nobody-here.sock" in r.stderr


def test_second_instance_on_the_same_socket_is_refused(lb, tmp_path):
    lab, cfg, _ = lb
    r = subprocess.run(
        ["ip", "netns", "exec", lab.ns_lb, sys.executable, "-m", "lbtui", "-c", str(cfg), "--no-ui"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 4  # a busy resource: systemd would retry (lbtui/exitcodes.py)
    assert "running lbtui" in r.stderr


def test_protocol_garbage_and_many_clients_against_the_real_engine(lb):
    """1,000 malformed or random requests and 50 concurrent clients: each gets a reply or a clean
    close, the engine keeps balancing, and the instance's memory stays bounded."""
    import random
    import socket as socketlib
    import threading

    lab, _, proc = lb

    def rss_kb() -> int:
        for line in open(f"/proc/{proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    rng = random.Random(7)
    bodies = [
        b'{"v": 1, "id": 1, "op": "nope"}\n',
        b"not json\n",
        b'{"op": "command", "command": 5}\n',
        b'{"v": 99, "op": "hello"}\n',
        b"[]\n",
        b'{"op": "events", "since": -1}\n',
        b'{"op": "command", "command": {"type": "SetWeight", "proxy": "web", "backend": "x", '
        b'"weight": true}}\n',
        b"\xff\xfe\x00garbage\n",
        b"{" * 5000 + b"\n",
        b"x" * 70000 + b"\n",
    ]
    outcomes = {"reply": 0, "closed": 0}
    lock = threading.Lock()

    def one(payload: bytes) -> None:
        s = socketlib.socket(socketlib.AF_UNIX)
        s.settimeout(10)
        try:
            s.connect(SOCK)
            s.sendall(payload)
            data = s.recv(65536)
            with lock:
                outcomes["reply" if data else "closed"] += 1
        except (ConnectionResetError, BrokenPipeError):
            with lock:
                outcomes["closed"] += 1
        finally:
            s.close()

    before = rss_kb()
    traffic = threading.Thread(target=lambda: outcomes.__setitem__("traffic", lab.http_requests(300)))
    traffic.start()
    payloads = [
        rng.choice(bodies) if i % 2 else bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))) + b"\n"
        for i in range(1000)
    ]
    for start in range(0, 1000, 50):  # 50 concurrent clients at a time
        threads = [threading.Thread(target=one, args=(p,)) for p in payloads[start : start + 50]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    traffic.join(60)
    assert outcomes["reply"] + outcomes["closed"] == 1000, outcomes
    assert outcomes["traffic"].get("errors", 0) == 0, outcomes["traffic"]  # balancing went on
    assert ctl("status").returncode == 0  # and the socket still answers properly
    assert rss_kb() - before < 50_000, "memory stays bounded"
    assert proc.poll() is None
