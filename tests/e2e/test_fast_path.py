# SPDX-License-Identifier: Apache-2.0
"""The fast path with real traffic (settings.fast_path = "auto", bpf/lb_fastpath.h and
bpf/lb_fastpath_reply.h; issue 16).

The lab's backends sit behind the bridge ``lfpbr0`` of the LB namespace; DNATed packets from the
client are redirected to it from XDP (generic mode, as the lab runs), and the backends' replies are
SNATed at TC ingress of the bridge and redirected to the client's interface. Backends keep their
veths' offloads on (the default), so their replies are CHECKSUM_PARTIAL skbs, large downloads GSO
skbs. Checked: requests are served, most packets go the fast way both ways, the first packets to a
backend whose neighbour entry is not there yet take the kernel's path and are delivered, a datagram
larger than the backend side's MTU falls back and the kernel's "fragmentation needed" reaches the
client (about the VIP), bulk transfers arrive intact with every reply fast, no checksum errors;
datagrams to the VIP in frames addressed to another MAC than the LB's (injected with a packet socket)
never reach a backend (fast_path_other_host; the kernel drops them), the same datagrams addressed to
the LB's MAC do.
"""

from __future__ import annotations

import json
from pathlib import Path
from subprocess import PIPE

import pytest

from lbtui.control_client import SocketEngineHandle
from lbtui.dataplane.structs import GLOBAL_COUNTERS
from lbtui.engine import PIN_ROOT
from tests.support.lab import ClientLab
from tests.support.labtools import forget_backend_neighbours, global_counter, running_lb, served, wait_until

pytestmark = pytest.mark.beside  # may run beside other e2e tests (tests/conftest.py)

P = "lfp"
PIN_DIR = f"{PIN_ROOT}/{P}"

# a connected UDP socket with DF sends a datagram larger than the path, then reads the path MTU it
# learnt from the ICMP error that came back (the kernel keeps it per destination: the VIP)
PMTU_PROBE = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
s.connect((sys.argv[1], 5353))
for _ in range(20):
    try:
        s.send(b"x" * 1450)
    except OSError:
        pass  # EMSGSIZE once the smaller path MTU is known
    time.sleep(0.1)
print(s.getsockopt(socket.IPPROTO_IP, 14))  # IP_MTU
"""

# UDP datagrams to VIP:5353 from the client's address, in frames addressed to the MAC argv[2], sent
# from the interface argv[1] with a packet socket (the kernel's own stack would address them to the
# LB); argv[3] is in every payload
INJECT = """
import socket, struct, sys
ifname, mac, marker, vip = sys.argv[1:5]
dst_mac = bytes.fromhex(mac.replace(":", ""))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect((vip, 5353))
src = socket.inet_aton(u.getsockname()[0])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
payload = marker.encode()
ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 1, 0x4000, 64, 17, 0, src,
                           socket.inet_aton(vip)))
words = sum(struct.unpack("!10H", ip))
struct.pack_into("!H", ip, 10, ~((words & 0xFFFF) + (words >> 16)) & 0xFFFF)
udp = struct.pack("!HHHH", 40053, 5353, 8 + len(payload), 0)  # checksum 0: none (IPv4)
for _ in range(20):
    s.send(dst_mac + s.getsockname()[4] + b"\\x08\\x00" + bytes(ip) + udp + payload)
"""
# counts the UDP datagrams received that carry argv[1] and argv[2] (not the ICMP errors about the
# backend's answers that the client sends back) on every interface of its namespace for argv[3]
# seconds; prints "ready" once listening, then the two counts
SNIFF = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
s.settimeout(0.2)
seen = {sys.argv[1]: 0, sys.argv[2]: 0}
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    try:
        data, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    for marker in seen:
        udp = data[12:14] == b"\\x08\\x00" and data[23] == 17
        if udp and marker.encode() in data and addr[2] != socket.PACKET_OUTGOING:
            seen[marker] += 1
print(seen[sys.argv[1]], seen[sys.argv[2]])
"""

# the fallback reasons: every fast_path_* counter but the two that count packets gone fast
FALLBACKS = tuple(n for n in GLOBAL_COUNTERS if n.startswith("fast_path_") and not n.endswith("_forwarded"))
CONNS = 4
SIZE = 4 << 20
BULK_PORT = 9090  # the backends' bulk servers (tests.support.bulk), behind VIP:8081
BULK_PROXY = f"""
[[proxy]]
name = "bulk"
interfaces = ["{P}l0"]
vip = "10.0.0.1"
port = 8081
protocol = "tcp"
""" + "".join(f'\n[[proxy.backend]]\naddress = "10.0.2.{11 + i}:{BULK_PORT}"\n' for i in range(3))


def counters() -> dict[str, int]:
    names = ("fast_path_forwarded", "fast_path_reply_forwarded", "tc_snat", "tc_miss", *FALLBACKS)
    return {n: global_counter(n, PIN_DIR) for n in names}


def moved_since(before: dict[str, int]) -> dict[str, int]:
    return {k: v - before[k] for k, v in counters().items()}


def watch_forgets(handle: SocketEngineHandle) -> int:
    fast_path = handle.snapshot().fast_path
    return fast_path.watch.forgets if fast_path is not None else 0


def assert_no_checksum_errors(lab: ClientLab) -> None:
    csum = lab.nstat_csum_errors()
    assert all(v == 0 for counts in csum.values() for v in counts.values()), csum


def test_fast_path_serves_falls_back_and_keeps_checksums(tmp_path: Path) -> None:
    with running_lb(P, tmp_path) as (lab, handle):  # the fast path is on by default
        # no neighbour entries between the LB and the backends yet (the lab's pings made some)
        forget_backend_neighbours(lab)
        before = counters()
        got = lab.http_requests(30)
        assert got["errors"] == 0 and len(served(got)) == 3, got
        udp = lab.udp_requests(30)
        assert udp["errors"] == 0, udp
        moved = moved_since(before)
        assert moved["fast_path_no_neigh"] >= 1, moved  # the first packets went the kernel's way
        assert moved["fast_path_forwarded"] > 30 * 3, moved  # SYN, ACK, request, FINs... fast
        assert moved["fast_path_reply_forwarded"] > 30 * 3, moved  # SYN-ACK, response, FIN... fast
        assert moved["fast_path_unmanaged"] == 0, moved
        assert moved["fast_path_other_host"] == 0, moved
        # the flush was announced, and the next-hop watch made the caches forget (its metrics)
        assert wait_until(lambda: watch_forgets(handle) >= 1), handle.snapshot().fast_path

        assert_frames_for_another_mac_never_reach_a_backend(lab)

        # the backend side narrower than the client side: a big datagram with DF falls back and the
        # kernel's ICMP (translated to be about the VIP by the TC program) tells the client
        lab.run(lab.ns_lb, "ip", "link", "set", f"{P}br0", "mtu", "1400")
        before = counters()
        r = lab.run(lab.ns_client, *lab.python_cmd("-c", PMTU_PROBE, lab.vip), timeout=30)
        assert int(r.stdout.strip()) == 1400, r.stdout
        moved = moved_since(before)
        assert moved["fast_path_frag_needed"] >= 1, moved
        assert_no_checksum_errors(lab)


def assert_frames_for_another_mac_never_reach_a_backend(lab: ClientLab) -> None:
    """The kernel drops a frame that was not addressed to its interface (pkt_type OTHERHOST,
    BROADCAST, MULTICAST) before forwarding; so must the fast path, which runs before that check.
    20 datagrams to VIP:5353 in frames to another host's MAC, 20 to the broadcast MAC, then 20 to
    the LB's MAC: only the last 20 reach a backend."""
    lb_mac = json.loads(lab.run(lab.ns_lb, "ip", "-j", "link", "show", f"{P}l0").stdout)[0]["address"]
    sniffers = [
        lab.popen(
            ns, *lab.python_cmd("-c", SNIFF, "fp-other-host", "fp-own-mac", "6"), stdout=PIPE, text=True
        )
        for ns in (lab.ns_backend(i) for i in lab.backend_ids)
    ]
    for proc in sniffers:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    before = counters()
    for mac, marker in (("02:00:00:00:00:99", "fp-other-host"), ("ff:ff:ff:ff:ff:ff", "fp-other-host")):
        lab.run(lab.ns_client, *lab.python_cmd("-c", INJECT, f"{P}c0", mac, marker, lab.vip))
    wait_until(lambda: moved_since(before)["fast_path_other_host"] >= 40, timeout=5)
    other_host = moved_since(before)
    lab.run(lab.ns_client, *lab.python_cmd("-c", INJECT, f"{P}c0", lb_mac, "fp-own-mac", lab.vip))
    seen = [tuple(int(n) for n in proc.communicate(timeout=20)[0].split()) for proc in sniffers]
    assert sum(n for n, _ in seen) == 0, seen  # neither redirected nor forwarded by the kernel
    assert sum(n for _, n in seen) == 20, seen  # the same datagrams addressed to the LB arrive
    assert other_host["fast_path_other_host"] == 40, other_host
    assert other_host["fast_path_forwarded"] == 0, other_host


def test_offloaded_replies_take_the_fast_path_intact(tmp_path: Path) -> None:
    """Backends with tx checksum offload and TSO on (CHECKSUM_PARTIAL and GSO replies): bulk downloads
    over several connections go fast both ways, every byte arrives, no checksum error anywhere. The
    LB's end of the client link has tx offload off, so the LB finishes every checksum in software (as
    a NIC would) and the client verifies it: a wrong pseudo-header update would show here."""
    with running_lb(P, tmp_path, tables=BULK_PROXY) as (lab, _):
        for i in lab.backend_ids:
            k = lab.run(lab.ns_backend(i), "ethtool", "-k", f"{P}b{i}").stdout
            assert "tx-checksumming: on" in k and "tcp-segmentation-offload: on" in k, k
            args = ("-m", "tests.support.bulk", "serve", "--name", f"b{i}", "--port", str(BULK_PORT))
            lab.popen(lab.ns_backend(i), *lab.python_cmd(*args))
        lab.run(lab.ns_lb, "ethtool", "-K", f"{P}l0", "tx", "off")
        # ethtool flaps the link: the client reaches the LB again before any transfer
        assert wait_until(
            lambda: lab.run(lab.ns_client, "ping", "-c1", "-W1", "10.0.0.1", check=False).returncode == 0
        )
        for i in lab.backend_ids:
            ns = lab.ns_backend(i)
            assert wait_until(lambda ns=ns: f":{BULK_PORT}" in lab.run(ns, "ss", "-ltn").stdout)
        got = lab.http_requests(9)  # every neighbour entry is there afterwards
        assert got["errors"] == 0, got

        before = counters()
        segs_before = lab.nstat_csum_errors(keys=("TcpInSegs",))[lab.ns_client]["TcpInSegs"]
        args = ["client", "--url", f"http://{lab.vip}:8081/", "--conns", str(CONNS), "--bytes", str(SIZE)]
        r = lab.run(
            lab.ns_client, *lab.python_cmd("-m", "tests.support.bulk", *args), check=False, timeout=60
        )
        result = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
        moved = moved_since(before)
        segs = lab.nstat_csum_errors(keys=("TcpInSegs",))[lab.ns_client]["TcpInSegs"] - segs_before

        assert result.get("intact") == CONNS, (result, r.stderr)
        assert result["uploaded"] == result["downloaded"] == CONNS * SIZE
        assert all(moved[k] == 0 for k in FALLBACKS), moved
        # every reply was SNATed by the fast path, once: none by lbtui_tc, none seen twice there
        assert (
            moved["fast_path_reply_forwarded"] > 0 and moved["tc_snat"] == moved["fast_path_reply_forwarded"]
        )
        assert moved["tc_miss"] == 0, moved
        # fewer skbs went through the fast path than the client received segments: GSO skbs did
        assert segs > moved["fast_path_reply_forwarded"], (segs, moved)
        assert_no_checksum_errors(lab)

        # the way to the client narrower than the backends' segments (the client still says MSS 1460):
        # the GSO replies' segments do not fit, fall back, and the kernel's "fragmentation needed"
        # tells the backend, which sends smaller segments from then on (fast again). A locked route
        # MTU, which forwarding obeys (the link's own MTU would also drop the client's big frames)
        route = ["10.0.0.0/24", "dev", f"{P}l0", "proto", "kernel", "scope", "link", "src", "10.0.0.1"]
        lab.run(lab.ns_lb, "ip", "route", "replace", *route, "mtu", "lock", "1400")
        before = counters()
        one = ["client", "--url", f"http://{lab.vip}:8081/", "--conns", "1", "--bytes", str(SIZE)]
        r = lab.run(lab.ns_client, *lab.python_cmd("-m", "tests.support.bulk", *one), check=False, timeout=60)
        result = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
        moved = moved_since(before)
        assert result.get("intact") == 1, (result, r.stderr)
        assert moved["fast_path_frag_needed"] >= 1 and moved["fast_path_reply_forwarded"] > 0, moved
        learnt = [
            lab.run(lab.ns_backend(i), "ip", "route", "get", "10.0.0.2").stdout for i in lab.backend_ids
        ]
        assert any("mtu 1400" in route for route in learnt), learnt
        assert_no_checksum_errors(lab)


def test_fast_path_off_leaves_forwarding_to_the_kernel(tmp_path: Path) -> None:
    with running_lb(P, tmp_path, settings='fast_path = "off"\n') as (lab, _):
        got = lab.http_requests(30)  # 10 left a backend out 1 run in 20 (3 x (2/3)^10), 30: 1 in 60,000
        assert got["errors"] == 0 and len(served(got)) == 3, got
        fast = {k: v for k, v in counters().items() if k.startswith("fast_path_")}
        assert fast == dict.fromkeys(fast, 0)
        assert (
            "lbtui_tc_reply"
            not in lab.run(lab.ns_lb, "tc", "filter", "show", "dev", f"{P}br0", "ingress").stdout
        )
        assert_no_checksum_errors(lab)
