#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""What the backends' decapsulation program (bpf/decap.c) costs per packet.

BPF_PROG_TEST_RUN, kernel-timed, ONE packet per call (the program strips the header of the test
run's copy in place, so repeat > 1 would time a plain packet after the first run; see
docs/datapath.md#test-run). The classes are interleaved in batches so background load on this shared
VM hits each alike; "net" is a class's median (p90) minus that of an empty TC program timed in the
same batches. Before timing, one call per class checks the verdict, the output length and the
counter the class is meant to move, so every row measures the path its name says.

    sudo flock /tmp/lbtui-e2e.lock .venv/bin/python bench/decap_bench.py [--calls 20000] [--cpu 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's root
from scapy.layers.inet import IP, TCP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Packet, Raw  # noqa: E402

from lbtui.dataplane.decap import DECAP_COUNTERS, DecapProgram  # noqa: E402
from lbtui.dataplane.progrun import TC_ACT_OK, run_program  # noqa: E402

VIP, VIP6, OTHER_VIP, BACKEND, LB = "10.100.0.1", "fd00:100::1", "10.100.0.9", "10.2.0.11", "10.1.1.2"
EMPTY = "int empty(struct __sk_buff *skb) { return 0; }"
OUTER = 20  # the IPv4 header the program removes


@dataclass(frozen=True)
class Case:
    name: str
    frame: bytes
    counter: str | None  # the counter one run of this frame moves (None: uncounted traffic)
    stripped: bool  # the output is OUTER bytes shorter


def _tcp(dst: str, v6: bool = False) -> Packet:
    ip: Packet = IPv6(src="fd00::2", dst=dst) if v6 else IP(src="10.0.0.2", dst=dst)
    return ip / TCP(sport=40000, dport=80, flags="PA") / Raw(b"x" * 64)


def cases() -> list[Case]:
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    return [
        Case(
            "IPIP to a VIP: decapsulated",
            bytes(eth / IP(src=LB, dst=BACKEND) / _tcp(VIP)),
            "decap_ipip",
            True,
        ),
        Case(
            "IPv6-in-IPv4 to a VIP: decapsulated",
            bytes(eth / IP(src=LB, dst=BACKEND) / _tcp(VIP6, v6=True)),
            "decap_ip6ip",
            True,
        ),
        Case(
            "IPIP to another address: passed, counted",
            bytes(eth / IP(src=LB, dst=BACKEND) / _tcp(OTHER_VIP)),
            "pass_not_vip",
            False,
        ),
        Case("plain TCP (the backend's other traffic)", bytes(eth / _tcp(BACKEND)), None, False),
    ]


def counters(prog: DecapProgram) -> dict[str, int]:
    stats = prog.bpf["decap_stats"]
    return {name: sum(stats[stats.Key(i)]) for i, name in enumerate(DECAP_COUNTERS)}


def check(prog: DecapProgram, case: Case) -> None:
    """One run of the case: the verdict, the length and the counter it is meant to move."""
    before = counters(prog)
    r = run_program(prog.fn.fd, case.frame)
    moved = {k for k, v in counters(prog).items() if v != before[k] and k != "decap_bytes"}
    want_len = len(case.frame) - (OUTER if case.stripped else 0)
    if r.retval != TC_ACT_OK or len(r.data) != want_len or moved != ({case.counter} - {None}):
        raise SystemExit(f"{case.name}: verdict {r.retval}, {len(r.data)} bytes, counters moved {moved}")


def pct(samples: list[int], q: int) -> float:
    return statistics.quantiles(samples, n=100)[q - 1] if q != 50 else statistics.median(samples)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=20000, help="calls per class")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--cpu", type=int, default=1, help="the CPU every call runs on")
    a = p.parse_args()
    from bcc import BPF

    os.sched_setaffinity(0, {a.cpu})
    empty = BPF(text=EMPTY)
    empty_fd = empty.load_func("empty", BPF.SCHED_CLS).fd
    prog = DecapProgram(vips=[VIP, VIP6], local=[BACKEND])
    try:
        all_cases = cases()
        for case in all_cases:
            check(prog, case)
        runs: list[tuple[str, int, bytes]] = [(c.name, prog.fn.fd, c.frame) for c in all_cases]
        runs.append(("empty", empty_fd, all_cases[0].frame))
        samples: dict[str, list[int]] = {name: [] for name, _, _ in runs}
        for _ in range(max(1, a.calls // a.batch)):
            for name, fd, frame in runs:
                samples[name].extend(run_program(fd, frame).duration_ns for _ in range(a.batch))
        base50, base90 = pct(samples["empty"], 50), pct(samples["empty"], 90)
        n = len(samples["empty"])
        print(f"BPF_PROG_TEST_RUN on CPU {a.cpu}, {n} calls per class in batches of {a.batch}")
        print(f"empty TC program: median {base50:.0f} ns, p90 {base90:.0f} ns\n")
        print("| packet | net median ns | net p90 ns |")
        print("|---|---:|---:|")
        for case in all_cases:
            s = samples[case.name]
            print(f"| {case.name} | {pct(s, 50) - base50:.0f} | {pct(s, 90) - base90:.0f} |")
    finally:
        prog.close()
        empty.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
