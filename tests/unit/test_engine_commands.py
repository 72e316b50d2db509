# SPDX-License-Identifier: Apache-2.0
"""Every operator command on the real Engine over the in-memory dataplane: accepted and refused, with
the exact answer the operator reads, and what it does to the maps and the snapshot."""

from __future__ import annotations

from collections import Counter

import pytest

from lbtui import model
from lbtui.control.selection import slot_counts
from lbtui.dataplane.port import RateLimits
from lbtui.engine import MAX_WEIGHT
from tests.support.engine import TWO_PROXIES, messages, running

pytestmark = pytest.mark.anyio

WEB1, WEB2, WEB3, ROUTED = "10.0.2.11:8080", "10.0.2.12:8080", "10.0.2.13:8080", "10.0.3.10:8080"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def weights(engine, proxy: str = "web") -> dict[str, tuple[int, int]]:
    svc = engine.snapshot().service(proxy)
    return {b.address: (b.configured_weight, b.effective_weight) for b in svc.all_backends()}


def shares(engine, proxy: str = "web") -> dict[str, int]:
    """Slots per backend address in the proxy's default table, as the data path holds it."""
    table = engine.dataplane.read_table(engine.group_id(proxy))
    backends = engine.dataplane.read_backends()
    return {f"{backends[bid].ip}:{backends[bid].port}": n for bid, n in slot_counts(table).items()}


async def test_set_weight_changes_the_table_and_says_so():
    async with running(TWO_PROXIES) as (e, _dp):
        r = await e.execute(model.SetWeight("web", WEB3, 6))
        assert r == model.CommandResult(True, f"{WEB3} weight 6")
        assert weights(e)[WEB3] == (6, 6)
        assert shares(e) == {WEB1: 26, WEB2: 18, WEB3: 53}  # 3:2:6 of 97 slots, largest remainders
        assert messages(e, "weight")[-1] == f"{WEB3} effective weight 1 -> 6 (ok; weight set to 6)"


@pytest.mark.parametrize("bad", [0, -1, MAX_WEIGHT + 1, 1.5, True, "3"])
async def test_set_weight_refuses_what_is_not_a_weight(bad):
    async with running(TWO_PROXIES) as (e, _dp):
        before = e.dataplane.read_table(e.group_id("web"))
        r = await e.execute(model.SetWeight("web", WEB1, bad))
        assert r == model.CommandResult(False, f"weight must be an integer 1..{MAX_WEIGHT}, got {bad!r}")
        assert e.dataplane.read_table(e.group_id("web")) == before
        assert (
            messages(e, "command")[-1]
            == f"SetWeight refused: weight must be an integer 1..{MAX_WEIGHT}, got {bad!r}"
        )


async def test_commands_on_what_does_not_exist_are_refused():
    async with running(TWO_PROXIES) as (e, _dp):
        cases = {
            model.SetWeight("nope", WEB1, 2): "no proxy named 'nope' (have: dns, web)",
            model.SetWeight("web", "10.9.9.9:1", 2): "proxy 'web' has no backend 10.9.9.9:1",
            model.Drain("web", "10.9.9.9:1"): "proxy 'web' has no backend 10.9.9.9:1",
            model.Undrain("nope", WEB1): "no proxy named 'nope' (have: dns, web)",
            model.AddBackend("nope", "10.0.2.20:8080"): "no proxy named 'nope'",
            model.RemoveBackend("nope", WEB1): "no proxy named 'nope'",
            model.SetRateLimit("nope", per_source_rate=1): "no proxy named 'nope'",
            model.CircuitCommand("web", "10.9.9.9:1", "reset"): "proxy 'web' has no backend 10.9.9.9:1",
        }
        for cmd, message in cases.items():
            assert await e.execute(cmd) == model.CommandResult(False, message), cmd
        refused = [m for m in messages(e, "command")]
        assert len(refused) == len(cases)


async def test_set_weight_applies_to_every_group_that_has_the_backend():
    shared = TWO_PROXIES.replace(
        'backends = [{ address = "10.0.3.10:8080", weight = 1 }]',
        'backends = [{ address = "10.0.3.10:8080", weight = 1 }, { address = "10.0.2.11:8080", weight = 1 }]',
    )
    async with running(shared) as (e, _dp):
        assert (await e.execute(model.SetWeight("web", WEB1, 9))).ok
        views = [b for b in e.snapshot().service("web").all_backends() if b.address == WEB1]
        assert [(b.group, b.configured_weight) for b in views] == [("default", 9), ("192.168.0.0/16", 9)]


async def test_add_backend_takes_traffic_and_remove_backend_keeps_its_flows(dp_flows=50):
    async with running(TWO_PROXIES) as (e, dp):
        new = "10.0.2.20:8080"
        r = await e.execute(model.AddBackend("web", new, 4))
        assert r == model.CommandResult(True, f"added {new} weight 4 to web")
        assert weights(e)[new] == (4, 4) and e.snapshot().backend("web", new).source == "static"
        flows = [dp.connect(f"192.0.2.9:{2000 + i}", "10.0.0.1:80") for i in range(200)]
        assert Counter(f.backend_address for f in flows if f)[new] > 50
        again = await e.execute(model.AddBackend("web", new, 4))
        assert again == model.CommandResult(False, f"web already has backend {new}")

        bid = e.backend_id("web", new)
        r = await e.execute(model.RemoveBackend("web", new))
        assert r == model.CommandResult(True, f"removed {new} from web; its established flows continue")
        assert new not in weights(e)
        assert bid not in set(e.dataplane.read_table(e.group_id("web")))  # no slot points at it
        assert e.dataplane.read_backends()[bid].active is False
        keys, vals = dp.conntrack_arrays()
        assert int((vals["backend_id"] == bid).sum()) > 0  # its tracked flows are untouched
        gone = await e.execute(model.RemoveBackend("web", new))
        assert gone == model.CommandResult(False, f"web has no backend {new}")


FORMS = '"ip:port" (IPv4) or "[ip]:port" (IPv6)'
NOT_UNICAST = "(not 0.0.0.0, multicast or broadcast)"
NO_BRACKETS = 'an IPv6 address needs brackets, e.g. "[fd00::20]:80"'
ONE_FAMILY = ": a proxy's VIP and backends are one address family"


@pytest.mark.parametrize(
    ("address", "weight", "message"),
    [
        ("10.0.2.20", 1, f"backend '10.0.2.20': expected {FORMS}: the port is missing"),
        ("host:80", 1, "backend 'host:80': expected an IPv4 or IPv6 address"),
        ("10.0.2.20:0", 1, "backend '10.0.2.20:0': expected a port from 1 to 65535, got '0'"),
        ("224.0.0.1:80", 1, f"backend '224.0.0.1:80': expected a unicast IPv4 address {NOT_UNICAST}"),
        ("[fd00::20]:80", 1, "web has the IPv4 VIP 10.0.0.1; backend [fd00::20]:80 is IPv6" + ONE_FAMILY),
        ("fd00::20:80", 1, f"backend 'fd00::20:80': expected {FORMS}: {NO_BRACKETS}"),
        ("10.0.2.20:80", 0, f"weight must be an integer 1..{MAX_WEIGHT}, got 0"),
    ],
)
async def test_add_backend_refuses_bad_input(address, weight, message):
    async with running(TWO_PROXIES) as (e, _dp):
        assert await e.execute(model.AddBackend("web", address, weight)) == model.CommandResult(
            False, message
        )
        assert len(weights(e)) == 4


async def test_rate_limits_partial_update_default_burst_and_removal():
    async with running(TWO_PROXIES) as (e, dp):
        sid = e.topology.proxies["web"].service_id
        r = await e.execute(model.SetRateLimit("web", per_source_rate=50, per_backend_rate=0))
        assert r == model.CommandResult(True, "web rate limits: per source 50/s burst 200, per backend off")
        assert dp.state.services[("10.0.0.1", 80, "tcp")].limits == RateLimits(50, 200, 0, 0)
        assert e.snapshot().service("web").rate_limit == model.RateLimitView(50, 200, None, None)
        r = await e.execute(model.SetRateLimit("dns", per_backend_rate=300))
        assert r.message == "dns rate limits: per source off, per backend 300/s burst 300"
        assert messages(e, "ratelimit") == [
            "web rate limits: per source 50/s burst 200, per backend off",
            "dns rate limits: per source off, per backend 300/s burst 300",
        ]
        bad = await e.execute(model.SetRateLimit("web", per_source_burst=-1))
        assert bad == model.CommandResult(False, f"rates and bursts must be integers 0..{MAX_WEIGHT}, got -1")
        assert e.topology.proxies["web"].service_id == sid


async def test_circuit_commands():
    async with running(TWO_PROXIES) as (e, _dp):
        r = await e.execute(model.CircuitCommand("web", WEB1, "force_open"))
        assert r == model.CommandResult(True, f"circuit of {WEB1} held open")
        assert e.snapshot().backend("web", WEB1).circuit is model.Circuit.OPEN
        assert WEB1 not in {f for f in shares(e)}
        r = await e.execute(model.CircuitCommand("web", WEB1, "reset"))
        assert r == model.CommandResult(True, f"circuit of {WEB1} closed")
        assert (
            await e.execute(model.CircuitCommand("web", WEB1, "reset"))
        ).message == f"circuit of {WEB1} already closed"
        no_breaker = await e.execute(model.CircuitCommand("dns", "10.0.4.10:53", "reset"))
        assert no_breaker == model.CommandResult(False, "10.0.4.10:53 has no circuit breaker configured")
        unknown = await e.execute(model.CircuitCommand("web", WEB1, "explode"))
        assert unknown == model.CommandResult(
            False, "unknown circuit action 'explode' (expected force_open, force_close, reset)"
        )


async def test_reload_without_a_file_and_stop():
    async with running(TWO_PROXIES, from_file=False) as (e, _dp):
        r = await e.execute(model.Reload())
        assert r == model.CommandResult(False, "no configuration file to reload (started from a string)")
        assert await e.execute(model.Stop()) == model.CommandResult(True, "stopping")
        await e.wait_stopped()
        assert not e.running and not e.snapshot().running
        assert messages(e, "stopped") == ["load balancer stopped; programs detached and unpinned"]


async def test_unknown_command_and_internal_errors_are_answered_not_raised():
    async with running(TWO_PROXIES) as (e, dp):
        assert await e.execute(object()) == model.CommandResult(False, "unknown command object")  # type: ignore[arg-type]

        def broken(*_args: object) -> None:
            raise OSError("map write failed")

        dp.write_slots = broken  # type: ignore[method-assign]
        r = await e.execute(model.SetWeight("web", WEB1, 5))
        assert r == model.CommandResult(False, "internal error: map write failed")
        assert e.running
