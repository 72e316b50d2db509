# SPDX-License-Identifier: Apache-2.0
# ruff: noqa: E501  (the child program below is a string)
"""A failed reload leaves the running state exactly as it was: in memory and in the BPF maps.

A real Engine runs in a private network namespace (a child process, since attaching is per
namespace). It is reloaded with each distinct one of 300 random broken variants of its file (random
line deletions, duplicated lines, wrong types, unknown keys, bad values; about 130 distinct: a
repeated variant is not reloaded twice), with a file that needs a restart, and with a valid
file whose application fails half-way (an injected fault): every time the reload is refused or
rolled back, and the configuration, every selection table, the services, routes and backends in
the maps, and the snapshot's effective weights are unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# per process: two runs at once (bpf tests do not take the e2e lock) must not share a namespace or
# an instance (its pins are named after its socket)
NS = f"lbtrs{os.getpid()}"

CHILD = r'''
import asyncio, json, os, random, sys, tempfile
from lbtui.config import ConfigError, load_config
from lbtui.engine import Engine, kernel_dataplane

GOOD = """
[settings]
control_socket = "/run/lbtui/lbtrs.sock"
table_size = 4099
[settings.metrics]
enabled = false
[[proxy]]
name = "web"
interfaces = ["rs0"]
vip = "10.0.0.1"
port = 80
algorithm = "weighted-random"
[proxy.rate_limit]
per_source = { rate = 100, burst = 200 }
[[proxy.backend]]
address = "10.0.2.11:8080"
weight = 3
[[proxy.backend]]
address = "10.0.2.12:8080"
weight = 2
[[proxy.source_route]]
cidr = "192.168.0.0/16"
backends = [{ address = "10.0.3.10:8080", weight = 1 }]
[[proxy]]
name = "dns"
interfaces = ["rs0"]
vip = "10.0.0.1"
port = 53
protocol = "udp"
algorithm = "maglev"
[[proxy.backend]]
address = "10.0.2.11:53"
weight = 1
"""

def state(e):
    maps = e.dataplane.maps
    snap = e.snapshot()
    tables = {f"{p}|{g}": list(e.group_table(p, g)) for p in ("web", "dns")
              for g in ["default"] + [r.cidr for r in snap.service(p).routes]}
    return {
        "config": repr(e.config),
        "tables": tables,
        "services": sorted(maps.read_services()),
        "routes": sorted(maps.read_routes()),
        "backends": sorted(maps.read_backends().items()),
        "map_tables": {k: maps.read_table(e.group_id(*k.split("|"))) for k in tables},
        "weights": sorted((b.proxy, b.group, b.address, b.configured_weight, b.effective_weight)
                          for s in snap.services for b in s.all_backends()),
    }

def mutate(rng, text):
    lines = text.strip().splitlines()
    i = rng.randrange(len(lines))
    kind = rng.randrange(6)
    if kind == 0:
        del lines[i]
    elif kind == 1:
        lines.insert(i, lines[i])
    elif kind == 2:
        lines[i] = lines[i].replace("=", "= -", 1) if "=" in lines[i] else lines[i] + " = 1"
    elif kind == 3:
        lines.insert(i, "surprise = 1")
    elif kind == 4:
        lines[i] = lines[i].replace('"', "", 1)
    else:
        lines[i] = lines[i].replace("3", "true").replace("1", '"x"')
    return "\n".join(lines) + "\n"

async def main():
    path = tempfile.mktemp(suffix=".toml")
    open(path, "w").write(GOOD)
    config = load_config(path)
    e = Engine(config, kernel_dataplane(config))
    await e.start()
    try:
        before = state(e)
        rng = random.Random(5)
        refused = tried = broken = 0
        seen = set()
        while broken < 300:
            text = mutate(rng, GOOD)
            tried += 1
            if text in seen:
                broken += 1  # the same broken variant again: it was reloaded once already
                continue
            try:
                load_config_text_ok = load_config_from(text)
            except ConfigError:
                load_config_text_ok = False
            if load_config_text_ok:
                continue  # a mutation that is still valid is not what this test is about
            seen.add(text)
            open(path, "w").write(text)
            r = await e.reload()
            assert not r.ok, text
            assert state(e) == before, text
            refused += 1
            broken += 1
        # a valid file that needs a restart
        open(path, "w").write(GOOD.replace("table_size = 4099", "table_size = 4093"))
        r = await e.reload()
        assert not r.ok and "restart" in r.message, r.message
        assert state(e) == before
        # a valid file whose application fails half-way: rolled back
        open(path, "w").write(GOOD.replace("weight = 3", "weight = 7").replace('interfaces = ["rs0"]\nvip = "10.0.0.1"\nport = 53',
                                                                                 'interfaces = ["rs0", "rs1"]\nvip = "10.0.0.1"\nport = 53'))
        real = e.dataplane.set_interfaces
        def broken(wanted):
            if "rs1" in wanted:
                raise RuntimeError("injected attach failure")
            real(wanted)
        e.dataplane.set_interfaces = broken
        r = await e.reload()
        assert not r.ok and "rolled back" in r.message, r.message
        assert state(e) == before
        e.dataplane.set_interfaces = real
        # and a good reload still works afterwards
        open(path, "w").write(GOOD.replace("weight = 3", "weight = 5"))
        assert (await e.reload()).ok
        assert state(e) != before
        print(json.dumps({"refused": refused, "tried": tried}))
    finally:
        await e.stop()
        os.unlink(path)

def load_config_from(text):
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(text)
        f.flush()
        load_config(f.name)
    return True

asyncio.run(main())
'''


def test_failed_reloads_leave_the_running_state_untouched():
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        subprocess.run(
            ["ip", "-n", NS, "link", "add", "rs0", "type", "veth", "peer", "name", "rs1"], check=True
        )
        for dev in ("rs0", "rs1"):
            subprocess.run(["ip", "-n", NS, "link", "set", dev, "up"], check=True)
        r = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                NS,
                sys.executable,
                "-c",
                CHILD.replace("/run/lbtui/lbtrs.sock", f"/run/lbtui/{NS}.sock"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
        result = json.loads(r.stdout.strip().splitlines()[-1])
        assert result["refused"] >= 100, result
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)
