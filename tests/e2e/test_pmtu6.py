# SPDX-License-Identifier: Apache-2.0
"""Path-MTU discovery through the load balancer over IPv6 (issue 13, must show 3).

The lab's client link is cut in two by a router namespace: client [c5 fd00:19::2] == [r5 fd00:19::1,
MTU 1280] router [c0 fd00:10::2] == [l0 fd00:10::1 = VIP6] LB. A backend's full-size reply (1500
bytes; IPv6 routers never fragment) reaches the router, which answers with ICMPv6 Packet Too Big to
the VIP: the data path must hand it to the backend with the quoted packet translated (and the ICMPv6
checksum, which covers the outer addresses, right), or the backend never lowers its path MTU and the
1 MB responses stall. A 3,000-byte UDP reply leaves the backend in fragments: every one must leave
the load balancer from the VIP, and once the backend has learnt the path MTU from the translated
Packet Too Big about the first fragment, a retried query gets its whole answer. No namespace counts a
TCP, UDP or ICMPv6 checksum error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lbtui.engine import PIN_ROOT
from lbtui.lab import VIP6, LabSpec
from tests.support.lab import ClientLab
from tests.support.labtools import global_counter, start_lbtui, wait_until

pytestmark = [pytest.mark.root, pytest.mark.beside]  # beside: tests/conftest.py

BODY = 1 << 20
UDP_REPLY = 3000
NARROW_NET6 = "fd00:19:"  # the router's 1280-byte link to the client
CSUM_ERRORS = ("TcpInCsumErrors", "Udp6InCsumErrors", "Icmp6InCsumErrors")


def config(lab: ClientLab) -> str:
    ifaces = ", ".join(f'"{i}"' for i in lab.client_ifaces)
    lines = [
        "[settings]",
        f'control_socket = "{lab.control_socket}"',
        'xdp_mode = "generic"',
        "",
        "[settings.metrics]",
        "enabled = false",
        "",
    ]
    for name, proto, port, backend_port in (("web", "tcp", 80, 8080), ("udp", "udp", 5353, 5353)):
        lines += ["[[proxy]]", f'name = "{name}"', f"interfaces = [{ifaces}]", f'vip = "{VIP6}"']
        lines += [f"port = {port}", f'protocol = "{proto}"', ""]
        for i in lab.backend_ids:
            lines += ["[[proxy.backend]]", f'address = "[{lab.backend_ip6(i)}]:{backend_port}"', ""]
    return "\n".join(lines)


def narrow_client_link(lab: ClientLab, router: str) -> None:
    """Move the client's link to the LB into a router namespace and give the client a 1280-byte
    link to that router; the client's own interface stays at 1500, so it offers a full-size MSS and
    the backend's full-size segments hit the narrow link."""
    p, cli = lab.prefix, lab.ns_client
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True)  # noqa: E731
    subprocess.run(["ip", "netns", "add", router], check=True)
    run("ip", "-n", router, "link", "set", "lo", "up")
    run("ip", "-n", cli, "link", "set", f"{p}c0", "netns", router)
    run("ip", "-n", router, "-6", "addr", "add", "fd00:10::2/64", "dev", f"{p}c0", "nodad")
    run("ip", "-n", router, "link", "set", f"{p}c0", "up")
    veth = ["type", "veth", "peer", "name", f"{p}c5", "netns", cli]
    run("ip", "-n", router, "link", "add", f"{p}r5", "mtu", "1280", *veth)
    run("ip", "-n", router, "-6", "addr", "add", f"{NARROW_NET6}:1/64", "dev", f"{p}r5", "nodad")
    run("ip", "-n", router, "link", "set", f"{p}r5", "up")
    run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    run("ip", "-n", router, "-6", "route", "add", "default", "via", "fd00:10::1")
    run("ip", "-n", cli, "-6", "addr", "add", f"{NARROW_NET6}:2/64", "dev", f"{p}c5", "nodad")
    run("ip", "-n", cli, "link", "set", f"{p}c5", "up")
    run("ip", "netns", "exec", cli, "ethtool", "-K", f"{p}c5", "tx", "off")
    run("ip", "-n", cli, "-6", "route", "replace", "default", "via", f"{NARROW_NET6}:1")
    run("ip", "-n", lab.ns_lb, "-6", "route", "add", f"{NARROW_NET6}:/64", "via", "fd00:10::2")
    ping = ["ping", "-6", "-c1", "-W1", VIP6]
    assert wait_until(lambda: lab.run(cli, *ping, check=False).returncode == 0, timeout=10)


UDP_CLIENT = (
    "import socket,json\n"
    "s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM);s.settimeout(2)\n"
    "for attempt in range(1,5):\n"
    f"    s.sendto(b'q',('{VIP6}',5353))\n"
    "    try:\n"
    "        d,a=s.recvfrom(65535);break\n"
    "    except TimeoutError:\n"
    "        d,a=b'',('',0)\n"
    "print(json.dumps([len(d),a[0],a[1],attempt]))\n"
)


def test_packet_too_big_and_fragmented_udp_replies_through_a_1280_byte_link(tmp_path: Path) -> None:
    p = "lp6"
    lab = ClientLab(LabSpec(prefix=p))
    router = f"{p}rt"
    lab.up()
    proc = None
    try:
        for i in lab.backend_ids:
            cmd = ["--name", f"b{i}", "--body", str(BODY), "--udp", str(UDP_REPLY), "--bind", "::"]
            lab.popen(
                lab.ns_backend(i),
                *lab.python_cmd("-m", "tests.support.bigservers", *cmd),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        narrow_client_link(lab, router)

        cfg = tmp_path / "lbtui.toml"
        cfg.write_text(config(lab))
        log = tmp_path / "lbtui.log"
        log.write_text("")
        proc = start_lbtui(lab, cfg, log)
        pin_dir = f"{PIN_ROOT}/{p}"
        icmp_before = global_counter("xdp_icmp_translated", pin_dir)

        # UDP first: no backend knows the path MTU yet, so the first reply's fragments are too big
        # for the narrow link and only the translated Packet Too Big lets a retried query through
        r = lab.run(lab.ns_client, sys.executable, "-c", UDP_CLIENT, check=False, timeout=30)
        udp = json.loads(r.stdout) if r.returncode == 0 else None

        sizes = []
        for _ in range(4):
            r = lab.run(lab.ns_client, "curl", "-g", "-s", "-o", "/dev/null", "-w", "%{size_download}",
                        "--max-time", "20", f"http://[{VIP6}]/big", check=False, timeout=40)  # fmt: skip
            sizes.append(int(r.stdout or 0))
        icmp = global_counter("xdp_icmp_translated", pin_dir) - icmp_before

        fragments = global_counter("tc_fragments_snat", pin_dir)
        csum = lab.nstat_csum_errors(CSUM_ERRORS, extra=(router,))
        print(
            f"\n1 MB responses over IPv6: {sizes}; ICMPv6 errors translated: {icmp};"
            f" UDP reply [bytes, from, port, attempt]: {udp}; later fragments SNATed: {fragments};"
            f" checksum errors: {sum(sum(c.values()) for c in csum.values())}"
        )
        assert sizes == [BODY] * 4
        assert icmp >= 1
        assert udp is not None and udp[:3] == [UDP_REPLY, VIP6, 5353]
        assert fragments >= 1
        assert all(n == 0 for c in csum.values() for n in c.values()), csum
        assert len(csum) == len(lab.namespaces) + 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(20)
        subprocess.run(["ip", "netns", "del", router], capture_output=True)
        lab.down()
