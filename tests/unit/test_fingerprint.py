# SPDX-License-Identifier: Apache-2.0
"""Table fingerprints: two engines given the same backends in different orders (so with different
ids) build the same Maglev tables, slot by slot as backend addresses, and say so with equal
fingerprints; any difference in the backend set or weights shows."""

from __future__ import annotations

import pytest

from lbtui import model
from tests.support.engine import running

pytestmark = pytest.mark.anyio

BACKENDS = ["10.0.2.11:80", "10.0.2.12:80", "10.0.2.13:80", "10.0.2.14:80"]
ADDED = ["10.0.2.21:80", "10.0.2.22:80", "10.0.2.23:80"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def config(order: list[str], weights: dict[str, int] | None = None, algorithm: str = "maglev") -> str:
    weights = weights or {}
    backends = "".join(f'\n[[proxy.backend]]\naddress = "{a}"\nweight = {weights.get(a, 1)}\n' for a in order)
    return f"""
[[proxy]]
name = "web"
interfaces = ["lb0"]
vip = "10.100.0.1"
port = 80
algorithm = "{algorithm}"
{backends}
[[proxy.source_route]]
cidr = "10.9.0.0/16"
backends = [{", ".join(f'{{ address = "{a}" }}' for a in order if a in BACKENDS[:2])}]
"""


def by_address(engine, label: str = "default") -> list[str]:
    """The table as the data path holds it, each slot as its backend's address."""
    members = engine.topology.proxies["web"].groups[label].members.values()
    address = {m.id: m.address for m in members}
    return [address.get(slot, "-") for slot in engine.group_table("web", label)]


def prints(engine) -> dict[str, str]:
    engine.publish()
    return {t.group: t.fingerprint for t in engine.snapshot().tables}


async def test_same_backends_in_any_order_make_the_same_table_and_fingerprint():
    async with running(config(BACKENDS)) as (one, _), running(config(BACKENDS[::-1])) as (two, _):
        for backend in ADDED:
            assert (await one.execute(model.AddBackend("web", backend))).ok
        for backend in reversed(ADDED):
            assert (await two.execute(model.AddBackend("web", backend))).ok
        assert one.backend_id("web", ADDED[0]) != two.backend_id("web", ADDED[0])  # ids differ
        assert by_address(one) == by_address(two)
        assert by_address(one, "10.9.0.0/16") == by_address(two, "10.9.0.0/16")
        assert prints(one) == prints(two)
        table = one.snapshot().tables[0]
        assert (table.proxy, table.group, table.algorithm, table.slots, table.backends) == (
            "web",
            "default",
            "maglev",
            97,
            7,
        )
        assert len(table.fingerprint) == 16 and int(table.fingerprint, 16) >= 0


async def test_ties_of_weight_do_not_depend_on_order():
    weights = {BACKENDS[0]: 3, BACKENDS[1]: 3, BACKENDS[2]: 1, BACKENDS[3]: 1}
    order = [BACKENDS[2], BACKENDS[0], BACKENDS[3], BACKENDS[1]]
    async with running(config(BACKENDS, weights)) as (one, _), running(config(order, weights)) as (two, _):
        assert by_address(one) == by_address(two)
        assert prints(one) == prints(two)


async def test_a_different_backend_set_or_weight_shows():
    async with running(config(BACKENDS)) as (one, _), running(config(BACKENDS)) as (two, _):
        before = prints(one)
        assert before == prints(two)
        await two.execute(model.SetWeight("web", BACKENDS[0], 2))
        assert prints(two)["default"] != before["default"]
        await two.execute(model.SetWeight("web", BACKENDS[0], 1))
        assert prints(two) == before
        await two.execute(model.Drain("web", BACKENDS[1]))
        assert prints(two)["default"] != before["default"]
