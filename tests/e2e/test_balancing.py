# SPDX-License-Identifier: Apache-2.0
"""Selection algorithms and rate limits end to end: least-connections, Maglev, source hash, per-source
new-connection limits.

Each test runs `lbtui --no-ui` in a lab's LB namespace, drives and observes it through its control
socket and sends real traffic from the client namespaces. Where a test predicts which backend a flow
gets, it reads the selection table the running instance wrote from the instance's pinned maps
(`PinnedMaps`) and applies the data path's hash (bpf/lb.c) to it in Python.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

from lbtui import model
from lbtui.control import selection
from lbtui.control_client import SocketEngineHandle
from lbtui.dataplane import structs
from lbtui.engine import PIN_ROOT
from tests.support.lab import ClientLab
from tests.support.labtools import backend, running_lb, served, wait_until

TABLE_SIZE = 65537  # settings.table_size default: what the running instances use


def backend_names(lab: ClientLab) -> dict[str, str]:
    """ "ip:port" -> the name the backend's HTTP server answers with ("b1", ...)."""
    return {f"{lab.backend_ip(i)}:8080": f"b{i}" for i in lab.backend_ids}


def web(h: SocketEngineHandle) -> model.ServiceView:
    svc = h.snapshot().service("web")
    assert svc is not None
    return svc


# ---- reading a running instance's pinned maps ---------------------------------------------------


class PinnedMaps:
    """Read-only lookups in the maps an instance pinned under /run/lbtui/bpffs/<instance>/."""

    def __init__(self, instance: str) -> None:
        from bcc.libbcc import lib  # the test process is not the engine: bcc is fine here

        self._lib = lib
        self._dir = f"{PIN_ROOT}/{instance}"
        self._fds: dict[str, int] = {}

    def _fd(self, name: str) -> int:
        if name not in self._fds:
            fd = self._lib.bpf_obj_get(ctypes.c_char_p(f"{self._dir}/{name}".encode()))
            assert fd >= 0, f"cannot open pinned map {self._dir}/{name}"
            self._fds[name] = fd
        return self._fds[name]

    def lookup(self, name: str, key: Any, value: Any) -> Any:
        rc = self._lib.bpf_lookup_elem(self._fd(name), ctypes.byref(key), ctypes.byref(value))
        assert rc == 0, f"lookup in {name} failed"
        return value

    def service(self, vip: str, port: int, protocol: str = "tcp") -> structs.Service:
        key = structs.ServiceKey(
            structs.ip_to_be32(vip), structs.port_to_be16(port), structs.PROTO_NUMBERS[protocol], 0
        )
        svc: structs.Service = self.lookup("lb_services", key, structs.Service())
        return svc

    def table(self, group: int) -> list[int]:
        value = ctypes.c_uint32()
        out = []
        for slot in range(TABLE_SIZE):
            self.lookup("lb_select", ctypes.c_uint32(group * TABLE_SIZE + slot), value)
            out.append(value.value)
        return out

    def backend_address(self, backend_id: int) -> str:
        be = self.lookup("lb_backends", ctypes.c_uint32(backend_id), structs.Backend())
        return f"{structs.be32_to_ip(be.ip)}:{structs.be16_to_port(be.port)}"

    def service_stats_per_cpu(self, service_id: int) -> list[tuple[int, int]]:
        """(new flows, drops) of one service on each possible CPU."""
        from bcc.utils import get_possible_cpus

        ncpu = len(get_possible_cpus())
        stride = (ctypes.sizeof(structs.ServiceStats) + 7) // 8 * 8  # per-CPU values are 8-byte aligned
        buf = ctypes.create_string_buffer(stride * ncpu)
        self.lookup("lb_service_stats", ctypes.c_uint32(service_id), buf)
        values = [structs.ServiceStats.from_buffer(buf, cpu * stride) for cpu in range(ncpu)]
        return [(v.new_flows, sum(v.drops)) for v in values]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def table_by_address(pinned: PinnedMaps, group: int) -> list[str]:
    """The group's selection table with every backend id replaced by its "ip:port"."""
    table = pinned.table(group)
    address = {bid: pinned.backend_address(bid) for bid in set(table) - {selection.EMPTY}}
    return [address.get(bid, "empty") for bid in table]


def maglev_slot(saddr: str, sport: int, daddr: str, dport: int) -> int:
    """bpf/lb.c's Maglev slot: jhash_3words over the wire bytes of the 5-tuple read as little-endian
    words (so ports enter byte-swapped), modulo the table size."""
    ports = (structs.port_to_be16(sport) << 16) | structs.port_to_be16(dport)
    return selection.jhash_3words(structs.ip_to_be32(saddr), structs.ip_to_be32(daddr), ports) % TABLE_SIZE


def source_hash_slot(saddr: str, service_id: int) -> int:
    """bpf/lb.c's source-hash slot: jhash_3words(client address, service id, 0) modulo the table size."""
    return selection.jhash_3words(structs.ip_to_be32(saddr), service_id, 0) % TABLE_SIZE


# ---- small clients run inside a client namespace ------------------------------------------------

# Connections from given (source address, source port) pairs; prints the backend name per connection.
# Closed with a reset, so a fixed source port can be used again right away (no TIME_WAIT anywhere).
CONNECT_SCRIPT = r"""
import json, socket, struct, sys
vip, pairs = sys.argv[1], json.loads(sys.argv[2])
family = socket.AF_INET6 if ":" in vip else socket.AF_INET
names = []
for src, sport in pairs:
    s = socket.socket(family)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(3)
    try:
        s.bind((src, sport))
        s.connect((vip, 80))
        s.sendall(b"GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        names.append(data.split(b"\r\n\r\n", 1)[1].decode().strip() or "!")
    except OSError:
        names.append("!")
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
print(json.dumps(names))
"""

# One keep-alive connection asked every 20 ms until a line arrives on stdin.
KEEPALIVE_SCRIPT = r"""
import http.client, json, select, sys
conn = http.client.HTTPConnection(sys.argv[1], 80, timeout=2)
def ask():
    conn.request("GET", "/")
    r = conn.getresponse()
    return r.read().decode().strip()
first = ask()
print(json.dumps({"opened": first}), flush=True)
ok, errors, names = 0, 0, {first}
while not select.select([sys.stdin], [], [], 0.02)[0]:
    try:
        names.add(ask())
        ok += 1
    except Exception:
        errors += 1
print(json.dumps({"ok": ok, "errors": errors, "backends": sorted(names)}), flush=True)
"""

# Raw TCP SYNs (scapy-built frames on an AF_PACKET socket), paced evenly over span_s seconds from a
# start time (CLOCK_MONOTONIC, system-wide) read on stdin. Prints the first and last send times.
SYN_SCRIPT = r"""
import json, socket, sys, time
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
iface, smac, dmac, src, vip = sys.argv[1:6]
first_port, count, span = int(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8])
frames = [bytes(Ether(src=smac, dst=dmac) / IP(src=src, dst=vip) / TCP(sport=first_port + i, dport=80,
          flags="S", seq=1000 + i)) for i in range(count)]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
print("ready", flush=True)
start = float(sys.stdin.readline())
sent = []
for i, frame in enumerate(frames):
    delay = start + i * span / count - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    s.send(frame)
    sent.append(time.monotonic())
print(json.dumps({"sent": len(sent), "first": sent[0], "last": sent[-1]}), flush=True)
"""


def connect_from(
    lab: ClientLab, pairs: list[tuple[str, int]], client: int = 1, vip: str | None = None
) -> list[str]:
    """Backend name per connection to `vip`:80 (default the lab's IPv4 VIP; "!" for a failure); one
    connection per (address, port) pair."""
    r = lab.run(
        lab.client_ns(client),
        sys.executable,
        "-c",
        CONNECT_SCRIPT,
        vip or lab.vip,
        json.dumps(pairs),
        timeout=60 + 3 * len(pairs),
    )
    names: list[str] = json.loads(r.stdout.strip().splitlines()[-1])
    return names


def mac_of(lab: ClientLab, ns: str, ifname: str) -> str:
    r = lab.run(ns, "ip", "-j", "link", "show", "dev", ifname)
    mac: str = json.loads(r.stdout)[0]["address"]
    return mac


def add_client_addresses(lab: ClientLab, *ips: str) -> None:
    """Extra source addresses on the client veth (their client answers SYN-ACKs to raw SYNs with RST)."""
    for ip in ips:
        lab.run(lab.ns_client, "ip", "addr", "add", f"{ip}/24", "dev", f"{lab.prefix}c0")


# ---- least-connections ---------------------------------------------------------------------------


def test_least_connections_sends_new_connections_to_the_idle_backends(tmp_path):
    extra = "least_connections_interval_ms = 250"
    with running_lb("lbl", tmp_path, algorithm="least-connections", extra=extra) as (lab, h):
        b1, b2, b3 = (f"{lab.backend_ip(i)}:8080" for i in (1, 2, 3))
        # steer all 50 long-lived connections to b1 (the others drained: a held connection on b2
        # would rightly lower b2's share too), then put every backend back in rotation
        for idle in (b2, b3):
            assert h.submit(model.Drain("web", idle, timeout_s=600)).ok
        held = lab.hold(50, seconds=60.0)
        try:
            opened = held.opened()
            assert opened["backends"].get("b1", 0) == 50 and opened.get("errors", 0) == 0, opened
            for idle in (b2, b3):
                assert h.submit(model.Undrain("web", idle)).ok
            # the engine sees b1's open connections in its counters and lowers its share
            assert wait_until(lambda: backend(h, b1).active_flows >= 48)
            assert wait_until(lambda: "least connections" in backend(h, b1).last_change)
            time.sleep(0.6)  # one more recomputation with weight 1
            got = lab.http_requests(150)
            assert got.get("errors", 0) == 0, got
            assert got.get("b1", 0) < 15, f"the busy backend got {got.get('b1', 0)} of 150: {got}"
            assert got.get("b2", 0) >= 40 and got.get("b3", 0) >= 40, got
        finally:
            held.stop()


# ---- Maglev ------------------------------------------------------------------------------------


def test_maglev_table_is_the_python_table_and_picks_follow_the_hash(tmp_path):
    with running_lb("lbm", tmp_path, algorithm="maglev") as (lab, h):
        assert web(h).algorithm == "maglev"
        pinned = PinnedMaps("lbm")
        try:
            svc = pinned.service(lab.vip, 80)
            running = table_by_address(pinned, svc.default_group)
        finally:
            pinned.close()
        # Two control planes with the same configuration build the same table, whatever ids they use.
        addresses = list(backend_names(lab))
        first = selection.maglev_table({i: (a, 1) for i, a in enumerate(addresses)}, TABLE_SIZE)
        second = selection.maglev_table(
            {70 - i: (a, 1) for i, a in enumerate(reversed(addresses))}, TABLE_SIZE
        )
        assert [addresses[b] for b in first] == [addresses[::-1][70 - b] for b in second]
        assert running == [addresses[b] for b in first], "the running instance wrote the Python table"

        # 300 new connections from fixed source ports: the backend of each is the one the data path's
        # hash of the 5-tuple selects in that table, and they spread over the 3 backends
        client = lab.client_ips[0]
        pairs = [(client, 20000 + i) for i in range(300)]
        got = connect_from(lab, pairs)
        names = backend_names(lab)
        want = [names[running[maglev_slot(ip, port, lab.vip, 80)]] for ip, port in pairs]
        assert got == want
        spread = Counter(got)
        assert set(spread) == {"b1", "b2", "b3"} and min(spread.values()) >= 60, spread
        # the same 5-tuples again, as new flows (the old ones were reset): the same backends
        assert connect_from(lab, pairs) == got


# ---- source hash ---------------------------------------------------------------------------------


def test_source_hash_keeps_a_client_on_one_backend_and_spreads_clients(tmp_path):
    with running_lb("lbs", tmp_path, algorithm="source-hash") as (lab, h):
        got = lab.http_requests(200)
        assert got.get("errors", 0) == 0 and len(served(got)) == 1, got

        extra = [f"10.0.0.{100 + i}" for i in range(50)]
        add_client_addresses(lab, *extra)
        names = connect_from(lab, [(ip, 0) for ip in extra for _ in range(4)])
        by_source: dict[str, set[str]] = {}
        for i, name in enumerate(names):
            by_source.setdefault(extra[i // 4], set()).add(name)
        assert all(len(s) == 1 and "!" not in s for s in by_source.values()), by_source
        spread = Counter(next(iter(s)) for s in by_source.values())
        assert set(spread) == {"b1", "b2", "b3"} and min(spread.values()) >= 5, spread

        # and each address lands where the data path's hash of it selects in the running table
        pinned = PinnedMaps("lbs")
        try:
            svc = pinned.service(lab.vip, 80)
            table = table_by_address(pinned, svc.default_group)
        finally:
            pinned.close()
        to_name = backend_names(lab)
        for ip, seen in by_source.items():
            assert seen == {to_name[table[source_hash_slot(ip, svc.id)]]}, ip


# ---- per-source rate limit -----------------------------------------------------------------------

RATE, BURST, SPAN_S, SYNS = 50, 50, 0.9, 500
RATE_LIMIT = f"""
[proxy.rate_limit]
per_source = {{ rate = {RATE}, burst = {BURST} }}
"""


def web_counts(h: SocketEngineHandle, after: float) -> tuple[int, int]:
    """(new flows, per-source rate-limit drops) of proxy "web" from a snapshot taken after `after`."""
    assert wait_until(lambda: h.snapshot().taken_at > after + 0.2, timeout=10, interval=0.05)
    svc = web(h)
    return svc.counters.new_flows, svc.drops.get("rate_limit_source", 0)


class SynBurst:
    """SYN_SCRIPT sender processes (one per CPU given) started together."""

    def __init__(self, lab: ClientLab, src: str, first_port: int, cpus: list[int]) -> None:
        self.lab = lab
        ns, cif = lab.ns_client, f"{lab.prefix}c0"
        smac, dmac = mac_of(lab, ns, cif), mac_of(lab, lab.ns_lb, f"{lab.prefix}l0")
        per_cpu = SYNS // len(cpus)
        self.procs = []
        for i, cpu in enumerate(cpus):
            args = [cif, smac, dmac, src, lab.vip, str(first_port + i * per_cpu), str(per_cpu), str(SPAN_S)]
            self.procs.append(
                lab.popen(
                    ns,
                    "taskset",
                    "-c",
                    str(cpu),
                    sys.executable,
                    "-c",
                    SYN_SCRIPT,
                    *args,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for p in self.procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"

    def go(self) -> None:
        start = time.monotonic() + 0.2
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(f"{start}\n")
            p.stdin.flush()

    def span(self) -> float:
        """Seconds from the first to the last SYN sent, over all senders."""
        results = []
        for p in self.procs:
            out, _ = p.communicate(timeout=30)
            results.append(json.loads(out.strip().splitlines()[-1]))
        assert sum(r["sent"] for r in results) == SYNS
        return max(r["last"] for r in results) - min(r["first"] for r in results)


class KeepAlive:
    """KEEPALIVE_SCRIPT: one established connection asked every 20 ms."""

    def __init__(self, lab: ClientLab) -> None:
        self.proc = lab.popen(
            lab.ns_client,
            sys.executable,
            "-c",
            KEEPALIVE_SCRIPT,
            lab.vip,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        assert ready, "the keep-alive client did not connect"
        self.opened = json.loads(self.proc.stdout.readline())["opened"]

    def result(self) -> dict[str, Any]:
        out, _ = self.proc.communicate("stop\n", timeout=30)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


def expected_admitted(rate: int, burst: int, span: float) -> float:
    """A full bucket at the first SYN, then `rate` tokens per second while the burst lasts."""
    return burst + rate * span


def test_per_source_rate_limit(tmp_path):
    with running_lb("lbr", tmp_path, extra=RATE_LIMIT, second_client=True) as (lab, h):
        add_client_addresses(lab, "10.0.0.4")  # a fresh source (a full bucket) for the runtime change
        view = web(h).rate_limit
        assert (view.per_source_rate, view.per_source_burst) == (RATE, BURST)

        # 500 SYNs in 0.9 s from the client's own address, while an established connection of that
        # same source keeps talking and another source (client 2) opens 40 new connections
        keepalive = KeepAlive(lab)
        new0, drops0 = web_counts(h, time.time())
        burst = SynBurst(lab, lab.client_ips[0], 65001, cpus=[0])
        other: dict[str, dict[str, int]] = {}
        burst.go()
        other_thread = threading.Thread(target=lambda: other.update(got=lab.http_requests(40, client=2)))
        other_thread.start()
        span = burst.span()
        other_thread.join(60)
        kept = keepalive.result()
        new1, drops1 = web_counts(h, time.time())
        admitted = SYNS - (drops1 - drops0)
        assert 80 <= admitted <= 120, (admitted, span)
        assert abs(admitted - expected_admitted(RATE, BURST, span)) <= 12, (admitted, span)
        assert other["got"].get("errors", 0) == 0 and sum(served(other["got"]).values()) == 40, other
        # every SYN reached the data path, and none of the other source's was dropped (a dropped SYN
        # would have been retransmitted: one more drop and one more new flow)
        assert (new1 - new0) + (drops1 - drops0) == SYNS + 40, (new1 - new0, drops1 - drops0)
        assert kept["errors"] == 0 and kept["ok"] >= 20 and kept["backends"] == [keepalive.opened], kept

        # a runtime change through the engine changes what gets in
        r = h.submit(model.SetRateLimit("web", per_source_rate=20, per_source_burst=20))
        assert r.ok, r.message
        view = web(h).rate_limit
        assert (view.per_source_rate, view.per_source_burst) == (20, 20)
        burst = SynBurst(lab, "10.0.0.4", 65001, cpus=[0])
        burst.go()
        span = burst.span()
        new2, drops2 = web_counts(h, time.time())
        admitted = SYNS - (drops2 - drops1)
        assert new2 - new1 == admitted
        assert abs(admitted - expected_admitted(20, 20, span)) <= 8, (admitted, span)


def test_per_source_rate_limit_is_shared_by_all_cpus(tmp_path):
    with running_lb("lbq", tmp_path, extra=RATE_LIMIT) as (lab, h):
        add_client_addresses(lab, "10.0.0.3")
        pinned = PinnedMaps("lbq")
        try:
            service_id = pinned.service(lab.vip, 80).id
            before = pinned.service_stats_per_cpu(service_id)
            new0, drops0 = web_counts(h, time.time())
            # 500 SYNs from one source in 0.9 s, half sent (and so run through XDP) on each CPU
            burst = SynBurst(lab, "10.0.0.3", 65001, cpus=[0, 1])
            burst.go()
            span = burst.span()
            new1, drops1 = web_counts(h, time.time())
            after = pinned.service_stats_per_cpu(service_id)
        finally:
            pinned.close()
        per_cpu = [sum(a) - sum(b) for a, b in zip(after, before, strict=True)]
        assert per_cpu[0] >= 200 and per_cpu[1] >= 200, f"SYNs seen per CPU: {per_cpu}"
        admitted = SYNS - (drops1 - drops0)
        assert new1 - new0 == admitted, (new1 - new0, drops1 - drops0)
        # the same numbers as from one CPU: one bucket for both, not one each (and no extra refills)
        assert 80 <= admitted <= 120, (admitted, span)
        assert abs(admitted - expected_admitted(RATE, BURST, span)) <= 12, (admitted, span)
