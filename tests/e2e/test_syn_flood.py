# SPDX-License-Identifier: Apache-2.0
"""A spoofed SYN flood does not break established connections (issue 12, must show 1).

max_connections = 4096; 100 keep-alive connections held open (idle through the flood, each asked
once before and once after it; an LRU keeps entries that are used often, idle ones it evicts), a steady
client opening a new connection every 10 ms, then a flood of SYNs from random addresses of the
client's subnet at >= 20,000 frames/s for 12 s, longer than the circuit breaker's 10 s window
(tests/support/synflood.py, bounded in count and time). Embryonic flows live in their own LRU table,
so the flood can only evict other embryonic flows: the held connections keep their conntrack
entries, the steady client's handshakes complete in a millisecond, and the backends answer the
flood's SYNs (SYN cookies), so no circuit opens.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from lbtui import model
from tests.support.labtools import running_lb

FLOOD_RATE = 25_000
FLOOD_S = 12.0  # over the circuit breaker's window_s: a circuit the flood opened would show
HELD = 100
STEADY_INTERVAL_S = 0.01

CIRCUIT = """
[proxy.circuit_breaker]
error_rate = 0.5
min_requests = 20
window_s = 10
open_s = 5
"""


def _json_lines(proc: subprocess.Popen[str], timeout: float) -> list[dict[str, Any]]:
    out, _ = proc.communicate(timeout=timeout)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_held_and_new_connections_survive_a_spoofed_syn_flood(tmp_path: Path) -> None:
    settings = "max_connections = 4096\n"
    with running_lb("lfl", tmp_path, settings=settings, extra=CIRCUIT) as (lab, handle):
        mac = lab.run(lab.ns_lb, "cat", f"/sys/class/net/{lab.prefix}l0/address").stdout.strip()
        client_iface = f"{lab.prefix}c0"
        flood_cmd = lab.python_cmd(
            "-m", "tests.support.synflood", "--iface", client_iface, "--dst-mac", mac, "--vip", lab.vip,
            "--port", "80", "--net", "10.0.0", "--rate", str(FLOOD_RATE), "--seconds", str(FLOOD_S),
        )  # fmt: skip
        flood = lab.popen(lab.client_ns(1), *flood_cmd, stdout=subprocess.PIPE, text=True)
        assert flood.stdout is not None
        ready = json.loads(flood.stdout.readline())  # frames built: the clock starts on the next line
        assert ready["frames"] == FLOOD_RATE * FLOOD_S
        # the flood starts as soon as its frames are built; the held connections are opened first
        held = lab.hold(HELD, seconds=FLOOD_S + 8)  # idle through the flood, asked again after it
        opened = held.opened()
        assert opened["errors"] == 0 and sum(opened["backends"].values()) == HELD, opened
        steady_cmd = lab.python_cmd(
            "-m", "tests.support.labclients", "steady", "--url", f"http://{lab.vip}/",
            "--interval", str(STEADY_INTERVAL_S), "--seconds", str(FLOOD_S + 4), "--timeout", "2",
        )  # fmt: skip
        steady = lab.popen(lab.client_ns(1), *steady_cmd, stdout=subprocess.PIPE, text=True)
        flood_result = _json_lines(flood, timeout=FLOOD_S + 60)[-1]
        steady_result = _json_lines(steady, timeout=FLOOD_S + 60)[-1]
        done = held.done()
        time.sleep(1.0)  # the last tick's counters and circuit decisions
        snap = handle.snapshot()
        events = handle.events_since(0)
        drops = {s.name: s.drops for s in snap.services}
        print(
            f"\nflood: {flood_result}; held: {done}; steady: {steady_result}; conntrack: {snap.conntrack};"
            f" drops: {drops}"
        )
        assert flood_result["rate"] >= 20_000 and flood_result["seconds"] >= FLOOD_S - 1, flood_result
        assert done["errors"] == 0 and sum(done["backends"].values()) == HELD, done
        total = steady_result["ok"] + steady_result["errors"]
        assert total >= 0.5 * (FLOOD_S + 4) / STEADY_INTERVAL_S, steady_result  # the client kept up
        assert steady_result["ok"] >= 0.99 * total, steady_result
        assert not [e for e in events if e.kind == "circuit"], [e.message for e in events]
        assert all(b.circuit is not model.Circuit.OPEN for s in snap.services for b in s.all_backends())
