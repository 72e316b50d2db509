# SPDX-License-Identifier: Apache-2.0
"""`lbtui backend-setup` on a real backend, in the scale-out lab without BIRD (a static route sends
the VIP to the one LB host, where lbtui encapsulates: `forwarding = "ipip"`).

What must hold: an IPIP packet to the VIP reaches a TCP server bound to the VIP on the backend, the
reply goes to the client straight through the router (never back through the LB host) with the VIP
as source; other tunnel packets are passed and counted; a second run is harmless; `--undo` leaves
the backend as it was (addresses, sysctls, no program, no qdisc, no state file).
"""

from __future__ import annotations

import glob
import os
import re
import subprocess

import pytest

from lbtui.control_client import SocketEngineHandle
from lbtui.engine import PIN_ROOT, instance_name
from lbtui.scaleout_lab import ScaleOutSpec, scaleout_namespaces
from tests.support.labtools import global_counter, served, wait_until
from tests.support.scaleout import ScaleOutClientLab
from tests.support.scaleout_lbtui import LbtuiHosts

pytestmark = pytest.mark.beside  # may run beside other e2e tests (tests/conftest.py)

PREFIX = "sbs"
VIP = "10.100.0.1"
OTHER_VIP = "10.100.0.2"
VIP6 = "fd00:100::1"


@pytest.fixture(scope="module")
def lab():
    lab = ScaleOutClientLab(
        ScaleOutSpec(prefix=PREFIX, hosts=1, backends=1, bird=False, backend_setup=False, vips=(VIP,))
    )
    lab.up()
    yield lab
    lab.down()


@pytest.fixture
def clean_backend(lab):
    """Backend 1 as the lab made it before the test, and the same again after it (undo + check)."""
    before = lab.backend_snapshot(1)
    yield before
    lab.stop_backend(1)
    lab.backend_setup(1, "--undo", check=False)


def without_ids(snapshot: dict) -> dict:
    """A snapshot without the program id and tag (a re-run loads a new program of the same kind)."""
    ingress = re.sub(r"\b(id|tag) \S+", r"\1 _", snapshot["ingress"])
    return {**snapshot, "ingress": ingress}


def send_ipip(lab, inner_dst: str) -> None:
    """One hand-built IPIP packet (a SYN from the client to inner_dst:80) from the LB host."""
    code = (
        "from scapy.all import IP, TCP, send; "
        f"send(IP(dst='{lab.backend_ip(1)}', proto=4) / "
        f"IP(src='{lab.client_ip}', dst='{inner_dst}') / TCP(sport=33333, dport=80, flags='S'), verbose=0)"
    )
    lab.run(lab.ns_host(1), *lab.python_cmd("-c", code))


def lb_counters(hosts: LbtuiHosts) -> dict[str, int]:
    """lbtui's counters on the LB host: encapsulated packets, replies rewritten, new flows to b1."""
    pins = os.path.join(PIN_ROOT, instance_name(hosts.socket(1)))
    out = {name: global_counter(name, pins) for name in ("ipip_encap", "tc_snat")}
    handle = SocketEngineHandle(hosts.socket(1))
    try:
        backend = handle.snapshot().backend("web", f"{hosts.lab.backend_ip(1)}:80")
    finally:
        handle.close()
    assert backend is not None
    out["new_flows"] = backend.counters.new_flows
    return out


def backend_health(hosts: LbtuiHosts) -> str:
    handle = SocketEngineHandle(hosts.socket(1))
    try:
        backend = handle.snapshot().backend("web", f"{hosts.lab.backend_ip(1)}:80")
    finally:
        handle.close()
    return backend.health.value if backend else "missing"


def test_dsr_round_trip_then_undo(lab, clean_backend):
    before = clean_backend
    out = lab.backend_setup(1, "--vip", VIP).stdout
    assert "decapsulation at TC ingress" in out
    lab.start_backends(http_port=80, udp_port=5353, bind=VIP)  # the server is bound to the VIP
    hosts = LbtuiHosts(lab, forwarding="ipip")
    hosts.remove_pins()
    try:
        hosts.start(1)
        assert wait_until(lambda: backend_health(hosts) == "up", timeout=20)  # through the tunnel
        before_lb = lb_counters(hosts)
        assert served(lab.http_requests(20, new_conn=True)) == {"b1": 20}
        assert lab.http_requests(20, new_conn=False) == {"b1": 20, "errors": 0}
        # the engine reads the data path's counters at its tick: the flows show within a second or so
        new_flows = lambda: lb_counters(hosts)["new_flows"] - before_lb["new_flows"]  # noqa: E731
        wait_until(lambda: new_flows() >= 21, timeout=5)
        after_lb = lb_counters(hosts)
        # the backend saw the client's own address, and every reply went around the LB host
        # (and lbtui's health checks, which come from the LB host's own address through the tunnel)
        peers = [peer[0] for peer in lab.recorded_peers(1)]
        assert peers.count(lab.client_ip) == 21 and set(peers) <= {lab.client_ip, lab.host_ip(1)}
        assert after_lb["tc_snat"] == before_lb["tc_snat"], "a reply passed the LB host"
        # 20 connections, then 1 kept alive (at least: one run counted 23, a cause not looked into)
        assert after_lb["new_flows"] - before_lb["new_flows"] >= 21
        assert after_lb["ipip_encap"] - before_lb["ipip_encap"] >= 21 * 3

        prog = lab.backend_status(1)["program"]
        assert prog["vips"] == [VIP] and prog["local"] == [lab.backend_ip(1)]
        assert prog["counters"]["decap_ipip"] >= 21 * 3  # at least SYN, request, ACK per connection
        assert {k: v for k, v in prog["counters"].items() if k.startswith("pass_")} == dict.fromkeys(
            ("pass_not_local", "pass_not_vip", "pass_fragment", "pass_malformed", "pass_failed"), 0
        )

        # a second run changes nothing and keeps the counters
        after_first = lab.backend_snapshot(1)
        lab.backend_setup(1, "--vip", VIP)
        assert without_ids(lab.backend_snapshot(1)) == without_ids(after_first)
        again = lab.backend_status(1)["program"]
        assert again["prog_id"] != prog["prog_id"]
        assert again["counters"]["decap_ipip"] >= prog["counters"]["decap_ipip"]
        assert served(lab.http_requests(5)) == {"b1": 5}
    finally:
        hosts.stop_all()

    lab.stop_backend(1)
    assert "undone" in lab.backend_setup(1, "--undo").stdout
    assert lab.backend_snapshot(1) == before
    assert lab.backend_status(1)["program"] is None and lab.backend_status(1)["state_file"] is None
    assert "nothing to undo" in lab.backend_setup(1, "--undo").stdout


def test_other_tunnel_packets_are_passed_and_counted(lab, clean_backend):
    lab.backend_setup(1, "--vip", VIP)
    send_ipip(lab, inner_dst="10.100.0.99")  # not a VIP here
    assert wait_until(lambda: lab.backend_status(1)["program"]["counters"]["pass_not_vip"] == 1, timeout=5)
    send_ipip(lab, inner_dst=VIP)
    assert wait_until(lambda: lab.backend_status(1)["program"]["counters"]["decap_ipip"] == 1, timeout=5)


def test_ipv6_in_ipv4_reaches_a_socket_bound_to_an_ipv6_vip(lab, clean_backend):
    lab.backend_setup(1, "--vip", VIP, "--vip", VIP6)
    receiver = lab.popen(
        lab.ns_backend(1),
        *lab.python_cmd(
            "-c",
            "import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
            f"s.bind(('{VIP6}', 5999)); print('ready', flush=True); s.settimeout(20); "
            "data, peer = s.recvfrom(100); print(data.decode(), peer[0], flush=True)",
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdout.readline().strip() == "ready"
    code = (
        "from scapy.all import IP, IPv6, UDP, Raw, send; "
        f"send(IP(dst='{lab.backend_ip(1)}', proto=41) / IPv6(src='fd00:1::2', dst='{VIP6}') / "
        "UDP(sport=4444, dport=5999) / Raw(b'hello6'), verbose=0)"
    )
    lab.run(lab.ns_host(1), *lab.python_cmd("-c", code))
    out, _ = receiver.communicate(timeout=30)
    assert out.strip() == "hello6 fd00:1::2"
    assert lab.backend_status(1)["program"]["counters"]["decap_ip6ip"] == 1


def test_undo_restores_what_was_there_before(lab, clean_backend):
    ns, ifname = lab.ns_backend(1), lab.backend_iface(1)
    # an operator's own settings: stricter arp_ignore, strict rp_filter, one VIP already on lo
    lab.sysctl(ns, f"net.ipv4.conf.{ifname}.arp_ignore=2", "net.ipv4.conf.all.rp_filter=1")
    lab.run(ns, "ip", "addr", "add", f"{VIP}/32", "dev", "lo")
    before = lab.backend_snapshot(1)
    try:
        lab.backend_setup(1, "--vip", VIP, "--vip", OTHER_VIP)
        s = lab.backend_status(1)["sysctls"]
        assert s[f"net/ipv4/conf/{ifname}/arp_ignore"] == "2"  # stricter: left alone
        assert s[f"net/ipv4/conf/{ifname}/rp_filter"] == "2"  # strict -> loose on the interface
        lab.backend_setup(1, "--undo")
        after = lab.backend_snapshot(1)
        assert after == before
        assert f"lo {VIP}/32" in after["addresses"]  # not ours to remove
    finally:
        lab.run(ns, "ip", "addr", "del", f"{VIP}/32", "dev", "lo", check=False)
        lab.sysctl(ns, f"net.ipv4.conf.{ifname}.arp_ignore=0", "net.ipv4.conf.all.rp_filter=0")


def test_the_vip_set_is_declarative(lab, clean_backend):
    before = clean_backend
    lab.backend_setup(1, "--vip", VIP, "--vip", OTHER_VIP, "--vip", VIP6)
    status = lab.backend_status(1)
    assert {f"{VIP}/32", f"{OTHER_VIP}/32", f"{VIP6}/128"} <= set(status["loopback"])
    assert status["program"]["vips"] == [VIP, OTHER_VIP, VIP6]
    lab.backend_setup(1, "--vip", VIP)
    status = lab.backend_status(1)
    assert f"{VIP}/32" in status["loopback"] and f"{OTHER_VIP}/32" not in status["loopback"]
    assert f"{VIP6}/128" not in status["loopback"] and status["program"]["vips"] == [VIP]
    lab.backend_setup(1, "--undo")
    assert lab.backend_snapshot(1) == before


def test_refusals(lab, clean_backend):
    r = lab.backend_setup(1, "--vip", "127.0.0.1", check=False)
    assert r.returncode == 1 and "unicast" in r.stderr
    cmd = lab.python_cmd("-m", "lbtui", "backend-setup", "--vip", VIP, "--interface", "nosuch0")
    r = lab.run(lab.ns_backend(1), *cmd, check=False)
    assert r.returncode == 1 and "no such interface" in r.stderr
    assert lab.backend_snapshot(1) == clean_backend


def test_a_crashed_lab_is_cleaned_up_by_the_next_one():
    """up() removes what a lab that never ran down() left: namespaces, processes, state files."""
    spec = ScaleOutSpec(prefix="sbc", hosts=1, backends=1, bird=False, backend_setup=True)
    crashed = ScaleOutClientLab(spec)
    crashed.up()
    crashed.start_backends(http_port=80, bind=VIP)
    stale_state = crashed.backend_status(1)["state_file"]
    assert stale_state and scaleout_namespaces("sbc")
    crashed._procs.clear()  # as if this process had died: nothing left to stop them cleanly
    crashed.workdir = ""
    lab = ScaleOutClientLab(spec)
    try:
        lab.up()
        assert not os.path.exists(stale_state)
        assert lab.backend_status(1)["state_file"] != stale_state
        assert sorted(scaleout_namespaces("sbc")) == sorted(lab.namespaces)
    finally:
        lab.down()
    assert scaleout_namespaces("sbc") == []
    assert not [p for p in glob.glob("/run/lbtui/backend-setup-netns*.json") if "sbcb" in open(p).read()]
