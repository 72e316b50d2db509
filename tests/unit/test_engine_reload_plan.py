# SPDX-License-Identifier: Apache-2.0
"""`reload --dry-run` (engine/plan.py) on the real Engine over the in-memory dataplane: the dry run
changes nothing and says exactly what the reload that follows reports, over generated configuration
changes with runtime overrides in between (issue 19, must-show 4, without the kernel)."""

from __future__ import annotations

import logging
import random

import pytest

from lbtui import model
from tests.support.configgen import initial, mutate
from tests.support.engine import running
from tests.unit.test_engine_reload import state

pytestmark = pytest.mark.anyio

SETTINGS = 'max_connections = 4096\ncontrol_socket = "/run/lbtui/unit.sock"'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_dry_run_equals_the_change_list_of_the_reload_that_follows(seed: int, caplog) -> None:
    rng = random.Random(seed)
    gen = initial("10.0.0.1", ("lb0",), "10.0.2", SETTINGS)
    caplog.set_level(logging.ERROR, logger="lbtui.engine.reload")
    async with running(gen.toml()) as (e, _dp):
        compared = restarts = 0
        for step in range(20):
            if rng.random() < 0.4:  # runtime overrides for the reload to keep or drop
                proxy = rng.choice(sorted(gen.proxies))
                backend = rng.choice(sorted(gen.proxies[proxy].backends))
                command = rng.choice(
                    (
                        model.SetWeight(proxy, backend, rng.randint(1, 9)),
                        model.AddBackend(proxy, gen.fresh(8080), 2),
                        model.Drain(proxy, backend),
                    )
                )
                assert (await e.execute(command)).ok, command
            edits = mutate(gen, rng)
            with open(e.config.path, "w") as f:
                f.write(gen.toml())
            before = state(e)
            plan = await e.execute(model.Reload(dry_run=True))
            assert state(e) == before, f"step {step}: the dry run changed something"
            result = await e.execute(model.Reload())
            assert (plan.ok, plan.changes) == (result.ok, result.changes), (step, edits, plan, result)
            compared += len(result.changes)
            if not result.ok:
                restarts += 1
                assert "a restart" in result.message
                gen.table_size = e.config.settings.table_size  # back to what runs
            else:
                assert result.changes, (step, edits)
        disagreements = [r.getMessage() for r in caplog.records if r.name == "lbtui.engine.reload"]
        assert not disagreements  # plan.py and Topology.apply agreed every time
        assert compared >= 40
    assert restarts <= 20


async def test_dry_run_says_what_the_file_changes_beyond_the_maps() -> None:
    gen = initial("10.0.0.1", ("lb0",), "10.0.2", SETTINGS)
    async with running(gen.toml()) as (e, _dp):
        gen.proxies["web"].health_ms = 500
        gen.sweep_interval_s = 0.5
        web = sorted(gen.proxies["web"].backends)
        gen.proxies["web"].backends[web[0]] = 4
        assert (await e.execute(model.SetWeight("web", web[1], 7))).ok
        del gen.proxies["web"].backends[web[1]]
        with open(e.config.path, "w") as f:
            f.write(gen.toml())
        plan = await e.execute(model.Reload(dry_run=True))
        assert plan.ok and plan.message == f"a reload of {e.config.path} would make 5 changes"
        assert plan.changes == (
            f"web: removed backend {web[1]}",
            f"web: {web[0]} weight 1 -> 4",
            "web: health (none) -> (set)",
            "settings.sweep_interval_s 2.0 -> 0.5",
            f"runtime weight 7 of web {web[1]} dropped: the backend is no longer in the configuration",
        )
        assert [ev for ev in e.events_since(0, 10_000) if ev.kind == "reload"] == []  # a dry run is quiet
        gen.table_size = 89
        with open(e.config.path, "w") as f:
            f.write(gen.toml())
        refused = await e.execute(model.Reload(dry_run=True))
        assert not refused.ok and refused.changes == (
            "settings.table_size 97 -> 89 (needs a restart: the reload is refused)",
        )
        assert (await e.execute(model.Reload())).changes == refused.changes
        assert e.config.settings.table_size == 97
