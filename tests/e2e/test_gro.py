# SPDX-License-Identifier: Apache-2.0
"""GRO on the load balancer's client-facing veth (issue 12, generic-mode GRO).

The worry: generic XDP runs on the skb, so after GRO, and a merged TCP skb is ``CHECKSUM_PARTIAL``
(its check field holds only the pseudo-header sum); an incremental update corrupts it. Measured on
this kernel: the kernel skips GRO on a device that has a generic XDP program (``netif_elide_gro``),
so with GRO on, generic mode sees no merged frame; native mode runs XDP in the veth's NAPI before
GRO, and GRO merges the rewritten segments. Both must move every byte intact
(docs/datapath.md#gro-and-pending-checksums).

The test makes the merge and the check visible:
- GRO on ``l0`` in the LB namespace (on veth, GRO also turns on the veth's NAPI, where GRO runs);
- tx checksum offload off on the LB's own ends of the backend links and of the client link, so the
  LB finishes every checksum in software, as a NIC would, and the receiver verifies it
  (``TcpInCsumErrors``);
- tcpdump on ``l0`` (inbound, headers only) sees the skbs after GRO and after XDP: frames larger
  than the MTU show that GRO merged, and their check fields must be the pseudo-header sum for the
  rewritten addresses;
- four connections upload and download 4 MB each through the VIP; every byte is compared.
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from lbtui.lab import LabSpec
from tests.support.lab import ClientLab
from tests.support.labtools import start_lbtui, wait_until

pytestmark = pytest.mark.beside  # may run beside other e2e tests (tests/conftest.py)

CONNS = 4
SIZE = 4 << 20
MTU_FRAME = 1514  # the lab's MTU (1500) plus the Ethernet header
SNAPLEN = 128


@dataclass(frozen=True)
class Capture:
    frames: int
    merged: int  # frames larger than the MTU: GRO merged them
    largest: int
    to_backends: int  # merged frames whose destination is a backend (DNAT happened)
    bad_seeds: int  # merged TCP frames whose check field is not their pseudo-header sum


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def read_capture(path: Path, backend_ips: set[str]) -> Capture:
    """Frames of a pcap (Ethernet) as GRO and XDP left them on the receiving interface."""
    raw = path.read_bytes()
    off, frames, merged, largest, to_backends, bad = 24, 0, 0, 0, 0, 0
    while off + 16 <= len(raw):
        incl, orig = struct.unpack_from("<II", raw, off + 8)
        pkt = raw[off + 16 : off + 16 + incl]
        off += 16 + incl
        frames += 1
        largest = max(largest, orig)
        if orig <= MTU_FRAME or pkt[12:14] != b"\x08\x00" or pkt[23] != 6:
            continue
        merged += 1
        ihl = (pkt[14] & 0x0F) * 4
        total = struct.unpack_from("!H", pkt, 16)[0]
        src, dst = pkt[26:30], pkt[30:34]
        if ".".join(map(str, dst)) in backend_ips:
            to_backends += 1
        words = struct.unpack("!4H", src + dst)
        seed = _fold(sum(words) + 6 + total - ihl)
        check = struct.unpack_from("!H", pkt, 14 + ihl + 16)[0]
        bad += check != seed
    return Capture(frames, merged, largest, to_backends, bad)


@pytest.mark.requires("tcpdump")
@pytest.mark.requires("ethtool")
@pytest.mark.parametrize("mode", ["generic", "native"])
def test_gro_merged_segments_are_rewritten_with_correct_checksums(tmp_path: Path, mode: str) -> None:
    p = "lgr"
    lab = ClientLab(LabSpec(prefix=p, second_client=False))
    lab.up()
    proc = dump = None
    try:
        lb, cli = lab.ns_lb, lab.ns_client
        for i in lab.backend_ids:
            lab.popen(
                lab.ns_backend(i), *lab.python_cmd("-m", "tests.support.bulk", "serve", "--name", f"b{i}")
            )
        lab.run(lb, "ethtool", "-K", f"{p}l0", "gro", "on", "tx", "off")
        for i in lab.backend_ids:
            lab.run(lb, "ethtool", "-K", f"{p}b{i}p", "tx", "off")
        assert "generic-receive-offload: on" in lab.run(lb, "ethtool", "-k", f"{p}l0").stdout
        # ethtool flaps the links: every path answers again before lbtui starts
        assert wait_until(lambda: lab.run(cli, "ping", "-c1", "-W1", "10.0.0.1", check=False).returncode == 0)
        for i in lab.backend_ids:
            ip = lab.backend_ip(i)
            assert wait_until(
                lambda ip=ip: lab.run(lb, "ping", "-c1", "-W1", ip, check=False).returncode == 0
            )

        cfg = tmp_path / "lbtui.toml"
        cfg.write_text(
            lab.config_toml(weights=(1, 1, 1)).replace('xdp_mode = "generic"', f'xdp_mode = "{mode}"')
        )
        log = tmp_path / "lbtui.log"
        log.write_text("")
        proc = start_lbtui(lab, cfg, log, ns=lb)

        pcap = tmp_path / "l0.pcap"
        dump = lab.popen(
            lb, "tcpdump", "-i", f"{p}l0", "-Q", "in", "-n", "-s", str(SNAPLEN), "-B", "8192", "-U",
            "-w", str(pcap), "tcp", stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        # tcpdump creates the file once its filter is attached
        assert wait_until(lambda: pcap.exists() or dump.poll() is not None) and dump.poll() is None

        args = ["client", "--url", f"http://{lab.vip}/", "--conns", str(CONNS), "--bytes", str(SIZE)]
        r = lab.run(cli, *lab.python_cmd("-m", "tests.support.bulk", *args), check=False, timeout=40)
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
        result = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
        cap = read_capture(pcap, {lab.backend_ip(i) for i in lab.backend_ids})
        csum = lab.nstat_csum_errors()
        print(f"\n{mode}: {result}; {cap}; tcpdump: {dump.stderr.read().strip() if dump.stderr else ''}")
        print(f"checksum errors: {csum}")

        assert result.get("intact") == CONNS, (result, r.stderr)
        assert result["uploaded"] == result["downloaded"] == CONNS * SIZE
        assert all(v == 0 for counts in csum.values() for v in counts.values()), csum
        if mode == "generic":
            # the kernel skips GRO on a device with a generic XDP program (netif_elide_gro):
            # nothing is merged before the program, whatever ethtool says
            assert cap.merged == 0 and cap.largest <= MTU_FRAME, cap
        else:
            # native XDP runs in the veth's NAPI before GRO; GRO merges the rewritten segments
            assert cap.merged > 0 and cap.largest > MTU_FRAME, cap
            assert cap.to_backends == cap.merged and cap.bad_seeds == 0, cap
    finally:
        if dump is not None:
            lab.stop_process(dump)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        lab.down()
