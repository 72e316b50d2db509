# SPDX-License-Identifier: Apache-2.0
"""Reloads on the real Engine over the in-memory dataplane: the configuration diff and its summary,
refusals, rollback after a failure half-way (everything as it was, slot for slot), established flows
left alone, runtime overrides across a reload, and the file watch."""

from __future__ import annotations

import asyncio

import pytest

from lbtui import model
from lbtui.config import ConfigError, load_config
from tests.support.engine import TWO_PROXIES, WATCHED_SETTINGS, messages, running, settle

pytestmark = pytest.mark.anyio

WEB1, WEB2, WEB3 = "10.0.2.11:8080", "10.0.2.12:8080", "10.0.2.13:8080"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def rewrite(e, old: str, new: str, count: int = 1) -> None:
    path = e.config.path
    with open(path) as f:
        text = f.read()
    assert old in text, old
    with open(path, "w") as f:
        f.write(text.replace(old, new, count))


def state(e) -> dict[str, object]:
    """Everything a reload may change: configuration, overrides, maps, and what the snapshot says."""
    dp = e.dataplane
    e.publish()
    snap = e.snapshot()
    return {
        "config": e.config,
        "overrides": e.overrides,
        "services": sorted(dp.read_services()),
        "service_entries": sorted(dp.state.services.values(), key=repr),
        "routes": sorted(dp.read_routes()),
        "backends": sorted(dp.read_backends().items()),
        "tables": {g: dp.read_table(g) for g in sorted(dp.state.tables)},
        "interfaces": dp.interfaces,
        "weights": sorted(
            (b.proxy, b.group, b.address, b.configured_weight, b.effective_weight)
            for s in snap.services
            for b in s.all_backends()
        ),
    }


async def test_reload_applies_the_difference_and_summarises_it():
    async with running(TWO_PROXIES) as (e, _dp):
        web_id = e.topology.proxies["web"].service_id
        rewrite(e, 'address = "10.0.2.13:8080"\nweight = 1', 'address = "10.0.2.14:8080"\nweight = 1')
        rewrite(e, 'address = "10.0.2.11:8080"\nweight = 3', 'address = "10.0.2.11:8080"\nweight = 5')
        rewrite(e, 'cidr = "192.168.0.0/16"', 'cidr = "172.16.0.0/12"')
        rewrite(e, 'algorithm = "maglev"', 'algorithm = "source-hash"')
        rewrite(e, "port = 53\n", "port = 5353\n")
        r = await e.execute(model.Reload())
        summary = (
            "web: removed route 192.168.0.0/16; web: removed backend 10.0.2.13:8080; "
            "web: 10.0.2.11:8080 weight 3 -> 5; web: added backend 10.0.2.14:8080 weight 1; "
            "web: added route 172.16.0.0/12; web: added backend 10.0.3.10:8080 weight 1; "
            "dns: moved to 10.0.0.1:5353/udp; added proxy dns; "
            "dns: added backend 10.0.4.10:53 weight 1; dns: added backend 10.0.4.11:53 weight 1"
        )
        assert r.ok and r.message.startswith(f"{summary} (applied in "), r.message
        assert messages(e, "reload")[-1].startswith(f"reloaded {e.config.path} in ")
        assert messages(e, "reload")[-1].endswith(f" ms: {summary}")
        assert e.topology.proxies["web"].service_id == web_id  # kept: conntrack entries carry it
        assert sorted(s[:3] for s in e.dataplane.read_services()) == [
            ("10.0.0.1", 80, "tcp"),
            ("10.0.0.1", 5353, "udp"),
        ]
        assert [r.cidr for r in e.dataplane.read_routes()] == ["172.16.0.0/12"]
        assert e.snapshot().service("dns").algorithm == "source-hash"


async def test_added_and_removed_proxies():
    async with running(TWO_PROXIES) as (e, _dp):
        text = open(e.config.path).read()
        with open(e.config.path, "w") as f:
            f.write(text.replace('name = "dns"', 'name = "dns2"'))
        r = await e.execute(model.Reload())
        assert r.message.startswith(
            "removed proxy dns; added proxy dns2; dns2: added backend 10.0.4.10:53 weight 1; "
            "dns2: added backend 10.0.4.11:53 weight 1 (applied in "
        )
        assert [s.name for s in e.snapshot().services] == ["web", "dns2"]


async def test_nothing_changed_and_refusals_leave_everything_as_it_was():
    async with running(TWO_PROXIES) as (e, _dp):
        before = state(e)
        assert (await e.reload()) == model.CommandResult(True, "nothing changed")
        assert messages(e, "reload")[-1] == f"reloaded {e.config.path}: nothing changed"
        rewrite(e, "port = 80\n", "port = 0\n")
        r = await e.reload()
        with pytest.raises(ConfigError) as err:
            load_config(e.config.path)
        assert r == model.CommandResult(False, str(err.value))
        assert messages(e, "reload")[-1] == f"reload refused, configuration unchanged:\n{err.value}"
        rewrite(e, "port = 0\n", "port = 80\n")
        rewrite(e, "table_size = 97", "table_size = 101")
        r = await e.reload()
        assert r == model.CommandResult(
            False,
            f"{e.config.path}: settings.table_size needs a restart; configuration unchanged",
            ("settings.table_size 97 -> 101 (needs a restart: the reload is refused)",),
        )
        assert state(e) == before


async def test_a_failure_half_way_is_rolled_back_slot_for_slot():
    async with running(TWO_PROXIES, interfaces={"lb0"}) as (e, dp):
        assert (await e.execute(model.SetWeight("web", WEB2, 7))).ok
        before = state(e)
        # new weights (tables rewritten), a new backend, and an interface that does not exist
        rewrite(e, 'address = "10.0.2.11:8080"\nweight = 3', 'address = "10.0.2.11:8080"\nweight = 9')
        rewrite(
            e,
            'interfaces = ["lb0"]\nvip = "10.0.0.1"\nport = 53',
            'interfaces = ["lb0", "lb1"]\nvip = "10.0.0.1"\nport = 53',
        )
        r = await e.reload()
        assert r == model.CommandResult(
            False,
            f"reload of {e.config.path} failed and was rolled back: "
            "no interface named 'lb1' in this network namespace",
        )
        assert state(e) == before
        # a map write failing in the middle of the apply
        rewrite(e, '"lb0", "lb1"', '"lb0"')
        rewrite(e, 'address = "10.0.4.11:53"', 'address = "10.0.4.12:53"')
        real = dp.set_backend

        def failing(backend_id: int, ip: str, port: int, active: bool) -> None:
            if ip == "10.0.4.12":
                raise OSError("injected map failure")
            real(backend_id, ip, port, active)

        dp.set_backend = failing  # type: ignore[method-assign]
        r = await e.reload()
        assert not r.ok and r.message.endswith("rolled back: injected map failure")
        assert state(e) == before
        dp.set_backend = real  # type: ignore[method-assign]
        assert (await e.reload()).ok
        assert state(e) != before


async def test_a_reload_never_disturbs_established_flows():
    async with running(TWO_PROXIES) as (e, dp):
        flows = [dp.connect(f"192.0.2.1:{7000 + i}", "10.0.0.1:80") for i in range(30)]
        keys, vals = dp.conntrack_arrays()
        rewrite(e, 'address = "10.0.2.11:8080"\nweight = 3', 'address = "10.0.2.15:8080"\nweight = 3')
        rewrite(e, "weight = 2", "weight = 20")
        assert (await e.reload()).ok
        keys_after, vals_after = dp.conntrack_arrays()
        assert (keys_after == keys).all() and (vals_after == vals).all()
        web1 = [f for f in flows if f and f.backend_address == WEB1]
        assert web1 and all(dp.state.backends[f.backend_id].ip == "10.0.2.11" for f in web1)
        for f in web1:
            dp.transfer(f, bytes_in=100, bytes_out=1000)  # its flows still move, to the old backend


async def test_runtime_overrides_across_a_reload():
    async with running(TWO_PROXIES) as (e, _dp):
        for cmd in (
            model.SetWeight("web", WEB1, 8),
            model.SetWeight("web", WEB2, 9),
            model.SetRateLimit("web", per_source_rate=7),
            model.SetRateLimit("dns", per_backend_rate=70),
            model.AddBackend("web", "10.0.2.30:8080", 2),
            model.Drain("web", WEB3),
        ):
            assert (await e.execute(cmd)).ok, cmd
        # the file changes WEB2's weight and web's rate limits, and adds a backend to dns
        rewrite(e, "weight = 2", "weight = 4")
        rewrite(e, "per_source = { rate = 100, burst = 200 }", "per_source = { rate = 300, burst = 600 }")
        rewrite(
            e,
            'address = "10.0.4.11:53"\nweight = 1',
            'address = "10.0.4.11:53"\nweight = 1\n[[proxy.backend]]\naddress = "10.0.4.12:53"\nweight = 1',
        )
        assert (await e.execute(model.Reload())).ok
        snap = e.snapshot()
        assert snap.backend("web", WEB1).configured_weight == 8  # unchanged in the file: kept
        assert snap.backend("web", WEB2).configured_weight == 4  # changed in the file: the file wins
        assert snap.service("web").rate_limit.per_source_rate == 300
        assert snap.service("dns").rate_limit.per_backend_rate == 70
        assert snap.backend("web", "10.0.2.30:8080") is None  # membership is the file's again
        assert snap.backend("web", WEB3).drain is model.DrainState.DRAINING


async def test_the_file_watch_reloads_a_changed_file():
    async with running(WATCHED_SETTINGS + TWO_PROXIES, loops=True) as (e, _dp):
        rewrite(e, 'address = "10.0.2.11:8080"\nweight = 3', 'address = "10.0.2.11:8080"\nweight = 6')
        await settle(lambda: e.snapshot().backend("web", WEB1).configured_weight == 6, "the watch", 10)
        assert any(m.startswith(f"reloaded {e.config.path} in ") for m in messages(e, "reload"))


async def test_the_file_is_watched_only_when_watch_config_is_on():
    async with running(TWO_PROXIES, loops=True) as (e, _dp):
        assert not e.config.settings.watch_config  # off by default
        rewrite(e, 'address = "10.0.2.11:8080"\nweight = 3', 'address = "10.0.2.11:8080"\nweight = 6')
        await asyncio.sleep(1.5)  # several times the watch's debounce: a live watch would have reloaded
        assert e.snapshot().backend("web", WEB1).configured_weight == 3
        assert not messages(e, "reload")
        # a reload that turns it on applies the file and starts the watch
        rewrite(e, "[settings]\n", "[settings]\nwatch_config = true\n")
        assert (await e.execute(model.Reload())).ok
        assert e.snapshot().backend("web", WEB1).configured_weight == 6
        await settle(lambda: e.reloader.watching.is_set(), "the watch to start", 10)
        rewrite(e, "weight = 6", "weight = 7")
        await settle(lambda: e.snapshot().backend("web", WEB1).configured_weight == 7, "the watch", 10)
        # and one that turns it off stops it
        rewrite(e, "watch_config = true", "watch_config = false")
        await settle(lambda: not e.config.settings.watch_config, "the watch to apply its own off", 10)
        rewrite(e, "weight = 7", "weight = 8")
        await asyncio.sleep(1.5)
        assert e.snapshot().backend("web", WEB1).configured_weight == 7
