# SPDX-License-Identifier: Apache-2.0
"""DNS backends on the real Engine over the in-memory dataplane: the first resolution, changes of the
A records (addresses added and retired), failures that keep the last good set, and runtime
overrides that a DNS change must leave alone. DNS answers come from `Probes`."""

from __future__ import annotations

import pytest

from lbtui import model
from tests.support.engine import BASE_SETTINGS, Probes, messages, running, settle

pytestmark = pytest.mark.anyio

NAME = "api.example"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def dns_proxy(name: str, port: int, refresh_s: float = 0.02) -> str:
    return f"""
[[proxy]]
name = "{name}"
interfaces = ["lb0"]
vip = "10.0.0.1"
port = {port}
[[proxy.backend]]
address = "10.0.2.11:8080"
weight = 2
[[proxy.backend]]
host = "{NAME}"
port = 8080
weight = 6
dns_refresh_s = {refresh_s}
"""


def members(e, proxy: str = "web") -> dict[str, tuple[int, str]]:
    e.publish()
    return {b.address: (b.configured_weight, b.source) for b in e.snapshot().service(proxy).backends}


async def test_names_resolve_before_traffic_and_share_their_weight():
    probes = Probes(dns={NAME: ("10.0.5.2", "10.0.5.1", "10.0.5.3", "not-an-ip")})
    async with running(dns_proxy("web", 80, refresh_s=60), probes=probes) as (e, _dp):
        assert members(e) == {
            "10.0.2.11:8080": (2, "static"),
            "10.0.5.1:8080": (2, f"dns:{NAME}"),
            "10.0.5.2:8080": (2, f"dns:{NAME}"),
            "10.0.5.3:8080": (2, f"dns:{NAME}"),
        }
        assert messages(e, "dns") == [
            f"web: {NAME}: rejected 'not-an-ip' (not an IPv4 address)",
            f"web: {NAME} resolves to 10.0.5.1, 10.0.5.2, 10.0.5.3",
        ]


async def test_a_name_that_does_not_resolve_has_no_backends_until_it_does():
    probes = Probes()
    async with running(dns_proxy("web", 80), probes=probes) as (e, _dp):
        assert set(members(e)) == {"10.0.2.11:8080"}
        warning = [ev for ev in e.events_since(0) if ev.kind == "dns"][0]
        assert warning.message == f"web: {NAME} did not resolve; it has no backends until it does"
        assert warning.level is model.Level.WARNING
        probes.dns[NAME] = ("10.0.5.9",)
        await settle(lambda: "10.0.5.9:8080" in members(e), "the first answer")
        assert members(e)["10.0.5.9:8080"] == (6, f"dns:{NAME}")


async def test_changed_records_add_and_retire_backends():
    probes = Probes(dns={NAME: ("10.0.5.1", "10.0.5.2")})
    async with running(dns_proxy("web", 80), probes=probes) as (e, dp):
        old = e.backend_id("web", "10.0.5.1:8080")
        flow = dp.connect("192.0.2.8:4444", "10.0.0.1:80")
        probes.dns[NAME] = ("10.0.5.2", "10.0.5.3")
        await settle(lambda: "10.0.5.3:8080" in members(e), "the new address")
        assert set(members(e)) == {"10.0.2.11:8080", "10.0.5.2:8080", "10.0.5.3:8080"}
        assert f"web: {NAME} now resolves to 10.0.5.2, 10.0.5.3 (was 10.0.5.1, 10.0.5.2)" in messages(
            e, "dns"
        )
        assert dp.read_backends()[old].active is False
        assert old not in set(dp.read_table(e.group_id("web")))
        assert flow is not None and dp.conntrack_count() == 2  # tracked flows are not touched


async def test_a_failing_server_keeps_the_last_good_set():
    probes = Probes(dns={NAME: ("10.0.5.1",)})
    async with running(dns_proxy("web", 80), probes=probes) as (e, _dp):
        probes.dns_failing.add(NAME)
        await settle(
            lambda: e.snapshot().dns and e.snapshot().dns[0].consecutive_failures >= 2 or e.publish(),
            "failures",
        )
        status = e.snapshot().dns[0]
        assert (status.hostname, status.addresses, status.last_error) == (
            NAME,
            ("10.0.5.1",),
            "timeout after 2s",
        )
        assert "10.0.5.1:8080" in members(e)


async def test_a_dns_change_keeps_every_runtime_override_in_every_proxy():
    probes = Probes(dns={NAME: ("10.0.5.1", "10.0.5.2")})
    text = dns_proxy("web", 80) + dns_proxy("api", 81)
    async with running(text, probes=probes) as (e, _dp):
        for p in ("web", "api"):
            for cmd in (
                model.AddBackend(p, "10.0.2.50:8080", 4),
                model.RemoveBackend(p, "10.0.2.11:8080"),
                model.SetWeight(p, "10.0.5.2:8080", 9),
            ):
                assert (await e.execute(cmd)).ok, cmd
        probes.dns[NAME] = ("10.0.5.2", "10.0.5.3")
        await settle(lambda: all("10.0.5.3:8080" in members(e, p) for p in ("web", "api")), "the change")
        for p in ("web", "api"):
            assert members(e, p) == {
                "10.0.5.2:8080": (9, f"dns:{NAME}"),
                "10.0.5.3:8080": (3, f"dns:{NAME}"),
                "10.0.2.50:8080": (4, "static"),
            }, p


async def test_a_hostile_answer_gives_only_usable_backends_and_a_warning():
    """A VIP of ours, loopback, link-local, multicast and the wrong family never become backends."""
    probes = Probes(dns={NAME: ("10.0.5.1",)})
    async with running(dns_proxy("web", 80), probes=probes) as (e, dp):
        probes.dns[NAME] = ("10.0.5.2", "10.0.0.1", "127.0.0.1", "169.254.169.254", "224.0.0.5", "::1")
        await settle(lambda: "10.0.5.2:8080" in members(e), "the new answer")
        assert set(members(e)) == {"10.0.2.11:8080", "10.0.5.2:8080"}
        assert {f"{b.ip}:{b.port}" for b in dp.read_backends().values() if b.active} == set(members(e))
        warnings = [ev for ev in e.events_since(0) if ev.kind == "dns" and ev.level is model.Level.WARNING]
        assert [w.message for w in warnings] == [
            f"web: {NAME}: rejected 127.0.0.1 (loopback), 169.254.169.254 (link-local), "
            "224.0.0.5 (multicast), '::1' (not an IPv4 address), 10.0.0.1 (a VIP of this load balancer)"
        ]


def many(n: int) -> tuple[str, ...]:
    return tuple(f"10.6.{i // 250}.{i % 250 + 1}" for i in range(n))


async def test_a_huge_answer_is_capped_and_leaves_no_half_applied_state():
    """5000 records: before, ids ran out half way (4096 members, the rest an exception in the DNS
    callback); now the first max_records (64) are used and the rest is said."""
    probes = Probes(dns={NAME: ("10.0.5.1",)})
    async with running(dns_proxy("web", 80), probes=probes) as (e, dp):
        probes.dns[NAME] = many(5000)
        await settle(lambda: len(members(e)) > 2, "the new answer")
        assert set(members(e)) == {
            "10.0.2.11:8080",
            *(f"{a}:8080" for a in sorted(many(5000), key=_num)[:64]),
        }
        assert len([b for b in dp.read_backends().values() if b.active]) == 65
        assert (
            f"web: {NAME}: 4936 usable addresses beyond the first 64 ignored (settings.dns.max_records)"
            in (messages(e, "dns"))
        )


def _num(address: str) -> tuple[int, ...]:
    return tuple(int(x) for x in address.split("."))


async def test_an_answer_the_maps_cannot_hold_is_refused_before_any_write():
    """max_records 1024 but table_size 97: 200 records cannot fit a group. The answer is refused
    before anything is written; the last good set, the maps and the status say so."""
    text = BASE_SETTINGS + "[settings.dns]\nmax_records = 1024\n" + dns_proxy("web", 80)
    probes = Probes(dns={NAME: ("10.0.5.1",)})
    async with running(text, probes=probes) as (e, dp):
        backends_before = dp.read_backends()
        table_before = list(dp.read_table(e.group_id("web")))
        probes.dns[NAME] = many(200)
        await settle(lambda: e.snapshot().dns[0].consecutive_failures >= 1 or e.publish(), "the refusal")
        assert set(members(e)) == {"10.0.2.11:8080", "10.0.5.1:8080"}
        assert dp.read_backends() == backends_before
        assert list(dp.read_table(e.group_id("web"))) == table_before
        status = e.snapshot().dns[0]
        assert status.addresses == ("10.0.5.1",)
        assert status.last_error == (
            "answer not applied: web: 201 backends in group default do not fit settings.table_size = 97"
        )
        assert any("new answer not applied, keeping 10.0.5.1" in m for m in messages(e, "dns"))
        # a command still works: the refused answer left nothing behind
        assert (await e.execute(model.SetWeight("web", "10.0.5.1:8080", 3))).ok
