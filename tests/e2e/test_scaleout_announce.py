# SPDX-License-Identifier: Apache-2.0
"""lbtui announcing the VIP through BIRD on the scale-out lab's three load-balancer hosts: the
router's route to the VIP loses a host on a clean stop of its lbtui (before lbtui detaches and
exits), when every backend is unreachable from it, on the operator's `lbtui ctl announce
withdraw` (which a restart keeps), and when the host dies, and gets it back after each. The hosts
list their backends in different orders and still build the same Maglev table. Times are measured
by bench/scaleout_bgp.py --lbtui (docs/scale-out.md).
"""

from __future__ import annotations

import pytest

from lbtui.bird import BirdControl
from lbtui.control_client import SocketEngineHandle
from lbtui.scaleout_lab import VIP, ScaleOutLab, ScaleOutSpec
from tests.support.labtools import wait_until
from tests.support.scaleout_lbtui import LbtuiHosts

pytestmark = pytest.mark.requires("bird")

PREFIX = "sxa"


@pytest.fixture(scope="module")
def hosts():
    lab = ScaleOutLab(ScaleOutSpec(prefix=PREFIX, hosts=3, backends=3))
    lab.up()
    hosts = LbtuiHosts(lab)
    hosts.remove_pins()
    try:
        lab.start_backends(http_port=80, bind="0.0.0.0")  # health checks reach them on their own address
        router = BirdControl(lab.bird_socket(lab.ns_router))
        assert wait_until(lambda: sum(s.established for s in router.bgp_sessions()) == 3, timeout=20)
        for i in lab.host_ids:
            hosts.start(i)
        yield hosts
    finally:
        hosts.stop_all()
        lab.down()


def all_hosts(lab) -> set[str]:
    return {lab.host_ip(i) for i in lab.host_ids}


def others(lab, i: int) -> set[str]:
    return all_hosts(lab) - {lab.host_ip(i)}


def snapshot(hosts: LbtuiHosts, i: int):
    handle = SocketEngineHandle(hosts.socket(i))
    try:
        return handle.snapshot()
    finally:
        handle.close()


@pytest.fixture
def every_host_announces(hosts):
    lab = hosts.lab
    assert wait_until(lambda: lab.router_nexthops() == all_hosts(lab), timeout=30)
    yield
    assert wait_until(lambda: lab.router_nexthops() == all_hosts(lab), timeout=30)


def test_each_host_announces_and_reports_bgp(hosts, every_host_announces):
    for i in hosts.lab.host_ids:
        assert hosts.table_routes(i) == {VIP}
        snap = snapshot(hosts, i)
        (vip,) = snap.announce.vips
        assert vip.announced and vip.reason == "web: 3 of 3 backends usable"
        assert wait_until(lambda i=i: [s.state for s in snapshot(hosts, i).announce.bgp] == ["Established"])


def test_maglev_tables_are_equal_on_every_host(hosts, every_host_announces):
    prints = {i: [t.fingerprint for t in snapshot(hosts, i).tables] for i in hosts.lab.host_ids}
    assert len(set(map(tuple, prints.values()))) == 1, (
        prints
    )  # though each lists its backends in another order


def test_clean_stop_withdraws_first(hosts, every_host_announces):
    lab = hosts.lab
    proc = hosts.send_signal(1)  # SIGTERM
    assert wait_until(lambda: lab.router_nexthops() == others(lab, 1), timeout=10, interval=0.01)
    assert proc.poll() is None  # withdrawn first; the data path serves withdraw_grace_s (2 s) more
    hosts.stop(1)
    assert hosts.table_routes(1) == set()
    hosts.start(1)


def test_no_usable_backend_withdraws(hosts, every_host_announces):
    lab = hosts.lab
    hosts.backends_reachable(2, False)
    try:
        assert wait_until(lambda: lab.router_nexthops() == others(lab, 2), timeout=10)
        # the snapshot is published once a second: it may still show the decision before
        assert wait_until(lambda: not snapshot(hosts, 2).announce.vips[0].announced, timeout=5)
        (vip,) = snapshot(hosts, 2).announce.vips
        assert vip.reason == "0 of 3 backends usable (needs 1)"
    finally:
        hosts.backends_reachable(2, True)


def test_operator_command_withdraws_and_announces(hosts, every_host_announces):
    lab = hosts.lab
    assert hosts.ctl(3, "announce", "withdraw") == 0
    assert wait_until(lambda: lab.router_nexthops() == others(lab, 3), timeout=10)
    assert snapshot(hosts, 3).running  # out of rotation, still running
    hosts.stop(3)  # the withdrawal is a runtime override: a restart keeps it (the state file)
    hosts.start(3)
    assert hosts.table_routes(3) == set()
    assert snapshot(hosts, 3).announce.vips[0].held
    assert lab.router_nexthops() == others(lab, 3)
    assert hosts.ctl(3, "announce", "announce", "web") == 0
    assert wait_until(lambda: lab.router_nexthops() == all_hosts(lab), timeout=10)


def test_host_death_withdraws(hosts, every_host_announces):
    lab = hosts.lab
    hosts.kill_host(1)
    assert wait_until(lambda: lab.router_nexthops() == others(lab, 1), timeout=10)
    hosts.revive_host(1)
