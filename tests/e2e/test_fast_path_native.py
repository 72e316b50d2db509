# SPDX-License-Identifier: Apache-2.0
"""The fast path with native XDP (settings.xdp_mode = "native"; lbtui/dataplane/xdp_features.py,
docs/datapath.md#fast-path).

A native redirect into a device without ndo_xdp_xmit would drop the frame, so lbtui redirects only
into interfaces whose netdev xdp-features say NDO_XMIT, and follows changes. Checked with real
traffic: with routed veths to the backends (no bridge) whose backend ends have GRO on, the LB's
backend-facing veths take XDP frames and the forward fast path redirects into them (the client's end
has GRO on too, so replies go fast as well); GRO turned off at the backends takes them out of
lb_fp_ifaces (the netdev "mgmt" notification) and their packets fall back, still delivered; GRO on
again brings them back. With the lab's bridge (no ndo_xdp_xmit) every forward packet falls back and
is delivered. No checksum errors anywhere.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lbtui.dataplane import structs
from lbtui.engine import PIN_ROOT
from lbtui.lab import LabSpec
from tests.support.lab import ClientLab
from tests.support.labtools import global_counter, running_lb, served, wait_until

pytestmark = pytest.mark.beside  # may run beside other e2e tests (tests/conftest.py)

P = "lfn"
PIN_DIR = f"{PIN_ROOT}/{P}"
NAMES = ("fast_path_forwarded", "fast_path_reply_forwarded", "fast_path_unmanaged")


def counters() -> dict[str, int]:
    return {n: global_counter(n, PIN_DIR) for n in NAMES}


def moved_since(before: dict[str, int]) -> dict[str, int]:
    return {k: v - before[k] for k, v in counters().items()}


def fp_ifaces() -> set[int]:
    """The interfaces lb_fp_ifaces lets XDP redirect frames into (struct lb_fp_iface's xdp_out)."""
    cmd = ["bpftool", "-j", "map", "dump", "pinned", f"{PIN_DIR}/lb_fp_ifaces"]
    items = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    xdp_out = structs.FpIface.xdp_out.offset
    return {
        int.from_bytes(bytes(int(b, 16) for b in i["key"]), "little")
        for i in items
        if int(i["value"][xdp_out], 16)
    }


def ifindex(lab: ClientLab, ifname: str) -> int:
    return int(json.loads(lab.run(lab.ns_lb, "ip", "-j", "link", "show", ifname).stdout)[0]["ifindex"])


def backend_ports(lab: ClientLab) -> set[int]:
    return {ifindex(lab, f"{P}b{i}p") for i in lab.backend_ids}


def set_backend_gro(lab: ClientLab, on: bool) -> None:
    for i in lab.backend_ids:
        lab.run(lab.ns_backend(i), "ethtool", "-K", f"{P}b{i}", "gro", "on" if on else "off")


def assert_native(lab: ClientLab) -> None:
    shown = lab.run(lab.ns_lb, "ip", "link", "show", f"{P}l0").stdout
    assert " xdp " in f"{shown} " and "xdpgeneric" not in shown, shown  # "prog/xdp id N" follows


def assert_served_by_all(lab: ClientLab) -> None:
    got = lab.http_requests(30)
    assert got["errors"] == 0 and len(served(got)) == 3, got
    udp = lab.udp_requests(30)
    assert udp["errors"] == 0, udp


def assert_no_checksum_errors(lab: ClientLab) -> None:
    csum = lab.nstat_csum_errors()
    assert all(v == 0 for counts in csum.values() for v in counts.values()), csum


def test_native_redirects_only_into_veths_that_take_xdp_frames(tmp_path: Path) -> None:
    spec = LabSpec(prefix=P, second_client=False, backend_bridge=False, backend_gro=True)
    with running_lb(P, tmp_path, spec=spec, xdp_mode="native") as (lab, _):
        assert_native(lab)
        lab.run(lab.ns_client, "ethtool", "-K", f"{P}c0", "gro", "on")  # replies may go fast too
        client_side = ifindex(lab, f"{P}l0")
        assert wait_until(lambda: fp_ifaces() == backend_ports(lab) | {client_side}), fp_ifaces()
        assert wait_until(lambda: lab.vip_answers())  # ethtool flapped the client's link
        before = counters()
        assert_served_by_all(lab)
        moved = moved_since(before)
        assert moved["fast_path_forwarded"] > 30 * 3, moved
        assert moved["fast_path_reply_forwarded"] > 30 * 3, moved
        assert moved["fast_path_unmanaged"] == 0, moved

        # the backends' ends without GRO: the LB's veths lose NDO_XMIT, the watch takes them out
        set_backend_gro(lab, False)
        assert wait_until(lambda: fp_ifaces() == {client_side}), fp_ifaces()
        before = counters()
        assert_served_by_all(lab)
        moved = moved_since(before)
        assert moved["fast_path_forwarded"] == 0, moved
        assert moved["fast_path_unmanaged"] > 30 * 3, moved  # every forward packet fell back
        assert moved["fast_path_reply_forwarded"] > 30 * 3, moved

        set_backend_gro(lab, True)  # ... and back in
        assert wait_until(lambda: fp_ifaces() == backend_ports(lab) | {client_side}), fp_ifaces()
        before = counters()
        assert_served_by_all(lab)
        assert moved_since(before)["fast_path_forwarded"] > 30 * 3
        assert_no_checksum_errors(lab)


def test_native_behind_a_bridge_falls_back_and_delivers(tmp_path: Path) -> None:
    with running_lb(P, tmp_path, xdp_mode="native") as (lab, _):
        assert_native(lab)
        assert fp_ifaces() == set()  # neither the bridge nor the client's veth takes XDP frames
        before = counters()
        assert_served_by_all(lab)
        moved = moved_since(before)
        assert moved["fast_path_forwarded"] == 0, moved
        assert moved["fast_path_unmanaged"] > 30 * 3, moved
        assert moved["fast_path_reply_forwarded"] > 30 * 3, moved  # skbs from TC go anywhere
        assert_no_checksum_errors(lab)
