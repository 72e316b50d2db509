# SPDX-License-Identifier: Apache-2.0
"""Two instances on one host: each with its own control socket is fully isolated.

Instance A serves VIP:80 on the first client interface with backend b1; instance B, started from a
copy of A's file (the same settings.control_socket) but with `--socket` on another path, serves the
same VIP:port on the second client interface with backend b2. B must not adopt A's pinned maps
(A's clients would be sent to B's backends), each has its own pin directory, and B stopping must
leave A's pins and traffic alone.

Both run the fast path and share the backend-facing bridge: each attaches its reply program
(lbtui_tc_reply) at TC ingress of the bridge at a preference of its own, both instances' replies take
the fast path (each passes the other's on with TC_ACT_UNSPEC), and B's stop leaves A's in place.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from lbtui.control_client import SocketEngineHandle
from lbtui.dataplane.fastpath import REPLY_PREF
from lbtui.engine import PIN_ROOT
from lbtui.lab import LabSpec
from tests.support.lab import ClientLab
from tests.support.labtools import global_counter, served, start_lbtui

PREFIX = "lin"
SOCKET_A = f"/run/lbtui/{PREFIX}.sock"  # what the file says
SOCKET_B = f"/run/lbtui/{PREFIX}-b.sock"  # B's --socket


def config(interface: str, backend: str) -> str:
    return f"""
[settings]
control_socket = "{SOCKET_A}"
xdp_mode = "generic"
sweep_interval_s = 0.25
[settings.metrics]
enabled = false

[[proxy]]
name = "web"
interfaces = ["{interface}"]
vip = "10.0.0.1"
port = 80
[[proxy.backend]]
address = "{backend}:8080"
weight = 1
"""


def start(lab: ClientLab, cfg: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    log.write_text("")
    return start_lbtui(lab, cfg, log, *extra)


def reply_filters(lab: ClientLab) -> dict[int, str]:
    """preference -> program name of the BPF filters at TC ingress of the lab's bridge."""
    out = lab.run(lab.ns_lb, "tc", "-j", "filter", "show", "dev", f"{PREFIX}br0", "ingress").stdout
    return {
        int(f["pref"]): f["options"]["prog"]["name"]
        for f in json.loads(out or "[]")
        if f.get("kind") == "bpf" and "prog" in f.get("options", {})
    }


def fast_replies(pins: Path) -> int:
    return global_counter("fast_path_reply_forwarded", str(pins))


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_two_instances_with_their_own_sockets_are_isolated(tmp_path: Path) -> None:
    lab = ClientLab(LabSpec(prefix=PREFIX))
    lab.up()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        lab.start_backends()
        first_if, second_if = lab.client_ifaces
        cfg_a, cfg_b = tmp_path / "a.toml", tmp_path / "b.toml"
        cfg_a.write_text(config(first_if, lab.backend_ip(1)))
        cfg_b.write_text(config(second_if, lab.backend_ip(2)))
        procs.append(start(lab, cfg_a, tmp_path / "a.log"))
        assert served(lab.http_requests(20, client=1)) == {"b1": 20}

        b = start(lab, cfg_b, tmp_path / "b.log", "--socket", SOCKET_B)
        procs.append(b)
        assert "took over the data path" not in (tmp_path / "b.log").read_text()
        assert served(lab.http_requests(20, client=1)) == {"b1": 20}, "A's clients went to B's backends"
        assert served(lab.http_requests(20, client=2)) == {"b2": 20}
        a_handle, b_handle = SocketEngineHandle(SOCKET_A), SocketEngineHandle(SOCKET_B)
        try:
            assert [x.address for x in a_handle.snapshot().service("web").backends] == [
                f"{lab.backend_ip(1)}:8080"
            ]
            assert [x.address for x in b_handle.snapshot().service("web").backends] == [
                f"{lab.backend_ip(2)}:8080"
            ]
        finally:
            a_handle.close()
            b_handle.close()
        pins_a, pins_b = Path(PIN_ROOT, PREFIX), Path(PIN_ROOT, f"{PREFIX}-b")
        assert pins_a.is_dir() and pins_b.is_dir()

        # one backend-facing bridge, two reply programs, and both instances' replies go fast
        assert reply_filters(lab) == {REPLY_PREF: "lbtui_tc_reply", REPLY_PREF + 1: "lbtui_tc_reply"}
        fast_a, fast_b = fast_replies(pins_a), fast_replies(pins_b)
        assert served(lab.http_requests(20, client=1)) == {"b1": 20}
        assert served(lab.http_requests(20, client=2)) == {"b2": 20}
        assert fast_replies(pins_a) > fast_a, "A's replies did not reach A's reply program"
        assert fast_replies(pins_b) > fast_b

        stop(b)
        assert not pins_b.exists()
        assert pins_a.is_dir() and (pins_a / "lb_ct_established").exists(), "B's stop unpinned A's maps"
        assert reply_filters(lab) == {REPLY_PREF: "lbtui_tc_reply"}, "B's stop took A's reply program"
        fast_a = fast_replies(pins_a)
        assert served(lab.http_requests(20, client=1)) == {"b1": 20}
        assert fast_replies(pins_a) > fast_a
        stop(procs[0])
        assert not pins_a.exists()
    finally:
        for proc in procs:
            stop(proc)
        lab.down()
        for leftover in (Path(PIN_ROOT, PREFIX), Path(PIN_ROOT, f"{PREFIX}-b")):
            if leftover.is_dir():
                subprocess.run(["rm", "-r", str(leftover)], check=False)
