# SPDX-License-Identifier: Apache-2.0
"""`lbtui ctl`'s runtime operations (add-backend, remove-backend, maint, ready, health, relative
weights, events, overrides, status PROXY) against a control socket served by the real Engine over
the in-memory dataplane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lbtui import model, wire
from lbtui.control_client import RemoteError, SocketEngineHandle
from tests.support.console_engine import ConsoleEngine
from tests.support.ctl import run_ctl

REPO = Path(__file__).resolve().parents[2]
WEB1, WEB2, WEB3 = "10.0.2.11:8080", "10.0.2.12:8080", "10.0.2.13:8080"


def test_relative_weights(engine: ConsoleEngine, sock: str, capsys: pytest.CaptureFixture[str]):
    assert run_ctl(sock, "weight", "web", WEB2, "+1") == (0, f"{WEB2} weight 2 -> 3\n", "")
    assert engine.commands[-1] == model.AdjustWeight("web", WEB2, step=1)
    assert run_ctl(sock, "weight", "web", WEB2, "-2")[1] == f"{WEB2} weight 3 -> 1\n"
    assert run_ctl(sock, "weight", "web", WEB1, "50%")[1] == f"{WEB1} weight 3 -> 2\n"
    assert engine.commands[-1] == model.AdjustWeight("web", WEB1, percent=50.0)
    code, _, err = run_ctl(sock, "weight", "web", WEB2, "-1")
    assert code == 1 and "would be 0; a weight is at least 1" in err
    assert run_ctl(sock, "weight", "web", WEB2, "half")[0] == 2  # usage: argparse says why on stderr
    assert "expected N, +N, -N or P% (e.g. 5, +1, -1, 50%), got 'half'" in capsys.readouterr().err


def test_add_remove_maint_ready_health(engine: ConsoleEngine, sock: str):
    new = "10.0.2.20:8080"
    assert run_ctl(sock, "add-backend", "web", new, "--weight", "2") == (
        0,
        f"added {new} weight 2 to web\n",
        "",
    )
    assert engine.backend("web", new).configured_weight == 2
    code, _, err = run_ctl(sock, "add-backend", "web", new)
    assert code == 1 and err == f"lbtui ctl: refused: web already has backend {new}\n"
    code, out, _ = run_ctl(sock, "add-backend", "web", "10.0.3.11:8080", "--group", "192.168.0.0/16")
    assert code == 0 and out == "added 10.0.3.11:8080 weight 1 to web (route 192.168.0.0/16)\n"
    code, out, _ = run_ctl(sock, "remove-backend", "web", new, "--cut")
    assert code == 0 and out == f"removed {new} from web; 0 flows cut (conntrack entries removed)\n"
    assert engine.commands[-1] == model.RemoveBackend("web", new, cut=True)

    code, out, _ = run_ctl(sock, "maint", "web", WEB1)
    assert code == 0 and out.startswith(f"{WEB1} in maintenance: no new connections, health checks paused")
    b = engine.backend("web", WEB1)
    assert b.maintenance and b.effective_weight == 0 and b.drain is model.DrainState.ACTIVE
    code, out, _ = run_ctl(sock, "status", "web")
    row = next(line for line in out.splitlines() if line.strip().startswith(WEB1))
    assert row.split()[6] == "maint"
    assert run_ctl(sock, "ready", "web", WEB1) == (
        0,
        f"{WEB1} ready: back in rotation, health checks running\n",
        "",
    )

    assert run_ctl(sock, "health", "web", WEB2, "force-down")[0] == 0
    assert engine.commands[-1] == model.ForceHealth("web", WEB2, "down")
    row = next(line for line in run_ctl(sock, "status")[1].splitlines() if line.strip().startswith(WEB2))
    assert row.split()[4] == "down(forced)"
    assert run_ctl(sock, "health", "web", WEB2, "auto")[1] == f"{WEB2} health follows its checks again\n"
    assert run_ctl(sock, "health", "web", WEB2, "sideways")[0] == 2


def test_json_everywhere(engine: ConsoleEngine, sock: str):
    code, out, _ = run_ctl(sock, "--json", "maint", "web", WEB1)
    data = json.loads(out)
    assert (
        code == 0
        and data["ok"]
        and data["command"] == {"type": "Maintenance", "proxy": "web", "backend": WEB1}
    )
    code, out, _ = run_ctl(sock, "overrides", "--json")
    assert json.loads(out) == {
        "state_file": None,
        "overrides": [
            {
                "kind": "maintenance",
                "proxy": "web",
                "backend": WEB1,
                "group": None,
                "value": "no new connections, health checks paused",
            }
        ],
    }
    code, out, _ = run_ctl(sock, "status", "dns", "--json")
    assert [s["name"] for s in json.loads(out)["snapshot"]["services"]] == ["dns"]
    code, out, _ = run_ctl(sock, "events", "--json", "--since", "0")
    events = [wire.decode_event(json.loads(line)) for line in out.splitlines()]
    assert (
        events
        and events[-1].kind == "maintenance"
        and [e.seq for e in events] == sorted({e.seq for e in events})
    )


def test_status_of_one_proxy(sock: str):
    code, out, _ = run_ctl(sock, "status", "dns")
    assert code == 0 and "dns  10.0.0.1:53/udp" in out and "web  " not in out
    code, out, err = run_ctl(sock, "status", "nope")
    assert (code, out) == (1, "") and err == "lbtui ctl: no proxy named 'nope' (have: web, dns)\n"


def test_overrides_listed_and_cleared(engine: ConsoleEngine, sock: str):
    assert run_ctl(sock, "overrides")[1] == (
        "no runtime overrides: everything is as the configuration says\n"
        "not kept across restarts (no state file)\n"
    )
    for args in (
        ("weight", "web", WEB1, "5"),
        ("maint", "web", WEB2),
        ("ratelimit", "dns", "--per-source", "9"),
    ):
        assert run_ctl(sock, *args)[0] == 0
    code, out, _ = run_ctl(sock, "overrides")
    assert out.splitlines() == [
        "KIND         PROXY  BACKEND         GROUP  VALUE",
        f"weight       web    {WEB1}  -      5",
        f"maintenance  web    {WEB2}  -      no new connections, health checks paused",
        "rate_limit   dns    -               -      per source 9/s burst 9, per backend off",
        "not kept across restarts (no state file)",
    ]
    assert len(run_ctl(sock, "overrides", "web")[1].splitlines()) == 4
    code, out, _ = run_ctl(sock, "overrides", "--clear", "web", WEB1)
    assert code == 0 and out == f"cleared 1 runtime override of web {WEB1}: runtime weight 5 of web {WEB1}\n"
    assert engine.commands[-1] == model.ClearOverrides("web", WEB1)
    assert run_ctl(sock, "overrides", "--clear")[0] == 0
    assert engine.runner.snapshot().overrides == ()


def test_events_since_and_the_numbers(engine: ConsoleEngine, sock: str):
    last = engine.events_since(0, 100_000)[-1].seq
    code, out, _ = run_ctl(sock, "events", "--since", str(last - 2))
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2 and lines[-1].split()[0] == str(last)
    assert run_ctl(sock, "events", "--since", "x")[0] == 2


def test_events_follow_shows_a_drain_from_another_client_within_a_second(engine: ConsoleEngine, sock: str):
    """`ctl events --follow` in one process, a drain from another client: the line comes in < 1 s."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lbtui", "ctl", "--socket", sock, "events", "--follow", "--json"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        backlog = [json.loads(proc.stdout.readline()) for _ in range(10)]  # the last ten events first
        assert backlog[-1]["seq"] == engine.events_since(0, 100_000)[-1].seq
        lines: list[tuple[float, dict[str, object]]] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append((time.monotonic(), json.loads(line)))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(0.5)  # the follower is waiting on the instance
        other = SocketEngineHandle(sock)
        try:
            sent = time.monotonic()
            assert other.submit(model.Drain("web", WEB2, timeout_s=60)).ok
        finally:
            other.close()
        deadline = time.monotonic() + 5
        while not any(e["kind"] == "drain" for _, e in lines) and time.monotonic() < deadline:
            time.sleep(0.01)
        seen = next(t for t, e in lines if e["kind"] == "drain")
        assert seen - sent < 1.0, seen - sent
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_events_request_may_wait_for_the_next_event(engine: ConsoleEngine, sock: str):
    h = SocketEngineHandle(sock)
    try:
        last = engine.events_since(0, 100_000)[-1].seq
        t0 = time.monotonic()
        assert list(h.events_since(last, wait=0.3)) == []
        assert 0.25 < time.monotonic() - t0 < 2.0
        threading.Timer(0.2, lambda: engine.submit(model.SetWeight("web", WEB1, 4))).start()
        got = h.events_since(last, wait=10)
        assert got and got[0].kind == "weight" and time.monotonic() - t0 < 5
        with pytest.raises(RemoteError, match='"wait" must be a number of seconds from 0 to 60'):
            h._call({"op": "events", "wait": 61}, 5)
    finally:
        h.close()
