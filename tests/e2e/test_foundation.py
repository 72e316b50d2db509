# SPDX-License-Identifier: Apache-2.0
"""End to end through namespaces: `lbtui -c CFG --no-ui` in the LB namespace, real HTTP/UDP backends.

One lab and one lbtui process for the module; each test sends real traffic from a client namespace
and asserts which backend answered (the backends answer with their own name).
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lbtui.lab import LabSpec
from tests.support.lab import ClientLab
from tests.support.labtools import wait_until

ROUTE = """
[[proxy.source_route]]
cidr = "10.0.1.0/24"
backends = [{ address = "10.0.2.13:8080", weight = 1 }]
"""


def chi_square_p_df2(observed: list[int], expected: list[float]) -> float:
    """p-value of Pearson's chi-square with 2 degrees of freedom (3 categories): exp(-x/2)."""
    x = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    return math.exp(-x / 2)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = ClientLab(LabSpec(prefix="lte"))
    lab.up()
    try:
        lab.start_backends()
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def lb(lab, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("e2e") / "lbtui.toml"
    cfg.write_text(lab.config_toml(weights=(3, 2, 1), extra_proxy_toml=ROUTE))
    log = cfg.with_suffix(".log")
    with open(log, "w") as err:
        proc = lab.popen(
            lab.ns_lb,
            sys.executable,
            "-m",
            "lbtui",
            "-c",
            str(cfg),
            "--no-ui",
            "--stats-interval",
            "1",
            stderr=err,
        )
    assert wait_until(lambda: "started" in log.read_text() or proc.poll() is not None), log.read_text()
    assert proc.poll() is None, log.read_text()
    yield proc, log
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_weights_3_2_1_over_600_new_connections(lab, lb):
    got = lab.http_requests(600, new_conn=True)
    assert got.get("errors", 0) == 0, got
    observed = [got.get("b1", 0), got.get("b2", 0), got.get("b3", 0)]
    assert sum(observed) == 600
    expected = [300.0, 200.0, 100.0]
    p = chi_square_p_df2(observed, expected)
    assert p > 1e-6, (observed, p)


def test_long_lived_connection_stays_on_one_backend(lab, lb):
    got = lab.http_requests(1000, new_conn=False)
    assert got.get("errors", 0) == 0, got
    served = {k: v for k, v in got.items() if k != "errors" and v}
    assert len(served) == 1 and sum(served.values()) == 1000, got


def test_source_route_keeps_second_client_in_its_group(lab, lb):
    got = lab.http_requests(100, new_conn=True, client=2)
    assert got == {"b3": 100, "errors": 0} or (got.get("b3") == 100 and not got.get("errors")), got
    # and the first client still spreads over all three
    first = lab.http_requests(60, new_conn=True, client=1)
    assert {"b1", "b2", "b3"} <= {k for k, v in first.items() if v and k != "errors"}, first


def test_udp_request_response_through_vip(lab, lb):
    got = lab.udp_requests(90)
    assert got.get("errors", 0) == 0, got
    assert sum(v for k, v in got.items() if k != "errors") == 90
    assert {"b1", "b2", "b3"} <= {k for k, v in got.items() if v and k != "errors"}, got


def test_no_checksum_errors_anywhere(lab, lb):
    # run after the traffic tests above (pytest keeps file order)
    errors = lab.nstat_csum_errors()
    assert all(v == {"TcpInCsumErrors": 0, "UdpInCsumErrors": 0} for v in errors.values()), errors


def test_headless_logs_stats_lines(lab, lb):
    _, log = lb
    assert wait_until(lambda: "stats flows=" in log.read_text(), timeout=5), log.read_text()[-2000:]


def test_stop_detaches_everything(lab, lb):
    proc, log = lb
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, log.read_text()[-2000:]
    for ifname in lab.client_ifaces:
        link = lab.run(lab.ns_lb, "ip", "-d", "link", "show", "dev", ifname).stdout
        assert "xdp" not in link, link
        filters = lab.run(lab.ns_lb, "tc", "filter", "show", "dev", ifname, "egress").stdout
        assert "lbtui" not in filters, filters
        qdiscs = lab.run(lab.ns_lb, "tc", "qdisc", "show", "dev", ifname).stdout
        assert "clsact" not in qdiscs, qdiscs


def test_a_crashed_run_is_adopted_then_cleaned_up(lab, tmp_path):
    """kill -9 leaves XDP/TC attached and the maps pinned; the next start takes them over."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(lab.config_toml())
    log = tmp_path / "c.log"
    with open(log, "w") as err:
        proc = lab.popen(lab.ns_lb, sys.executable, "-m", "lbtui", "-c", str(cfg), "--no-ui", stderr=err)
    assert wait_until(lambda: "started" in log.read_text()), log.read_text()
    proc.kill()
    proc.wait(10)
    link = lab.run(lab.ns_lb, "ip", "-d", "link", "show", "dev", lab.client_ifaces[0]).stdout
    assert "lbtui_xdp" in link
    with open(log, "w") as err:
        proc = lab.popen(lab.ns_lb, sys.executable, "-m", "lbtui", "-c", str(cfg), "--no-ui", stderr=err)
    assert wait_until(lambda: "started" in log.read_text()), log.read_text()
    assert "took over the data path" in log.read_text()
    got = lab.http_requests(30)
    assert got.get("errors", 0) == 0 and sum(v for k, v in got.items() if k != "errors") == 30
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    link = lab.run(lab.ns_lb, "ip", "-d", "link", "show", "dev", lab.client_ifaces[0]).stdout
    assert "xdp" not in link
    assert not Path("/run/lbtui/bpffs/lte").exists(), "a clean stop unpins everything"


def test_not_root_exits_3(tmp_path):
    cfg = Path(__file__).resolve().parents[2] / "configs" / "minimal.toml"
    r = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "lbtui",
            "-c",
            str(cfg),
            "--no-ui",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "root" in r.stderr
