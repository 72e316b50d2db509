# SPDX-License-Identifier: Apache-2.0
"""Operating IPv6 backends end to end: health checks, drain, Maglev remapping, DNS backends from AAAA
records, all through the load balancer with real packets (issue 13, must-show 2).

The last test shows the same traffic in the JSON access log and in the Prometheus metrics, with IPv6
addresses as they should be written there.

Each test runs `lbtui --no-ui` in a dual-stack lab's LB namespace with IPv6 proxies (VIP6
fd00:10::1, backends [fd00:20::1N]:8080; `running_lb(family=6)`), drives it through its control
socket and sends real traffic from the client namespace to the IPv6 VIP; the backends answer with
their own names. Every test ends with no checksum error counted in any namespace.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import struct
import subprocess
import time
from collections import Counter
from collections.abc import Callable

import pytest

from lbtui import model
from lbtui.addresses import IPV6
from lbtui.control import selection
from lbtui.dataplane import structs
from lbtui.lab import VIP6
from tests.e2e.test_balancing import TABLE_SIZE, connect_from
from tests.e2e.test_dns import DNSMASQ, NAME, running_lb_with_dns, web_backends, write_hosts
from tests.support.lab import ClientLab
from tests.support.labtools import backend, running_lb, served, wait_until

CSUM_KEYS = ("TcpInCsumErrors", "Udp6InCsumErrors")  # TCP over IPv6 is counted in the one TCP MIB


def ep(lab: ClientLab, i: int) -> str:
    """Backend i's IPv6 endpoint as config, console and snapshots write it: "[fd00:20::1i]:8080"."""
    return lab.backend_endpoint(i, 8080, IPV6)


def http6(lab: ClientLab, count: int) -> dict[str, int]:
    """`count` GETs to the IPv6 VIP, a new connection each."""
    return lab.http_requests(count, url=lab.vip_url(IPV6))


def assert_no_checksum_errors(lab: ClientLab) -> None:
    errors = lab.nstat_csum_errors(CSUM_KEYS)
    assert all(v == dict.fromkeys(CSUM_KEYS, 0) for v in errors.values()), errors


# ---- health checks ------------------------------------------------------------------------------

HEALTH = """
[proxy.health]
type = "http"
path = "/healthz"
interval_ms = 500
timeout_ms = 250
rise = 2
fall = 2
"""


def test_an_ipv6_backend_whose_server_stops_leaves_rotation_and_comes_back(tmp_path):
    with running_lb("o6h", tmp_path, extra=HEALTH, family=IPV6) as (lab, h):
        b2 = ep(lab, 2)
        assert wait_until(lambda: all(backend(h, ep(lab, i)).health == model.Health.UP for i in (1, 2, 3)))
        got = http6(lab, 90)
        assert got.get("errors", 0) == 0 and set(served(got)) == {"b1", "b2", "b3"}, got

        lab.stop_backend(2)
        assert wait_until(lambda: backend(h, b2).health == model.Health.DOWN, timeout=10, interval=0.05)
        assert wait_until(lambda: backend(h, b2).effective_weight == 0, timeout=5, interval=0.05)
        got = http6(lab, 150)  # a connection sent to b2 now would be refused: an error
        assert got.get("errors", 0) == 0 and set(served(got)) == {"b1", "b3"}, got
        health = [e.message for e in h.events_since(0) if b2 in e.message]
        assert health, "an event names the IPv6 backend, bracketed"

        lab.start_backend(2)  # the same server again, on [fd00:20::12]:8080
        assert wait_until(lambda: backend(h, b2).health == model.Health.UP, timeout=10, interval=0.05)
        assert wait_until(lambda: backend(h, b2).effective_weight > 0, timeout=5, interval=0.05)
        got = http6(lab, 90)
        assert got.get("errors", 0) == 0 and "b2" in served(got), got
        # NAT mode: the backend saw the client's own IPv6 address (the checks come from fd00:20::1)
        assert lab.client_ips6[0] in {peer for peer, _ in lab.recorded_peers(2)}
        assert_no_checksum_errors(lab)


# ---- drain --------------------------------------------------------------------------------------


def test_a_drained_ipv6_backend_keeps_its_held_connections_and_ends_when_they_do(tmp_path):
    with running_lb("o6d", tmp_path, family=IPV6) as (lab, h):
        b1 = ep(lab, 1)
        # steer the long-lived connections to b1, then give every backend the same weight again
        assert h.submit(model.SetWeight("web", b1, 100_000)).ok
        held = lab.hold(20, seconds=4.0, host=VIP6)
        try:
            opened = held.opened()
            assert opened["backends"].get("b1", 0) >= 19 and opened.get("errors", 0) == 0, opened
            assert h.submit(model.SetWeight("web", b1, 1)).ok
            r = h.submit(model.Drain("web", b1, timeout_s=60))
            assert r.ok, r.message
            got = http6(lab, 120)  # new connections, right after the drain command
            assert got.get("errors", 0) == 0 and "b1" not in served(got), got
            assert backend(h, b1).drain == model.DrainState.DRAINING
            assert wait_until(lambda: backend(h, b1).active_flows >= 19, timeout=3)
            done = held.done()
        finally:
            held.stop()
        # every held connection still answered from b1 on its own connection
        assert done.get("errors", 0) == 0 and done["backends"].get("b1", 0) == opened["backends"]["b1"], done
        assert wait_until(lambda: backend(h, b1).drain == model.DrainState.DRAINED, timeout=15)
        assert backend(h, b1).active_flows == 0
        events = [e.message for e in h.events_since(0) if e.kind == "drain"]
        assert any("drained: 0 flows left" in m and b1 in m for m in events), events
        assert h.submit(model.Undrain("web", b1)).ok
        assert "b1" in served(http6(lab, 60))
        assert_no_checksum_errors(lab)


# ---- Maglev -------------------------------------------------------------------------------------


def fold6(ip: str) -> int:
    """bpf/lb.h lb_addr6_fold: the XOR of the address's four 32-bit words, read as the data path reads
    them (wire bytes as little-endian words, as structs.ip_to_be32 does for IPv4)."""
    a, b, c, d = struct.unpack("<4I", ipaddress.IPv6Address(ip).packed)
    return a ^ b ^ c ^ d


def maglev_slot6(saddr: str, sport: int, daddr: str, dport: int) -> int:
    """bpf/lb_pick.h's Maglev slot for an IPv6 flow: jhash_3words(fold(saddr), fold(daddr), ports)."""
    ports = (structs.port_to_be16(sport) << 16) | structs.port_to_be16(dport)
    return selection.jhash_3words(fold6(saddr), fold6(daddr), ports) % TABLE_SIZE


def predicted(lab: ClientLab, members: tuple[int, ...], pairs: list[tuple[str, int]]) -> list[str]:
    """The backend name of each (source, port) in the Maglev table of `members` (the engine builds
    its table from the endpoint texts, so the same names make the same table)."""
    table = selection.maglev_table({i: (ep(lab, i), 1) for i in members}, TABLE_SIZE)
    return [f"b{table[maglev_slot6(src, port, VIP6, 80)]}" for src, port in pairs]


def test_maglev_over_ipv6_removing_one_of_three_backends_remaps_only_its_flows(tmp_path):
    with running_lb("o6m", tmp_path, algorithm="maglev", family=IPV6) as (lab, h):
        pairs = [(lab.client_ips6[0], 20000 + i) for i in range(300)]
        before = connect_from(lab, pairs, vip=VIP6)
        assert before == predicted(lab, (1, 2, 3), pairs), "each flow got the slot the hash selects"
        spread = Counter(before)
        assert set(spread) == {"b1", "b2", "b3"} and min(spread.values()) >= 60, spread
        assert connect_from(lab, pairs, vip=VIP6) == before, "the same 5-tuples, the same backends"

        r = h.submit(model.RemoveBackend("web", ep(lab, 2)))
        assert r.ok, r.message
        assert wait_until(lambda: len(h.snapshot().service("web").backends) == 2)
        after = connect_from(lab, pairs, vip=VIP6)
        assert after == predicted(lab, (1, 3), pairs)
        moved_from_b2 = [i for i, name in enumerate(before) if name == "b2"]
        kept = [i for i, name in enumerate(before) if name != "b2"]
        assert all(after[i] in ("b1", "b3") for i in moved_from_b2)
        moved_kept = [i for i in kept if after[i] != before[i]]
        print(
            f"\nmaglev over IPv6: {len(moved_from_b2)} flows of the removed backend moved, "
            f"{len(moved_kept)} of {len(kept)} others moved"
        )
        # Maglev keeps all but a sliver of the other slots (0.016 % of them for these three names)
        assert moved_kept == [], moved_kept
        assert_no_checksum_errors(lab)


# ---- DNS backends from AAAA records --------------------------------------------------------------


def a_and_aaaa(backends: tuple[int, ...]) -> Callable[[ClientLab], list[str]]:
    """A and AAAA records of the name for these backends: an IPv6 proxy must take only the AAAA ones."""
    return lambda lab: [ip for i in backends for ip in (lab.backend_ip(i), lab.backend_ip6(i))]


@pytest.mark.requires(DNSMASQ)
def test_dns_backends_from_aaaa_records_carry_ipv6_traffic(tmp_path):
    with running_lb_with_dns(tmp_path, "o6n", IPV6, a_and_aaaa((1, 2, 3))) as (lab, h, dnsmasq):
        source = f"dns:{NAME}"
        want = {ep(lab, 4): "static"} | {ep(lab, i): source for i in (1, 2, 3)}
        assert wait_until(lambda: web_backends(h) == want, timeout=10), web_backends(h)
        (status,) = [s for s in h.snapshot().dns if s.hostname == NAME]
        assert status.addresses == tuple(lab.backend_ip6(i) for i in (1, 2, 3)), status
        got = http6(lab, 160)
        assert got.get("errors", 0) == 0 and set(served(got)) == {"b1", "b2", "b3", "b4"}, got

        # b3's records go: its backend leaves the group within a refresh and gets no new connection
        write_hosts(dnsmasq.hosts, a_and_aaaa((1, 2))(lab))
        dnsmasq.reload()
        t0 = time.monotonic()
        assert wait_until(lambda: len(web_backends(h)) == 3, timeout=15, interval=0.05), web_backends(h)
        print(f"\nAAAA change followed after {time.monotonic() - t0:.2f} s (refresh 1 s)")
        b3_before = len(lab.recorded_peers(3))
        got = http6(lab, 120)
        assert got.get("errors", 0) == 0 and set(served(got)) == {"b1", "b2", "b4"}, got
        assert len(lab.recorded_peers(3)) == b3_before
        messages = [e.message for e in h.events_since(0) if e.kind == "dns"]
        ip6 = [lab.backend_ip6(i) for i in (1, 2, 3)]
        assert any(f"now resolves to {ip6[0]}, {ip6[1]} (was" in m for m in messages), messages
        assert_no_checksum_errors(lab)


# ---- access log and metrics ---------------------------------------------------------------------

METRICS = "127.0.0.1:9116"


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_ipv6_flows_in_the_json_access_log_and_the_metrics(tmp_path):
    access = tmp_path / "access.log"
    log_table = f'[settings.access_log]\nformat = "json"\nfile = "{access}"\n'
    settings = "tcp_closing_timeout_s = 1\n"
    with running_lb(
        "o6o", tmp_path, settings=settings, metrics_listen=METRICS, family=IPV6, tables=log_table
    ) as (lab, h):
        got = http6(lab, 60)
        assert got.get("errors", 0) == 0 and sum(served(got).values()) == 60, got

        def closed() -> list[dict[str, object]]:
            lines = [json.loads(x) for x in access.read_text().splitlines() if x.strip()]
            return [x for x in lines if x["event"] == "closed" and x["proxy"] == "web"]

        assert wait_until(lambda: len(closed()) >= 60, timeout=15), len(closed())
        lines = closed()
        # addresses are plain canonical text in their own fields (the port beside them, no brackets)
        assert {x["client_ip"] for x in lines} == {lab.client_ips6[0]}
        assert {x["vip_ip"] for x in lines} == {VIP6}
        assert {x["backend_ip"] for x in lines} <= {lab.backend_ip6(i) for i in lab.backend_ids}
        logged = Counter((x["client_ip"], x["client_port"], x["backend_ip"]) for x in lines)
        recorded = Counter(
            (peer, port, lab.backend_ip6(i))
            for i in lab.backend_ids
            for peer, port in lab.recorded_peers(i)
            if peer == lab.client_ips6[0]
        )
        assert logged == recorded, "one close line per connection, on the backend that accepted it"

        def scrape() -> str:
            return lab.run(lab.ns_lb, "curl", "-sf", f"http://{METRICS}/metrics").stdout

        def counted(text: str) -> dict[str, float]:
            return {
                f"b{i}": metric(text, "lbtui_connections_total", proxy="web", backend=ep(lab, i))
                for i in lab.backend_ids
            }

        # the page shows the latest snapshot (one a second): wait for the one after the traffic
        assert wait_until(lambda: counted(scrape()) == served(got), timeout=10), (counted(scrape()), got)
        text = scrape()
        if shutil.which("promtool"):
            r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
            assert r.returncode == 0, r.stdout + r.stderr
        assert_no_checksum_errors(lab)


# ---- IPv6 added by a reload -------------------------------------------------------------------


def test_a_reload_adding_the_first_ipv6_proxies_loads_the_ipv6_programs(tmp_path):
    """An IPv4-only start leaves the IPv6 programs unloaded (docs/datapath.md#ipv6); the reload that
    adds IPv6 proxies loads them, and IPv6 connections are balanced from then on, IPv4 ones still."""
    with running_lb("o6r", tmp_path, dual_stack_backends=True) as (lab, h):
        assert lab.http_requests(20).get("errors", 0) == 0
        text = lab.config_toml(weights=(1, 1, 1), ipv6_twins=True)
        (tmp_path / "lbtui.toml").write_text(
            text.replace("[settings]\n", "[settings]\nsweep_interval_s = 0.25\n", 1)
        )
        result = h.submit(model.Reload(), timeout=60.0)
        assert result.ok, result.message
        got = http6(lab, 30)
        assert got.get("errors", 0) == 0 and sum(got.values()) == 30, got
        assert len(got) >= 2, f"one backend took every IPv6 connection: {got}"
        assert lab.http_requests(20).get("errors", 0) == 0
        assert_no_checksum_errors(lab)
