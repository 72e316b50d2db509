# SPDX-License-Identifier: Apache-2.0
"""The foundation end to end over IPv6 (lab prefix "lf6"): `lbtui -c CFG --no-ui` in the LB namespace
with an IPv6 VIP and IPv6 backends; real HTTP and UDP backends answer with their own names.

600 new connections spread by weight (chi-square), a keep-alive connection stays on one backend, a
source route keeps the second client's /64 in its group, UDP queries are echoed, and no namespace
counts a checksum error (TcpInCsumErrors covers TCP over IPv6; Udp6InCsumErrors)."""

from __future__ import annotations

import signal
import sys

import pytest

from lbtui.control_client import SocketEngineHandle
from lbtui.lab import VIP6, LabSpec
from lbtui.model import FlowQuery
from tests.e2e.test_foundation import chi_square_p_df2
from tests.support.lab import ClientLab
from tests.support.labtools import wait_until

pytestmark = pytest.mark.root

URL = f"http://[{VIP6}]/"


def config(lab: ClientLab) -> str:
    ifaces = ", ".join(f'"{i}"' for i in lab.client_ifaces)
    lines = [
        "[settings]",
        f'control_socket = "/run/lbtui/{lab.prefix}.sock"',
        'xdp_mode = "generic"',
        "max_connections = 16384",
        "",
        "[settings.metrics]",
        "enabled = false",
        "",
    ]
    for name, proto, port, backend_port, weights in (
        ("web", "tcp", 80, 8080, (3, 2, 1)),
        ("udp", "udp", 5353, 5353, (1, 1, 1)),
    ):
        lines += [
            "[[proxy]]",
            f'name = "{name}"',
            f"interfaces = [{ifaces}]",
            f'vip = "{VIP6}"',
            f"port = {port}",
            f'protocol = "{proto}"',
            "",
        ]
        if name == "web":
            lines += ["[[proxy.source_route]]", 'cidr = "fd00:11::/64"']
            lines += [f'backends = [{{ address = "[{lab.backend_ip6(3)}]:8080", weight = 1 }}]', ""]
        for i in lab.backend_ids:
            lines += ["[[proxy.backend]]", f'address = "[{lab.backend_ip6(i)}]:{backend_port}"']
            lines += [f"weight = {weights[i - 1]}", ""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def lab():
    lab = ClientLab(LabSpec(prefix="lf6"))
    lab.up()
    try:
        lab.start_backends(bind="::")
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def lb(lab, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("e2e6") / "lbtui.toml"
    cfg.write_text(config(lab))
    log = cfg.with_suffix(".log")
    with open(log, "w") as err:
        proc = lab.popen(lab.ns_lb, sys.executable, "-m", "lbtui", "-c", str(cfg), "--no-ui", stderr=err)
    assert wait_until(lambda: "started" in log.read_text() or proc.poll() is not None), log.read_text()
    assert proc.poll() is None, log.read_text()
    yield proc, log
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_weights_3_2_1_over_600_new_ipv6_connections(lab, lb):
    got = lab.http_requests(600, new_conn=True, url=URL)
    assert got.get("errors", 0) == 0, got
    observed = [got.get("b1", 0), got.get("b2", 0), got.get("b3", 0)]
    assert sum(observed) == 600
    p = chi_square_p_df2(observed, [300.0, 200.0, 100.0])
    assert p > 1e-6, (observed, p)


def test_a_keepalive_ipv6_connection_stays_on_one_backend(lab, lb):
    got = lab.http_requests(1000, new_conn=False, url=URL)
    assert got.get("errors", 0) == 0, got
    served = {k: v for k, v in got.items() if k != "errors" and v}
    assert len(served) == 1 and sum(served.values()) == 1000, got


def test_an_ipv6_source_route_keeps_the_second_client_in_its_group(lab, lb):
    got = lab.http_requests(100, new_conn=True, client=2, url=URL)
    assert got.get("b3") == 100 and not got.get("errors"), got
    first = lab.http_requests(60, new_conn=True, client=1, url=URL)
    assert {"b1", "b2", "b3"} <= {k for k, v in first.items() if v and k != "errors"}, first


def test_udp_over_ipv6_is_echoed(lab, lb):
    got = lab.udp_requests(90, host=VIP6)
    assert got.get("errors", 0) == 0, got
    assert sum(v for k, v in got.items() if k != "errors") == 90
    assert {"b1", "b2", "b3"} <= {k for k, v in got.items() if v and k != "errors"}, got


def test_no_checksum_errors_anywhere_over_ipv6(lab, lb):
    keys = ("TcpInCsumErrors", "Udp6InCsumErrors")
    errors = lab.nstat_csum_errors(keys)
    assert all(v == dict.fromkeys(keys, 0) for v in errors.values()), errors


def test_the_flow_view_lists_ipv6_flows_and_finds_them_by_bracketed_address(lab, lb):
    held = lab.hold(30, seconds=10.0, host=VIP6, port=80)
    opened = held.opened()
    assert opened.get("errors", 0) == 0, opened
    b1 = f"[{lab.backend_ip6(1)}]:8080"
    want = opened["backends"].get("b1", 0)
    h = SocketEngineHandle(f"/run/lbtui/{lab.prefix}.sock")
    try:
        query = FlowQuery(text=f"{b1} established")

        def answered() -> bool:
            snap = h.snapshot(query)
            return snap.flow_query == query and snap.flows_matched >= want

        assert wait_until(answered, timeout=15)
        snap = h.snapshot(query)
        assert snap.flows_matched == want
        assert all(f.backend == b1 and f.vip == f"[{VIP6}]:80" for f in snap.flows)
        assert all(f.client.startswith("[fd00:") for f in snap.flows)
    finally:
        h.close()
    done = held.done()
    assert done.get("errors", 0) == 0, done
