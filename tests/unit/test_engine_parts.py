# SPDX-License-Identifier: Apache-2.0
"""The engine's parts on their own: a group's table plans, the composition of configuration and
runtime overrides, overrides across reloads, id allocation, and the in-memory conntrack."""

from __future__ import annotations

import numpy as np
import pytest

from lbtui import model
from lbtui.config import parse_config
from lbtui.control.selection import EMPTY, slot_counts
from lbtui.dataplane.memory_state import CtTable
from lbtui.dataplane.port import DataplaneSpec, RateLimits
from lbtui.dataplane.records import CT_ENTRY_DTYPE, CT_KEY_DTYPE
from lbtui.engine.desired import compose, from_config, prune
from lbtui.engine.group import Group, Member
from lbtui.engine.ids import BackendIdPool, IdPool, Ids
from lbtui.engine.overrides import DrainOverride, Overrides
from tests.support.engine import BASE_SETTINGS, TWO_PROXIES

A, B, C = "10.0.2.11:8080", "10.0.2.12:8080", "10.0.2.13:8080"


def three() -> Group:
    g = Group(id=0, label="default", table_size=97)
    for i, (address, w) in enumerate(((A, 3), (B, 2), (C, 1))):
        ip, port = address.split(":")
        g.members[address] = Member(i, "web", "default", ip, int(port), w, w)
    return g


@pytest.mark.parametrize("algorithm", ["weighted-random", "source-hash", "maglev", "least-connections"])
def test_a_plan_is_the_whole_table_first_then_only_the_slots_that_change(algorithm):
    g = three()
    first = g.plan(algorithm)
    assert len(first.delta) == 97 and len(g.table) == 0  # planning writes nothing
    changed = g.commit(first)
    assert [(m.address, old, m.effective) for m, old in changed] == [(A, 0, 3), (B, 0, 2), (C, 0, 1)]
    assert len(g.plan(algorithm).delta) == 0  # same inputs, same table
    g.members[C].drain = model.DrainState.DRAINING
    plan = g.plan(algorithm)
    moved, held_by_c = set(plan.delta.slots.tolist()), set(np.flatnonzero(g.table == 2).tolist())
    if algorithm == "maglev":  # recomputed from names: C's slots move, few others do
        assert held_by_c <= moved and len(moved - held_by_c) < 10
    else:  # the previous table is kept where it can be: only C's slots move
        assert moved == held_by_c
    g.commit(plan)
    assert 2 not in set(g.table.tolist())


def test_a_group_with_nothing_to_pick_is_empty_and_panics_only_when_it_helps():
    g = three()
    for m in g.members.values():
        m.factors = m.factors.__class__(0.0, model.Health.DOWN, 1.0, None)
    plan = g.plan("weighted-random")
    assert plan.composition.panic and slot_counts(plan.table.tolist()) == {0: 49, 1: 32, 2: 16}
    for m in g.members.values():
        m.drain = model.DrainState.DRAINED
    plan = g.plan("weighted-random")
    assert not plan.composition.panic and set(plan.table.tolist()) == {EMPTY}


CONFIG = parse_config(BASE_SETTINGS + TWO_PROXIES)


def no_dns(_proxy: str, _host: str) -> tuple[str, ...]:
    return ()


def test_compose_lays_the_overrides_over_the_configuration():
    drain = DrainOverride(model.DrainState.DRAINING, 5.0)
    overrides = (
        Overrides()
        .with_weight(("web", A), 7)
        .with_drain(("web", B), drain)
        .with_backend(("web", "default", "10.0.2.99:8080"), 4)
        .with_backend(("web", "192.168.0.0/16", "10.0.3.99:8080"), 2)
        .without_backend("web", C, ["default"])
        .with_maintenance(("web", A), True)
        .with_limits("dns", RateLimits(1, 2, 3, 4))
    )
    desired = compose(CONFIG, no_dns, overrides)
    web = desired.proxies["web"].groups["default"]
    assert list(web) == [A, B, "10.0.2.99:8080"]
    assert list(desired.proxies["web"].groups["192.168.0.0/16"]) == ["10.0.3.10:8080", "10.0.3.99:8080"]
    assert (web[A].configured, web[A].weight, web[A].maintenance) == (3, 7, True)
    assert web[B].drain == drain and not web[B].maintenance
    assert desired.proxies["dns"].limits == RateLimits(1, 2, 3, 4)
    assert desired.proxies["web"].limits == RateLimits(100, 200, 5000, 10000)
    assert compose(CONFIG, no_dns, Overrides()) == from_config(CONFIG, no_dns)


def test_overrides_across_a_reload_and_pruning():
    overrides = (
        Overrides()
        .with_weight(("web", A), 7)
        .with_weight(("web", B), 8)
        .with_backend(("web", "default", "10.0.2.99:8080"), 4)
        .with_limits("web", RateLimits(1, 1))
        .with_limits("dns", RateLimits(2, 2))
    )
    before = from_config(CONFIG, no_dns)
    changed = parse_config(
        BASE_SETTINGS + TWO_PROXIES.replace("weight = 2", "weight = 5").replace("rate = 100,", "rate = 101,")
    )
    after = from_config(changed, no_dns)
    rebased = overrides.rebased(
        before.configured_weights(), after.configured_weights(), before.limits(), after.limits()
    )
    added = {("web", "default", "10.0.2.99:8080"): 4}
    assert rebased == Overrides(weights={("web", A): 7}, added=added, limits={"dns": RateLimits(2, 2)})
    assert rebased.without_membership() == Overrides(
        weights={("web", A): 7}, limits={"dns": RateLimits(2, 2)}
    )
    # pruned against a configuration without web's A, without dns, and that has the added backend now
    pruned_config = parse_config(
        BASE_SETTINGS
        + TWO_PROXIES.split('[[proxy]]\nname = "dns"')[0].replace(
            'address = "10.0.2.11:8080"', 'address = "10.0.2.99:8080"'
        )
    )
    kept, gone = prune(rebased, from_config(pruned_config, no_dns))
    assert kept == Overrides()
    assert [line for _, line in gone] == [
        "runtime weight 7 of web 10.0.2.11:8080 dropped: the backend is no longer in the configuration",
        "backend added at run time of web 10.0.2.99:8080 dropped: the configuration has this backend now",
        "runtime rate limits of dns dropped: proxy dns is no longer in the configuration",
    ]
    assert prune(rebased, after) == (rebased, [])


def test_ids_reuse_and_limits():
    pool = IdPool(3, "groups")
    assert [pool.take(), pool.take()] == [0, 1]
    pool.give_back(0)
    assert [pool.take(), pool.take()] == [0, 2]
    with pytest.raises(RuntimeError, match=r"too many groups \(the data path holds 3\)"):
        pool.take()
    backends = BackendIdPool(3)
    ids = [backends.take() for _ in range(3)]
    backends.give_back(1)
    backends.give_back(0)
    assert ids == [0, 1, 2] and [backends.take(), backends.take()] == [1, 0]  # the oldest freed first
    assert Ids(DataplaneSpec(max_services=2)).services.limit == 2


def _entries(n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    keys = np.zeros(n, dtype=CT_KEY_DTYPE)
    keys["sport"] = np.arange(start, start + n)
    vals = np.zeros(n, dtype=CT_ENTRY_DTYPE)
    vals["created_ns"] = np.arange(start, start + n) + 1
    vals["last_seen_ns"] = np.arange(start, start + n) + 1
    return keys, vals


def test_memory_transient_table_evicts_the_least_recently_used():
    ct = CtTable(capacity=4, lru=True)
    ct.insert(*_entries(4))
    ct.insert(*_entries(2, start=10))
    keys, _ = ct.arrays()
    assert sorted(keys["sport"].tolist()) == [2, 3, 10, 11] and ct.evicted == 2


def test_memory_established_table_refuses_an_insert_when_full():
    ct = CtTable(capacity=4, lru=False)
    assert ct.insert(*_entries(4))
    assert not ct.insert(*_entries(1, start=10))
    assert len(ct) == 4 and ct.evicted == 0


def _flow(created: int, last_fwd: int, last_rev: int) -> tuple[np.ndarray, np.ndarray]:
    """Both entries of one established TCP flow 192.0.2.1:1000 -> 10.0.0.1:80 via 10.0.2.11:8080."""
    from lbtui.dataplane import structs

    vals = np.zeros(2, dtype=CT_ENTRY_DTYPE)
    vals["client_ip"], vals["vip"] = structs.ip_to_be32("192.0.2.1"), structs.ip_to_be32("10.0.0.1")
    vals["backend_ip"] = structs.ip_to_be32("10.0.2.11")
    vals["client_port"], vals["vip_port"] = structs.port_to_be16(1000), structs.port_to_be16(80)
    vals["backend_port"], vals["proto"] = structs.port_to_be16(8080), structs.IPPROTO_TCP
    vals["dir"] = [structs.DIR_FORWARD, structs.DIR_REVERSE]
    vals["backend_id"], vals["created_ns"] = 3, created
    vals["flags"] = [structs.CT_F_EST | structs.CT_F_SYN, structs.CT_F_SYN]
    vals["last_seen_ns"] = [last_fwd, last_rev]
    keys = np.zeros(2, dtype=CT_KEY_DTYPE)
    keys["saddr"] = [vals["client_ip"][0], vals["backend_ip"][0]]
    keys["daddr"] = [vals["vip"][0], vals["client_ip"][0]]
    keys["sport"] = [vals["client_port"][0], vals["backend_port"][0]]
    keys["dport"] = [vals["vip_port"][0], vals["client_port"][0]]
    keys["proto"] = structs.IPPROTO_TCP
    return keys, vals


def test_memory_expiry_removes_a_flow_only_while_it_is_the_flow_read_and_idle():
    from lbtui.dataplane.memory_state import MapState

    state = MapState(DataplaneSpec(conntrack_entries=8, transient_entries=8))
    keys, vals = _flow(created=100, last_fwd=1000, last_rev=5000)
    state.established.insert(keys, vals)
    one = keys[:1]
    # another flow took the tuple since it was read: created_ns differs, so it stays
    assert state.expire(one, np.array([99], np.uint64), np.array([0], np.uint64))["created_ns"][0] == 99
    # the reverse entry saw a packet after the cutoff: the flow is not idle
    assert state.expire(one, np.array([100], np.uint64), np.array([4000], np.uint64))["created_ns"][0] == 100
    assert len(state.established) == 2 and state.backend_stat(3)["ended"] == 0
    out = state.expire(one, np.array([100], np.uint64), np.array([6000], np.uint64))
    assert out["created_ns"][0] == 0 and out["idle_before_ns"][0] == 5000  # removed; its last packet
    assert len(state.established) == 0 and state.backend_stat(3)["ended"] == 1  # both entries


def test_an_instance_is_named_after_the_socket_it_serves():
    from lbtui.engine import dataplane_spec, instance_name

    assert instance_name("/run/lbtui/lbtui.sock") == "lbtui"
    assert instance_name("/run/lbtui/edge.sock") == "edge"
    elsewhere = instance_name("/tmp/x/edge.sock")
    assert elsewhere.startswith("edge-") and elsewhere != instance_name("/tmp/y/edge.sock")
    assert dataplane_spec(CONFIG).pin_dir == "/run/lbtui/bpffs/unit"  # the file's socket
    assert dataplane_spec(CONFIG, "/run/lbtui/other.sock").pin_dir == "/run/lbtui/bpffs/other"
