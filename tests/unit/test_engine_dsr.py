# SPDX-License-Identifier: Apache-2.0
"""A DSR proxy (forwarding = "ipip") in the engine over the in-memory dataplane: the service entry
carries the outer source (configured, or the interface's address), NAT proxies carry none, and the
health checks of DSR backends go through the tunnel (docs/scale-out.md#health-checks-through-the-tunnel).
"""

from __future__ import annotations

import pytest

from lbtui.control.health import Tunnel
from lbtui.dataplane.structs import PROBE_MARK
from tests.support.engine import BASE_SETTINGS, Probes, running, settle

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


PROXIES = (
    BASE_SETTINGS
    + """
[[proxy]]
name = "dsr"
interfaces = ["eth0"]
vip = "10.100.0.1"
port = 80
algorithm = "maglev"
forwarding = "ipip"
[proxy.health]
type = "tcp"
interval_ms = 100
timeout_ms = 100
[[proxy.backend]]
address = "10.2.0.11:80"

[[proxy]]
name = "pinned"
interfaces = ["eth1"]
vip = "10.100.0.2"
port = 80
forwarding = "ipip"
ipip_source = "10.1.1.2"
[[proxy.backend]]
address = "10.2.0.12:80"

[[proxy]]
name = "nat"
interfaces = ["eth0"]
vip = "10.0.0.1"
port = 80
[proxy.health]
type = "tcp"
interval_ms = 100
timeout_ms = 100
[[proxy.backend]]
address = "10.0.2.11:8080"
"""
)


async def test_service_entries_carry_the_outer_source_and_checks_go_through_the_tunnel():
    probes = Probes()
    async with running(PROXIES, probes=probes) as (_engine, dp):
        services = dp.state.services
        assert services[("10.100.0.1", 80, "tcp")].ipip_source == "192.0.2.1"  # eth0's (in-memory) address
        assert services[("10.100.0.2", 80, "tcp")].ipip_source == "10.1.1.2"
        assert services[("10.0.0.1", 80, "tcp")].ipip_source is None
        await settle(lambda: {t.ip for t in probes.targets} >= {"10.2.0.11", "10.0.2.11"}, "health checks")
        tunnels = {t.ip: t.tunnel for t in probes.targets}
        assert tunnels["10.2.0.11"] == Tunnel(vip="10.100.0.1", interface="eth0", mark=PROBE_MARK)
        assert tunnels["10.0.2.11"] is None
