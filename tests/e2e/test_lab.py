# SPDX-License-Identifier: Apache-2.0
"""The demo/test lab: topology, backend servers, clients, cleanup.

Namespace tests need root; each uses its own prefix ("lt" + letter) so they can run beside others.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbtui.lab import LabError, LabSpec, TrafficGenerator, cleanup_prefix, lab_namespaces, lab_state_file
from tests.support.lab import ClientLab

pytestmark = pytest.mark.beside  # may run beside other e2e tests (tests/conftest.py)

# ---------------------------------------------------------------- namespaces


@pytest.fixture(scope="module")
def lab() -> Iterator[ClientLab]:
    with ClientLab(LabSpec(prefix="ltl", backends=3)) as lab:
        lab.start_backends()
        yield lab
    assert lab_namespaces("ltl") == []


@pytest.mark.parametrize("client", [1, 2])
def test_each_backend_answers_its_name_over_the_routed_path(lab: ClientLab, client: int) -> None:
    for i in lab.backend_ids:
        url = f"http://{lab.backend_ip(i)}:8080/"
        assert lab.http_requests(3, client=client, url=url) == {f"b{i}": 3, "errors": 0}


def test_udp_echo_answers_with_backend_name(lab: ClientLab) -> None:
    for i in lab.backend_ids:
        assert lab.udp_requests(4, host=lab.backend_ip(i)) == {f"b{i}": 4, "errors": 0}


def test_lb_namespace_routes_and_client_veths_send_full_checksums(lab: ClientLab) -> None:
    assert lab.run(lab.ns_lb, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    for ns, dev in ((lab.ns_client, "ltlc0"), (lab.ns_client2, "ltlc1")):
        features = lab.run(ns, "ethtool", "-k", dev).stdout
        assert "tx-checksumming: off" in features
    for dev in lab.client_ifaces:
        assert lab.run(lab.ns_lb, "ip", "link", "show", dev).returncode == 0


def test_one_keepalive_connection_carries_1000_requests(lab: ClientLab) -> None:
    before = len(lab.recorded_peers(1))
    url = f"http://{lab.backend_ip(1)}:8080/"
    assert lab.http_requests(1000, new_conn=False, url=url) == {"b1": 1000, "errors": 0}
    assert len(lab.recorded_peers(1)) == before + 1


def test_hundreds_of_concurrent_connections_are_held(lab: ClientLab) -> None:
    held = lab.hold(300, seconds=0.5, host=lab.backend_ip(2), port=8080)
    try:
        assert held.opened() == {"event": "opened", "backends": {"b2": 300}, "errors": 0}
        assert held.done() == {"event": "done", "backends": {"b2": 300}, "errors": 0}
    finally:
        held.stop()


def test_health_sleep_and_unknown_paths(lab: ClientLab) -> None:
    base = f"http://{lab.backend_ip(3)}:8080"
    assert lab.http_requests(1, url=f"{base}/healthz") == {"ok": 1, "errors": 0}
    assert lab.http_requests(1, url=f"{base}/sleep?ms=200") == {"b3": 1, "errors": 0}
    assert lab.http_requests(2, url=f"{base}/nothing-here") == {"errors": 2}


def test_record_file_lists_client_ports(lab: ClientLab) -> None:
    before = set(lab.recorded_peers(3))
    lab.http_requests(5, url=f"http://{lab.backend_ip(3)}:8080/", client=2)
    new = set(lab.recorded_peers(3)) - before
    assert len(new) == 5
    assert {host for host, _ in new} == {"10.0.1.2"}
    assert all(0 < port < 65536 for _, port in new)


def test_stop_and_start_one_backend(lab: ClientLab) -> None:
    url = f"http://{lab.backend_ip(2)}:8080/"
    lab.stop_backend(2)
    try:
        assert lab.http_requests(2, url=url, timeout=1.0) == {"errors": 2}
        assert lab.udp_requests(1, host=lab.backend_ip(2), timeout=0.3) == {"errors": 1}
        assert lab.http_requests(1, url=f"http://{lab.backend_ip(1)}:8080/") == {"b1": 1, "errors": 0}
    finally:
        lab.start_backend(2)
    assert lab.http_requests(2, url=url) == {"b2": 2, "errors": 0}


def test_traffic_generator_counts_answers_per_backend_name(lab: ClientLab) -> None:
    # No load balancer here: a stand-in server on the VIP itself plays one backend named "lb".
    ready = os.path.join(lab.workdir, "vip.ready")
    args = [
        "--name",
        "lb",
        "--http-port",
        "80",
        "--udp-port",
        "5353",
        "--bind",
        lab.vip,
        "--ready-file",
        ready,
    ]
    stand_in = lab.popen(lab.ns_lb, *lab.python_cmd("-m", "lbtui.labservers", *args))
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(ready) and time.monotonic() < deadline:
            time.sleep(0.05)
        with TrafficGenerator(lab, rate_per_s=40) as gen:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                c = gen.counts()
                if c.http_ok.get("lb", 0) >= 3 and c.udp_ok.get("lb", 0) >= 3:
                    break
                time.sleep(0.1)
            assert gen.running
        counts = gen.counts()
        assert counts.http_ok.get("lb", 0) >= 3 and counts.udp_ok.get("lb", 0) >= 3
        assert counts.http_failed == 0 and counts.udp_failed == 0
        assert not gen.running
    finally:
        ClientLab.stop_process(stand_in)


def test_no_checksum_errors_anywhere(lab: ClientLab) -> None:
    lab.http_requests(20, url=f"http://{lab.backend_ip(1)}:8080/")
    errors = lab.nstat_csum_errors()
    assert set(errors) == set(lab.namespaces)
    assert all(v == {"TcpInCsumErrors": 0, "UdpInCsumErrors": 0} for v in errors.values())


# ---------------------------------------------------------------- teardown and leftovers


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def test_down_removes_every_namespace_and_process() -> None:
    lab = ClientLab(LabSpec(prefix="ltd", backends=2, second_client=False))
    lab.up()
    try:
        lab.start_backends()
        procs = [t.proc for t in lab._procs]
        assert lab_namespaces("ltd")
    finally:
        lab.down()
    assert lab_namespaces("ltd") == []
    assert all(p.poll() is not None for p in procs)
    lab.down()  # twice is fine


def test_cleanup_removes_half_built_lab_and_only_its_own_prefix() -> None:
    cleanup_prefix("lth")
    cleanup_prefix("lthx")
    try:
        # what a run that crashed mid-build leaves: some namespaces, a veth, a process inside
        _ip("netns", "add", "lthlb")
        _ip("netns", "add", "lthb1")
        _ip("-n", "lthb1", "link", "add", "lthb1", "type", "veth", "peer", "name", "lthb1p", "netns", "lthlb")
        _ip("netns", "add", "lthxlb")  # another lab whose prefix starts with ours: must survive
        sleeper = subprocess.Popen(["ip", "netns", "exec", "lthlb", "sleep", "300"])
        cleanup_prefix("lth")
        assert lab_namespaces("lth") == []
        assert lab_namespaces("lthx") == ["lthxlb"]
        assert sleeper.wait(timeout=10) is not None
    finally:
        cleanup_prefix("lth")
        cleanup_prefix("lthx")


def test_a_new_lab_starts_without_the_overrides_of_an_earlier_one() -> None:
    # an earlier lab's instance drained b1 (the demo's `d`) and kept it in the lab's state file;
    # a new lab's lbtui would re-apply it: the new lab removes it, and the file goes with the lab
    state = Path(lab_state_file("ltw"))
    earlier = b'{"version": 1, "saved_at": 0, "drains": [{"proxy": "web", "backend": "10.0.2.11:8080"}]}'
    try:
        state.write_bytes(earlier)
        Path(f"{state}.unreadable").write_bytes(b"{not json")
        with ClientLab(LabSpec(prefix="ltw", backends=1, second_client=False)):
            assert not state.exists() and not Path(f"{state}.unreadable").exists()
            state.write_bytes(earlier)  # what this lab's lbtui keeps
        assert not state.exists()
    finally:
        cleanup_prefix("ltw")


def test_up_replaces_leftovers_and_a_failed_build_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = LabSpec(prefix="ltu", backends=1, second_client=False)
    try:
        _ip("netns", "add", "ltulb")
        _ip("netns", "add", "ltub7")
        with ClientLab(spec) as lab:
            assert sorted(lab_namespaces("ltu")) == ["ltub1", "ltucli", "ltulb"]
            lab.start_backends(health_port=8081)
            assert lab.http_requests(1, url=f"http://{lab.backend_ip(1)}:8080/") == {"b1": 1, "errors": 0}
            assert lab.http_requests(1, url=f"http://{lab.backend_ip(1)}:8081/healthz") == {
                "ok": 1,
                "errors": 0,
            }
        assert lab_namespaces("ltu") == []

        def unreachable(self: ClientLab, ns: str, addr: str, timeout: float = 10.0) -> None:
            raise LabError("simulated: no route")

        monkeypatch.setattr(ClientLab, "_wait_ping", unreachable)
        with pytest.raises(LabError, match="simulated"):
            ClientLab(spec).up()
        assert lab_namespaces("ltu") == []
    finally:
        cleanup_prefix("ltu")
