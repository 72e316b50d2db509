# SPDX-License-Identifier: Apache-2.0
"""The kernel's own per-program counters (run_cnt, run_time_ns) for benchmarks.

The kernel counts runs and nanoseconds per BPF program only while statistics are enabled. This
module enables them with ``BPF_ENABLE_STATS`` (bpf(2) command 32), which keeps them on only while
the returned file descriptor is open, so a crashed benchmark cannot leave the ``kernel.bpf_stats_enabled``
sysctl on for everyone else; reading is through ``bpftool prog show --json``. Counting costs every
BPF program on the machine two clock reads per run while enabled, so enable it only around what you
measure.

    with KernelProgramStats() as stats:
        before = stats.snapshot({"lbtui_xdp", "lbtui_tc"})
        ...  # traffic
        per_run = stats.delta(before, stats.snapshot({"lbtui_xdp", "lbtui_tc"}))
        # {"lbtui_xdp": ProgramRuns(runs=..., run_time_ns=..., ns_per_run=...), ...}

``process_programs(pid)`` reads the same counters from ``/proc/<pid>/fdinfo`` of the programs one
process holds open (the benchmarked lbtui's), so programs of the same name loaded by anything else
on the machine are not counted.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import struct
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

_NR_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
_BPF_ENABLE_STATS = 32
_BPF_STATS_RUN_TIME = 0


@dataclass(frozen=True)
class ProgramRuns:
    runs: int
    run_time_ns: int

    @property
    def ns_per_run(self) -> float | None:
        return self.run_time_ns / self.runs if self.runs else None


class KernelProgramStats:
    """Run-time statistics enabled for as long as this object is open (a context manager)."""

    def __init__(self) -> None:
        self._fd = -1

    def __enter__(self) -> KernelProgramStats:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        attr = ctypes.create_string_buffer(struct.pack("=I", _BPF_STATS_RUN_TIME), 128)
        fd = libc.syscall(_NR_BPF, _BPF_ENABLE_STATS, attr, 128)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, "BPF_ENABLE_STATS: " + os.strerror(err))
        self._fd = int(fd)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @staticmethod
    def snapshot(names: Iterable[str]) -> dict[str, ProgramRuns]:
        """Counters of the loaded programs with these names (summed when several share a name)."""
        wanted = set(names)
        out = subprocess.run(
            ["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True
        )
        totals: dict[str, ProgramRuns] = {}
        for prog in json.loads(out.stdout):
            name = prog.get("name")
            if name in wanted:
                prev = totals.get(name, ProgramRuns(0, 0))
                totals[name] = ProgramRuns(
                    prev.runs + int(prog.get("run_cnt", 0)),
                    prev.run_time_ns + int(prog.get("run_time_ns", 0)),
                )
        return totals

    @staticmethod
    def delta(before: dict[str, ProgramRuns], after: dict[str, ProgramRuns]) -> dict[str, ProgramRuns]:
        zero = ProgramRuns(0, 0)
        return {
            name: ProgramRuns(
                a.runs - before.get(name, zero).runs, a.run_time_ns - before.get(name, zero).run_time_ns
            )
            for name, a in after.items()
        }


def program_names() -> dict[int, str]:
    """Every loaded program's id -> name (``bpftool prog show --json``)."""
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True)
    return {int(p["id"]): str(p.get("name", "")) for p in json.loads(out.stdout)}


def process_programs(pid: int, names: dict[int, str] | None = None) -> dict[str, ProgramRuns]:
    """Counters of the BPF programs process ``pid`` holds a file descriptor of, by program name
    (programs without a name or unknown to ``names`` by ``prog<id>``, several of one name summed);
    each program once, however many descriptors point at it. ``names`` defaults to ``program_names()``."""
    names = program_names() if names is None else names
    seen: dict[int, ProgramRuns] = {}
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{fd}") != "anon_inode:bpf-prog":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(re.findall(r"^(\w+):\s*(\S+)", f.read(), re.M))
        except OSError:  # closed meanwhile
            continue
        if "prog_id" in info:
            seen[int(info["prog_id"])] = ProgramRuns(
                int(info.get("run_cnt", 0)), int(info.get("run_time_ns", 0))
            )
    totals: dict[str, ProgramRuns] = {}
    for prog_id, runs in sorted(seen.items()):
        name = names.get(prog_id, "") or f"prog{prog_id}"
        prev = totals.get(name, ProgramRuns(0, 0))
        totals[name] = ProgramRuns(prev.runs + runs.runs, prev.run_time_ns + runs.run_time_ns)
    return totals
