#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Config fuzzing: hypothesis-generated TOML documents through lbtui.config (checker: tests/fuzz/configs.py).

Five sources share the examples: schema-based documents with wrong types, out-of-range values,
unknown and missing keys ("document"); text mutations of configs/full.toml ("mutated"); value and key
mutations of its parsed form ("restructured"); raw bytes with invalid UTF-8, NULs and BOMs through
load_config ("raw"); dual-stack documents, an IPv4 and an IPv6 proxy on one port, with at most one
IPv6 form broken (zone ids, brackets missing, v4-mapped addresses, prefixes over 128, the other
family: "ipv6"). For each: parse_config/load_config raise nothing but ConfigError, every issue has a
message and a key path into the document (file-level only for TOML syntax and encoding errors), and
a valid document round-trips through config_to_toml; a broken IPv6 form is refused with an issue
naming its key path, and a valid dual-stack document is accepted.

    .venv/bin/python bench/fuzz_config.py --examples 10000 --seed 1
    .venv/bin/python bench/fuzz_config.py --seeds 20 --examples 2000      # soak: seeds 1..20

A seed determines every document (hypothesis runs derandomized from it, without its example
database), so `--seed N --examples M` reproduces a run. Unlike the test suite, a failure does not
stop the run (and is not shrunk): every failing document is counted and the first few are printed.
Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's root
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402

from tests.fuzz import configs as fuzzing  # noqa: E402

SOURCES = ("document", "mutated", "restructured", "raw", "ipv6")


@dataclass
class SeedResult:
    seed: int
    outcomes: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    issue_kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)  # first few
    failure_count: int = 0
    elapsed: float = 0.0


def fuzz_seed(seed: int, examples: int, show: int) -> SeedResult:
    """`examples` documents of one seed, split over the sources."""
    strategies = fuzzing.config_strategies()
    result = SeedResult(seed)
    directory = tempfile.mkdtemp(prefix="lbtui-fuzz-config-")

    def record(source: str, example: Any) -> None:
        if source == "raw":
            check = fuzzing.check_config_bytes(example, directory)
        elif source == "ipv6":
            check = fuzzing.check_ipv6_form(example)
        else:
            check = fuzzing.check_config_text(example)
        result.outcomes[(source, check.outcome)] += 1
        for issue in check.issues:
            # "proxy[0].backend[1].weight" -> "proxy[].backend[].weight"
            result.issue_kinds[re.sub(r"\[[0-9]+\]", "[]", issue.key_path) or "<file>"] += 1
        if check.problems:
            result.failure_count += 1
            if len(result.failures) < show:
                shown = example if isinstance(example, str) else repr(example)
                if isinstance(example, fuzzing.Ipv6Form):
                    shown = f"{example.what} at {example.key_path}:\n{example.text}"
                result.failures.append((source, shown, check.problems))

    def runner(source: str) -> Any:
        def one(example: Any) -> None:
            record(source, example)

        return one

    start = time.monotonic()
    try:
        for index, source in enumerate(SOURCES):
            share = examples // len(SOURCES) + (1 if index < examples % len(SOURCES) else 0)
            run = settings(
                max_examples=share,
                database=None,
                deadline=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )(given(strategies[source])(runner(source)))
            hypothesis_seed(seed * 100 + index)(run)()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    result.elapsed = time.monotonic() - start
    return result


def _job(args: tuple[int, int, int]) -> SeedResult:
    return fuzz_seed(*args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10_000, help="per seed, split over the sources")
    parser.add_argument("--seed", type=int, default=1, help="the (first) seed")
    parser.add_argument("--seeds", type=int, default=1, help="how many consecutive seeds (a soak)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="seeds run at once")
    parser.add_argument("--show", type=int, default=5, help="failing documents to print")
    args = parser.parse_args(argv)
    if args.examples < 1 or args.seeds < 1 or args.workers < 1:
        parser.error("--examples, --seeds and --workers must be positive")

    seeds = list(range(args.seed, args.seed + args.seeds))
    workers = min(args.workers, len(seeds))
    if len(seeds) > 1:
        print(
            f"config fuzzing seeds {seeds[0]}..{seeds[-1]} x {args.examples} documents, {workers} worker(s); "
            f"one seed again: bench/fuzz_config.py --seed SEED --examples {args.examples}",
            flush=True,
        )
    jobs = [(seed, args.examples, args.show) for seed in seeds]
    start = time.monotonic()
    results: list[SeedResult] = []
    if workers == 1:
        for job in jobs:
            results.append(_job(job))
            _print_seed(results[-1], len(seeds))
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for result in pool.imap_unordered(_job, jobs):
                results.append(result)
                _print_seed(result, len(seeds))
    elapsed = time.monotonic() - start
    results.sort(key=lambda r: r.seed)

    outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
    issue_kinds: collections.Counter[str] = collections.Counter()
    for result in results:
        outcomes.update(result.outcomes)
        issue_kinds.update(result.issue_kinds)
    total = sum(outcomes.values())
    if len(seeds) > 1:
        print()
    print(f"{'source':<14}{'valid':>8}{'invalid':>9}{'toml-error':>12}{'crash':>7}{'total':>8}")
    for source in SOURCES:
        row = [outcomes[(source, o)] for o in ("valid", "invalid", "toml-error", "crash")]
        print(f"{source:<14}{row[0]:>8}{row[1]:>9}{row[2]:>12}{row[3]:>7}{sum(row):>8}")
    print()
    print(f"seeds: {len(seeds)}  examples: {total}  time: {elapsed:.1f} s  ({total / elapsed:,.0f}/s)")
    print(f"distinct issue key paths: {len(issue_kinds)}; most frequent:")
    for path, count in issue_kinds.most_common(12):
        print(f"  {count:>7}  {path}")
    failing = {r.seed: r.failure_count for r in results if r.failure_count}
    print(f"failures: {sum(failing.values())}" + (f" (seed: count {failing})" if failing else ""))
    shown = [(r.seed, *f) for r in results for f in r.failures][: args.show]
    for seed, source, document, problems in shown:
        print()
        print(f"[seed {seed}, {source}]")
        for problem in problems[:5]:
            print(f"  {problem}")
        print("  document:")
        print("\n".join("    " + line for line in document.splitlines()[:80]))
    return 1 if failing else 0


def _print_seed(result: SeedResult, seeds: int) -> None:
    if seeds > 1:
        count = sum(result.outcomes.values())
        took = f"{result.elapsed:.1f} s"
        print(f"seed {result.seed}: {count} documents in {took}, {result.failure_count} failures", flush=True)


if __name__ == "__main__":
    sys.exit(main())
