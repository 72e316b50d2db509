# SPDX-License-Identifier: Apache-2.0
"""Path-MTU discovery through the load balancer (issue 12, must show 2).

The lab's client link is cut in two by a router namespace: client [c5 10.0.9.2] == [r5 10.0.9.1,
MTU 1280] router [c0 10.0.0.2] == [l0 10.0.0.1 = VIP] LB. A backend's full-size
reply (1500 bytes, DF) reaches the router, which answers with ICMP fragmentation-needed to the
VIP: the data path must hand it to the backend with the quoted packet translated, or the backend
never lowers its path MTU and the 1 MB response stalls. A 3,000-byte UDP reply (fragmented by the
backend) must leave with the VIP as the source of every fragment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lbtui.engine import PIN_ROOT
from lbtui.lab import LabSpec
from tests.support.lab import ClientLab
from tests.support.labtools import global_counter, start_lbtui

pytestmark = pytest.mark.beside  # may run beside other e2e tests (tests/conftest.py)

BODY = 1 << 20
UDP_REPLY = 3000


def test_pmtu_and_fragmented_udp_replies_through_a_1280_byte_link(tmp_path: Path) -> None:
    p = "lpm"
    lab = ClientLab(LabSpec(prefix=p))
    router = f"{p}rt"
    lab.up()
    proc = None
    try:
        for i in lab.backend_ids:
            lab.popen(
                lab.ns_backend(i),
                *lab.python_cmd("-m", "tests.support.bigservers", "--name", f"b{i}", "--body", str(BODY)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        cli = lab.ns_client
        subprocess.run(["ip", "netns", "add", router], check=True)
        run = lambda *a: subprocess.run(list(a), check=True, capture_output=True)  # noqa: E731
        run("ip", "-n", router, "link", "set", "lo", "up")
        run("ip", "-n", cli, "link", "set", f"{p}c0", "netns", router)
        run("ip", "-n", router, "addr", "add", "10.0.0.2/24", "dev", f"{p}c0")
        run("ip", "-n", router, "link", "set", f"{p}c0", "up")
        # the router's link toward the client is 1280 bytes; the client's own interface is 1500, so
        # it offers an MSS of 1460 and the backend's full-size segments hit the narrow link
        veth = ["type", "veth", "peer", "name", f"{p}c5", "netns", cli]
        run("ip", "-n", router, "link", "add", f"{p}r5", "mtu", "1280", *veth)
        run("ip", "-n", router, "addr", "add", "10.0.9.1/24", "dev", f"{p}r5")
        run("ip", "-n", router, "link", "set", f"{p}r5", "up")
        run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        run("ip", "-n", cli, "addr", "add", "10.0.9.2/24", "dev", f"{p}c5")
        run("ip", "-n", cli, "link", "set", f"{p}c5", "up")
        run("ip", "netns", "exec", cli, "ethtool", "-K", f"{p}c5", "tx", "off")
        run("ip", "-n", cli, "route", "replace", "default", "via", "10.0.9.1")
        run("ip", "-n", lab.ns_lb, "route", "add", "10.0.9.0/24", "via", "10.0.0.2")
        assert lab.run(cli, "ping", "-c1", "-W2", "10.0.0.1", check=False).returncode == 0

        cfg = tmp_path / "lbtui.toml"
        cfg.write_text(lab.config_toml(weights=(1, 1, 1)))
        log = tmp_path / "lbtui.log"
        log.write_text("")
        proc = start_lbtui(lab, cfg, log)
        pin_dir = f"{PIN_ROOT}/{p}"
        icmp_before = global_counter("xdp_icmp_translated", pin_dir)

        sizes = []
        for _ in range(3):
            r = lab.run(cli, "curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", "20",
                        f"http://{lab.vip}/big", check=False, timeout=40)  # fmt: skip
            sizes.append(int(r.stdout or 0))
        icmp = global_counter("xdp_icmp_translated", pin_dir) - icmp_before

        code = (
            "import socket,json;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3);"
            f"s.sendto(b'q',('{lab.vip}',5353));d,a=s.recvfrom(65535);print(json.dumps([len(d),a[0],a[1]]))"
        )
        r = lab.run(cli, sys.executable, "-c", code, check=False, timeout=20)
        udp = json.loads(r.stdout) if r.returncode == 0 else None
        fragments = global_counter("tc_fragments_snat", pin_dir)
        print(
            f"\n1 MB responses: {sizes}; ICMP errors translated: {icmp}; UDP reply: {udp};"
            f" later fragments SNATed: {fragments}"
        )
        assert sizes == [BODY] * 3
        assert icmp >= 1
        assert udp == [UDP_REPLY, lab.vip, 5353]
        assert fragments >= 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(20)
        subprocess.run(["ip", "netns", "del", router], capture_output=True)
        lab.down()
