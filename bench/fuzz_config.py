#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Config fuzzing: hypothesis-generated TOML documents through lbtui.config (checker: tests/fuzz/configs.py).

Four sources share the examples: schema-based documents with wrong types, out-of-range values,
unknown and missing keys ("document"); text mutations of configs/full.toml ("mutated"); value and key
mutations of its parsed form ("restructured"); raw bytes with invalid UTF-8, NULs and BOMs through
load_config ("raw"). For each: parse_config/load_config raise nothing but ConfigError, every issue
has a message and a key path into the document (file-level only for TOML syntax and encoding
errors), and a valid document round-trips through config_to_toml.

    .venv/bin/python bench/fuzz_config.py --examples 10000 --seed 1

Unlike the test suite, a failure does not stop the run (and is not shrunk): every failing document
is counted and the first few are printed. Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's root
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from tests.fuzz import configs as fuzzing  # noqa: E402

SOURCES = ("document", "mutated", "restructured", "raw")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10_000, help="total, split over the sources")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--show", type=int, default=5, help="failing documents to print")
    args = parser.parse_args(argv)

    strategies = fuzzing.config_strategies()
    outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
    issue_kinds: collections.Counter[str] = collections.Counter()
    failures: list[tuple[str, str, tuple[str, ...]]] = []
    failure_count = 0
    directory = tempfile.mkdtemp(prefix="lbtui-fuzz-config-")

    def record(source: str, example: Any) -> None:
        nonlocal failure_count
        if source == "raw":
            check = fuzzing.check_config_bytes(example, directory)
        else:
            check = fuzzing.check_config_text(example)
        outcomes[(source, check.outcome)] += 1
        for issue in check.issues:
            # "proxy[0].backend[1].weight" -> "proxy[].backend[].weight"
            issue_kinds[re.sub(r"\[[0-9]+\]", "[]", issue.key_path) or "<file>"] += 1
        if check.problems:
            failure_count += 1
            if len(failures) < args.show:
                shown = example if isinstance(example, str) else repr(example)
                failures.append((source, shown, check.problems))

    def runner(source: str) -> Any:
        def one(example: Any) -> None:
            record(source, example)

        return one

    start = time.monotonic()
    try:
        for index, source in enumerate(SOURCES):
            share = args.examples // len(SOURCES) + (1 if index < args.examples % len(SOURCES) else 0)

            run = settings(
                max_examples=share,
                database=None,
                deadline=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )(given(strategies[source])(runner(source)))
            hypothesis_seed(args.seed * 100 + index)(run)()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    elapsed = time.monotonic() - start

    total = sum(outcomes.values())
    print(f"{'source':<14}{'valid':>8}{'invalid':>9}{'toml-error':>12}{'crash':>7}{'total':>8}")
    for source in SOURCES:
        row = [outcomes[(source, o)] for o in ("valid", "invalid", "toml-error", "crash")]
        print(f"{source:<14}{row[0]:>8}{row[1]:>9}{row[2]:>12}{row[3]:>7}{sum(row):>8}")
    print()
    print(f"examples: {total}  time: {elapsed:.1f} s  ({total / elapsed:,.0f}/s)")
    print(f"distinct issue key paths: {len(issue_kinds)}; most frequent:")
    for path, count in issue_kinds.most_common(12):
        print(f"  {count:>7}  {path}")
    print(f"failures: {failure_count}")
    for source, shown, problems in failures:
        print()
        print(f"[{source}]")
        for problem in problems[:5]:
            print(f"  {problem}")
        print("  document:")
        print("\n".join("    " + line for line in shown.splitlines()[:80]))
    return 1 if failure_count else 0


if __name__ == "__main__":
    sys.exit(main())
