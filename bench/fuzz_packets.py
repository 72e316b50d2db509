#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Packet fuzzing of lbtui's BPF programs through BPF_PROG_TEST_RUN (oracle: tests/fuzz/packets/).

Every frame runs through the XDP ingress or the TC egress program of a private copy of the programs
(no attach, no traffic); the oracle predicts the verdict and every output byte, verifies checksums
with its own one's complement code, and compares the conntrack map and the global counters with its
mirror every --sync-every frames. Each seed runs in one process pinned to one CPU; --seeds N runs N
consecutive seeds (a soak) on --workers processes at once.

    sudo .venv/bin/python bench/fuzz_packets.py --seed 7 --frames 100000
    sudo .venv/bin/python bench/fuzz_packets.py --seeds 50 --frames 100000          # soak: seeds 1..50
    sudo .venv/bin/python bench/fuzz_packets.py --families ipv6 --seeds 10 --frames 100000  # IPv6 only
    sudo .venv/bin/python bench/fuzz_packets.py --fast-path --seeds 10 --frames 100000  # LB_FAST_PATH=1
    sudo .venv/bin/python bench/fuzz_packets.py --replay CASE.json                 # run a case again
    sudo .venv/bin/python bench/fuzz_packets.py --shrink CASE.json --out MIN.json  # shortest failing

A failure writes the frames since the last conntrack sync (with the kernel's weighted-random draws)
to a case file under --cases and prints its path; --replay runs it again exactly, --shrink cuts it
to the shortest event sequence that still fails. Prints frames/s, counts per family and outcome,
failures per seed (each with the input and output frame hex-dumped) and findings; exits 1 on any
failure (--replay: when the case still fails), 3 without root.

--fast-path builds the programs with the XDP fast path (LB_FAST_PATH=1) and runs the XDP frames
inside a network namespace per process whose routes and neighbours give each IPv4 and IPv6 backend
one of the fast path's answers (tests/fuzz/packets/fastpath.py, fastpath6.py); the oracle predicts
XDP_REDIRECT with the exact bytes, or XDP_PASS with the DNATed frame and the fallback reason's
counter; frames from the backend side run lbtui_tc_reply (lbtui_tc_reply6 for IPv6: TC_ACT_REDIRECT
with the SNAT, or TC_ACT_OK untouched) before lbtui_tc. The summary counts each fast_path_*
decision per family, both ways.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's root
from tests.fuzz.packets import harness  # noqa: E402
from tests.fuzz.packets.cases import load_case, save_case  # noqa: E402
from tests.fuzz.packets.fastpath import FAST_PATH_COUNTERS  # noqa: E402
from tests.fuzz.packets.oracle import FINDINGS  # noqa: E402
from tests.fuzz.packets.replay import describe_case, replay, shrink  # noqa: E402

_my_cpu = 0  # per worker process: which of the allowed CPUs it pins itself to


def _init_worker(slots: Any) -> None:
    global _my_cpu
    _my_cpu = slots.get()


def _job(args: tuple[int, int, int, float, str, str, bool]) -> tuple[int, harness.FuzzStats, float]:
    seed, frames, sync_every, evict_rate, cases, families, fast_path = args
    start = time.monotonic()
    stats = harness.fuzz_packets(
        seed,
        frames,
        sync_every=sync_every,
        evict_rate=evict_rate,
        case_dir=cases,
        cpu=_my_cpu,
        families=families,
        fast_path=fast_path,
    )
    return seed, stats, time.monotonic() - start


def run_seeds(args: argparse.Namespace) -> int:
    seeds = list(range(args.seed, args.seed + args.seeds))
    workers = max(1, min(args.workers, len(seeds)))
    cases = str(Path(args.cases) / time.strftime("%Y%m%d-%H%M%S"))
    options = (
        f"--frames {args.frames} --sync-every {args.sync_every} --evict-rate {args.evict_rate} "
        f"--families {args.families}" + (" --fast-path" if args.fast_path else "")
    )
    print(
        f"fuzzing seed{'s' if len(seeds) > 1 else ''} {seeds[0]}"
        + (f"..{seeds[-1]}" if len(seeds) > 1 else "")
        + f" x {args.frames} frames, sync every {args.sync_every}, evict rate {args.evict_rate}, "
        f"families {args.families}{', fast path' if args.fast_path else ''}, {workers} worker(s), "
        f"one CPU each; case files of failures go to {cases}/",
        flush=True,
    )
    print(f"one seed again: bench/fuzz_packets.py --seed SEED {options}", flush=True)
    jobs = [
        (seed, args.frames, args.sync_every, args.evict_rate, cases, args.families, args.fast_path)
        for seed in seeds
    ]
    start = time.monotonic()
    results: list[tuple[int, harness.FuzzStats, float]] = []
    if workers == 1:
        for job in jobs:
            results.append(_job(job))
            _print_seed(*results[-1])
    else:
        ctx = multiprocessing.get_context("spawn")
        slots = ctx.Queue()
        for i in range(workers):
            slots.put(i)
        with ctx.Pool(workers, initializer=_init_worker, initargs=(slots,)) as pool:
            for result in pool.imap_unordered(_job, jobs):
                results.append(result)
                _print_seed(*result)
    elapsed = time.monotonic() - start

    total = harness.FuzzStats()
    for _, stats, _ in sorted(results, key=lambda r: r[0]):
        total.merge(stats, keep=args.show)
    print()
    print(harness.summary_table(total))
    print()
    print(
        f"seeds: {len(seeds)}  frames: {total.frames} (IPv6: {harness.ipv6_frames(total)})  "
        f"time: {elapsed:.1f} s  "
        f"({total.frames / elapsed:,.0f} frames/s, including compile and setup)  "
        f"conntrack checks: {total.syncs}  simulated evictions: {total.evictions}"
    )
    if args.fast_path:
        for family, prefix in (("IPv4", ""), ("IPv6", "v6 ")):
            forward, reply = (_fast_path_line(total.fast_path, prefix, r) for r in (False, True))
            print(f"fast path, DNATed {family} frames: {forward}")
            print(f"fast path, {family} replies of tracked flows: {reply}")
    failing = sorted((seed, stats.failure_count) for seed, stats, _ in results if stats.failure_count)
    print(f"failures: {total.failure_count}" + (f" (seed: count {dict(failing)})" if failing else ""))
    for failure in total.failures:
        print()
        print(failure)
        if failure.case:
            print(f"  replay: bench/fuzz_packets.py --replay {failure.case}")
            print(f"  shrink: bench/fuzz_packets.py --shrink {failure.case}")
    for kind, count in sorted(total.findings.items()):
        print()
        print(f"finding ({kind}): {count} times {FINDINGS[kind]}; for example:")
        for text in total.finding_examples.get(kind, []):
            print(f"  {text}")
    return 1 if total.failure_count else 0


def _fast_path_line(seen: Counter[str], family: str, reply: bool) -> str:
    """The fast path's decisions (redirected first, then each fallback counter) for one family
    (`family`: the oracle's prefix, "" or "v6 ") and direction."""
    forwarded = "fast_path_reply_forwarded" if reply else "fast_path_forwarded"
    names = [forwarded] + [n for n in FAST_PATH_COUNTERS if "forwarded" not in n]
    counts = [seen[family + (n if n == forwarded or not reply else "reply " + n)] for n in names]
    return ", ".join(f"{n.removeprefix('fast_path_')} {c}" for n, c in zip(names, counts, strict=True))


def _print_seed(seed: int, stats: harness.FuzzStats, elapsed: float) -> None:
    cases = sorted({f.case for f in stats.failures if f.case})
    print(
        f"seed {seed}: {stats.frames} frames in {elapsed:.1f} s, {stats.failure_count} failures"
        + (f", cases: {' '.join(cases)}" if cases else ""),
        flush=True,
    )


def run_replay(args: argparse.Namespace) -> int:
    case = load_case(args.replay)
    print(f"{args.replay}: {len(case.events)} events ({case.frames} frames), recorded with {case.origin}")
    print(f"recorded failure: {case.kind or '-'}")
    if args.verbose:
        print("\n".join(describe_case(case)))
    failed = 0
    with harness.pinned_to_one_cpu():
        dataplane = harness.Dataplane(fast_path=bool(case.origin.get("fast_path")))
        try:
            for i in range(args.times):
                stats, _ = replay(dataplane, case)
                failed += bool(stats.failure_count)
                print(f"replay {i + 1}: {stats.failure_count} failures")
                for failure in stats.failures[: args.show]:
                    print(failure)
        finally:
            dataplane.close()
    return 1 if failed else 0


def run_shrink(args: argparse.Namespace) -> int:
    case = load_case(args.shrink)
    out = Path(args.out or str(Path(args.shrink).with_suffix("")) + ".min.json")
    print(f"shrinking {args.shrink}: {len(case.events)} events, failure: {case.kind}", flush=True)
    start = time.monotonic()
    with harness.pinned_to_one_cpu():
        dataplane = harness.Dataplane(fast_path=bool(case.origin.get("fast_path")))
        try:
            small = shrink(dataplane, case, progress=lambda text: print(f"  {text}", flush=True))
            again = [replay(dataplane, small)[0].failure_count for _ in range(3)]
        finally:
            dataplane.close()
    save_case(small, out)
    print(f"{len(case.events)} -> {len(small.events)} events in {time.monotonic() - start:.1f} s: {out}")
    print(f"replayed 3 times: {again} failures")
    print("\n".join(describe_case(small)))
    print(small.failure)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000, help="frames per seed")
    parser.add_argument("--seed", type=int, default=1, help="the (first) seed")
    parser.add_argument("--seeds", type=int, default=1, help="how many consecutive seeds (a soak)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="seeds run at once")
    parser.add_argument("--sync-every", type=int, default=1000, help="frames between conntrack checks")
    parser.add_argument("--evict-rate", type=float, default=0.005, help="evictions per frame")
    parser.add_argument(
        "--families",
        choices=("all", "ipv4", "ipv6"),
        default="all",
        help="frame families: both halves of the data path, or one (tests/fuzz/packets/frames6.py: IPv6)",
    )
    parser.add_argument(
        "--fast-path",
        action="store_true",
        help="programs with the XDP fast path, run in a namespace of routes and neighbours (fastpath.py)",
    )
    parser.add_argument("--cases", default="/tmp/lbtui-fuzz-cases", help="where failures' case files go")
    parser.add_argument("--show", type=int, default=20, help="failures to print in full")
    parser.add_argument("--replay", metavar="CASE", help="run a recorded case (see --times)")
    parser.add_argument("--times", type=int, default=3, help="--replay: how many times")
    parser.add_argument("--verbose", action="store_true", help="--replay: list the case's events")
    parser.add_argument("--shrink", metavar="CASE", help="cut a case to the shortest failing sequence")
    parser.add_argument("--out", help="--shrink: where the shrunk case goes (default CASE.min.json)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("fuzz_packets needs root (it loads BPF programs)", file=sys.stderr)
        return 3
    if args.replay:
        return run_replay(args)
    if args.shrink:
        return run_shrink(args)
    if args.frames < 1 or args.workers < 1 or args.seeds < 1:
        parser.error("--frames, --seeds and --workers must be positive")
    return run_seeds(args)


if __name__ == "__main__":
    sys.exit(main())
