#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Packet fuzzing of lbtui's BPF programs through BPF_PROG_TEST_RUN (oracle: tests/fuzz/packets.py).

Every frame runs through the XDP ingress or the TC egress program of a private copy of the programs
(no attach, no traffic); the oracle predicts the verdict and every output byte, verifies checksums
with its own one's complement code, and compares the conntrack map and the global counters with its
mirror every --sync-every frames. Several worker processes each load their own copy and fuzz their
share of the frames with their own seed (seed * 1000 + worker index).

    sudo .venv/bin/python bench/fuzz_packets.py --frames 1000000 --seed 1
    sudo .venv/bin/python bench/fuzz_packets.py --frames 20000 --workers 1 --seed 7

Prints frames/s, counts per family and outcome, the failures (each with the input and output
frame hex-dumped) and findings; exits 1 on any failure, 3 without root.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's root
from tests.fuzz import packets as fuzzing  # noqa: E402


def _worker(args: tuple[int, int, int]) -> fuzzing.FuzzStats:
    seed, frames, sync_every = args
    return fuzzing.fuzz_packets(seed, frames, sync_every=sync_every)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sync-every", type=int, default=1000, help="frames between conntrack checks")
    parser.add_argument("--show", type=int, default=20, help="failures to print in full")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("fuzz_packets needs root (it loads BPF programs)", file=sys.stderr)
        return 3
    if args.frames < 1 or args.workers < 1:
        parser.error("--frames and --workers must be positive")

    workers = min(args.workers, args.frames)
    shares = [args.frames // workers + (1 if i < args.frames % workers else 0) for i in range(workers)]
    jobs = [(args.seed * 1000 + i, n, args.sync_every) for i, n in enumerate(shares)]
    print(f"fuzzing {args.frames} frames, seed {args.seed}, {workers} worker(s)", flush=True)
    start = time.monotonic()
    if workers == 1:
        results = [_worker(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(_worker, jobs)
    elapsed = time.monotonic() - start

    total = fuzzing.FuzzStats()
    for result in results:
        total.merge(result, keep=args.show)
    print()
    print(fuzzing.summary_table(total))
    print()
    print(
        f"frames: {total.frames}  time: {elapsed:.1f} s  ({total.frames / elapsed:,.0f} frames/s, "
        f"including compile and setup)  conntrack checks: {total.syncs}  "
        f"simulated evictions: {total.evictions}"
    )
    print(f"failures: {total.failure_count}")
    for failure in total.failures:
        print()
        print(failure)
    for kind, count in sorted(total.findings.items()):
        print()
        print(f"finding ({kind}): {count} times {fuzzing.FINDINGS[kind]}; for example:")
        for text in total.finding_examples.get(kind, []):
            print(f"  {text}")
    return 1 if total.failure_count else 0


if __name__ == "__main__":
    sys.exit(main())
