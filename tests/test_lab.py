"""The demo/test lab: topology, backend servers, clients, cleanup.

Namespace tests need root; each uses its own prefix ("lt" + letter) so they can run beside others.
"""

from __future__ import annotations

import os
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from lbtui.lab import Lab, LabError, LabSpec, TrafficGenerator, cleanup_prefix, lab_namespaces

F = TypeVar("F", bound=Callable[..., Any])


def root(test: F) -> F:
    """Mark a test as needing root (namespaces) and skip it without."""
    marked: F = pytest.mark.root(pytest.mark.skipif(os.geteuid() != 0, reason="needs root")(test))
    return marked


# ---------------------------------------------------------------- no root needed


@pytest.mark.parametrize("prefix", ["", "abcde", "1ab", "a-b", "AB"])
def test_spec_rejects_prefixes_that_break_interface_names(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        LabSpec(prefix=prefix)


def test_spec_rejects_bad_backend_count() -> None:
    with pytest.raises(ValueError, match="backends"):
        LabSpec(backends=0)


def test_names_follow_prefix() -> None:
    lab = Lab(LabSpec(prefix="ltn", backends=2))
    assert (lab.ns_lb, lab.ns_client, lab.ns_client2) == ("ltnlb", "ltncli", "ltncli2")
    assert lab.ns_backend(2) == "ltnb2"
    assert lab.backend_ip(2) == "10.0.2.12"
    assert lab.client_ifaces == ["ltnl0", "ltnl1"]
    assert lab.vip == "10.0.0.1"
    with pytest.raises(ValueError):
        lab.ns_backend(3)
    assert Lab(LabSpec(prefix="ltn", second_client=False)).client_ifaces == ["ltnl0"]


def test_config_toml_describes_the_lab() -> None:
    lab = Lab(LabSpec(prefix="ltc", backends=4))
    cfg = tomllib.loads(lab.config_toml(weights=(5, 1), algorithm="maglev"))
    assert cfg["settings"]["control_socket"] == "/run/lbtui/ltc.sock"
    assert cfg["settings"]["xdp_mode"] == "generic"
    assert cfg["settings"]["metrics"]["enabled"] is False
    web, udp = cfg["proxy"]
    assert (web["name"], web["protocol"], web["vip"], web["port"]) == ("web", "tcp", "10.0.0.1", 80)
    assert (udp["name"], udp["protocol"], udp["port"]) == ("udp", "udp", 5353)
    for proxy in (web, udp):
        assert proxy["interfaces"] == ["ltcl0", "ltcl1"]
        assert proxy["algorithm"] == "maglev"
    assert [b["address"] for b in web["backend"]] == [f"10.0.2.{10 + i}:8080" for i in range(1, 5)]
    assert [b["address"] for b in udp["backend"]] == [f"10.0.2.{10 + i}:5353" for i in range(1, 5)]
    assert [b["weight"] for b in web["backend"]] == [5, 1, 1, 1]


def test_config_toml_extra_goes_into_web_proxy() -> None:
    extra = 'algorithm_note = "x"\n[proxy.health]\ntype = "http"\npath = "/healthz"\n'
    cfg = tomllib.loads(Lab(LabSpec(prefix="ltc")).config_toml(extra_proxy_toml=extra))
    web, udp = cfg["proxy"]
    assert web["health"] == {"type": "http", "path": "/healthz"}
    assert web["algorithm_note"] == "x"
    assert len(web["backend"]) == 3
    assert "health" not in udp


# ---------------------------------------------------------------- namespaces


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(LabSpec(prefix="ltl", backends=3)) as lab:
        lab.start_backends()
        yield lab
    assert lab_namespaces("ltl") == []


@root
@pytest.mark.parametrize("client", [1, 2])
def test_each_backend_answers_its_name_over_the_routed_path(lab: Lab, client: int) -> None:
    for i in lab.backend_ids:
        url = f"http://{lab.backend_ip(i)}:8080/"
        assert lab.http_requests(3, client=client, url=url) == {f"b{i}": 3, "errors": 0}


@root
def test_udp_echo_answers_with_backend_name(lab: Lab) -> None:
    for i in lab.backend_ids:
        assert lab.udp_requests(4, host=lab.backend_ip(i)) == {f"b{i}": 4, "errors": 0}


@root
def test_lb_namespace_routes_and_client_veths_send_full_checksums(lab: Lab) -> None:
    assert lab.run(lab.ns_lb, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    for ns, dev in ((lab.ns_client, "ltlc0"), (lab.ns_client2, "ltlc1")):
        features = lab.run(ns, "ethtool", "-k", dev).stdout
        assert "tx-checksumming: off" in features
    for dev in lab.client_ifaces:
        assert lab.run(lab.ns_lb, "ip", "link", "show", dev).returncode == 0


@root
def test_one_keepalive_connection_carries_1000_requests(lab: Lab) -> None:
    before = len(lab.recorded_peers(1))
    url = f"http://{lab.backend_ip(1)}:8080/"
    assert lab.http_requests(1000, new_conn=False, url=url) == {"b1": 1000, "errors": 0}
    assert len(lab.recorded_peers(1)) == before + 1


@root
def test_hundreds_of_concurrent_connections_are_held(lab: Lab) -> None:
    held = lab.hold(300, seconds=0.5, host=lab.backend_ip(2), port=8080)
    try:
        assert held.opened() == {"event": "opened", "backends": {"b2": 300}, "errors": 0}
        assert held.done() == {"event": "done", "backends": {"b2": 300}, "errors": 0}
    finally:
        held.stop()


@root
def test_health_sleep_and_unknown_paths(lab: Lab) -> None:
    base = f"http://{lab.backend_ip(3)}:8080"
    assert lab.http_requests(1, url=f"{base}/healthz") == {"ok": 1, "errors": 0}
    assert lab.http_requests(1, url=f"{base}/sleep?ms=200") == {"b3": 1, "errors": 0}
    assert lab.http_requests(2, url=f"{base}/nothing-here") == {"errors": 2}


@root
def test_record_file_lists_client_ports(lab: Lab) -> None:
    before = set(lab.recorded_peers(3))
    lab.http_requests(5, url=f"http://{lab.backend_ip(3)}:8080/", client=2)
    new = set(lab.recorded_peers(3)) - before
    assert len(new) == 5
    assert {host for host, _ in new} == {"10.0.1.2"}
    assert all(0 < port < 65536 for _, port in new)


@root
def test_stop_and_start_one_backend(lab: Lab) -> None:
    url = f"http://{lab.backend_ip(2)}:8080/"
    lab.stop_backend(2)
    try:
        assert lab.http_requests(2, url=url, timeout=1.0) == {"errors": 2}
        assert lab.udp_requests(1, host=lab.backend_ip(2), timeout=0.3) == {"errors": 1}
        assert lab.http_requests(1, url=f"http://{lab.backend_ip(1)}:8080/") == {"b1": 1, "errors": 0}
    finally:
        lab.start_backend(2)
    assert lab.http_requests(2, url=url) == {"b2": 2, "errors": 0}


@root
def test_traffic_generator_counts_answers_per_backend_name(lab: Lab) -> None:
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
        Lab.stop_process(stand_in)


@root
def test_no_checksum_errors_anywhere(lab: Lab) -> None:
    lab.http_requests(20, url=f"http://{lab.backend_ip(1)}:8080/")
    errors = lab.nstat_csum_errors()
    assert set(errors) == set(lab.namespaces)
    assert all(v == {"TcpInCsumErrors": 0, "UdpInCsumErrors": 0} for v in errors.values())


# ---------------------------------------------------------------- teardown and leftovers


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@root
def test_down_removes_every_namespace_and_process() -> None:
    lab = Lab(LabSpec(prefix="ltd", backends=2, second_client=False))
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


@root
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


@root
def test_up_replaces_leftovers_and_a_failed_build_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = LabSpec(prefix="ltu", backends=1, second_client=False)
    try:
        _ip("netns", "add", "ltulb")
        _ip("netns", "add", "ltub7")
        with Lab(spec) as lab:
            assert sorted(lab_namespaces("ltu")) == ["ltub1", "ltucli", "ltulb"]
            lab.start_backends(health_port=8081)
            assert lab.http_requests(1, url=f"http://{lab.backend_ip(1)}:8080/") == {"b1": 1, "errors": 0}
            assert lab.http_requests(1, url=f"http://{lab.backend_ip(1)}:8081/healthz") == {
                "ok": 1,
                "errors": 0,
            }
        assert lab_namespaces("ltu") == []

        def unreachable(self: Lab, ns: str, addr: str, timeout: float = 10.0) -> None:
            raise LabError("simulated: no route")

        monkeypatch.setattr(Lab, "_wait_ping", unreachable)
        with pytest.raises(LabError, match="simulated"):
            Lab(spec).up()
        assert lab_namespaces("ltu") == []
    finally:
        cleanup_prefix("ltu")
