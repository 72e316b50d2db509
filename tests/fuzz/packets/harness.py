# SPDX-License-Identifier: Apache-2.0
"""The harness: frames through a private copy of lb.c with BPF_PROG_TEST_RUN, checked by the oracle.

What does not follow from the seed is controlled here, so that a run only depends on it and on the
kernel's weighted-random draws (which the oracle models as the set of allowed backends):
- the process runs pinned to one CPU (per-CPU counters and LRU free lists stay on that CPU);
- conntrack is big enough never to evict on its own between two syncs (check_sizes): evictions
  are explicit (`evict_rate`), made by the harness on both the transient table and the mirror (the
  established table never evicts);
- every `sync_every` frames both tables, the global counters, the drop reasons of every service and
  the flow counters of every backend are compared with the mirror, then the tables (and the
  fragments table) are emptied, so a failure depends only on the frames since the last sync. Those frames
  (with the kernel's draws and the harness's evictions) are written to a case file on a failure;
  `replay_events` runs such a file again, making the same draws (Dataplane.force_pick).
- with the fast path compiled in (`fast_path=True`), XDP frames run from inside a namespace of the
  harness's own whose routes and neighbours stay fixed (fastpath.FastPathLab), arriving on the lab
  interface each frame names (Frame.ingress).

Needs root (it loads BPF programs).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lbtui.dataplane.port import ESTABLISHED6, TRANSIENT6, ServiceEntry
from lbtui.dataplane.records import flow_entries
from tests.fuzz.packets import fastpath
from tests.fuzz.packets.cases import Case, Event, EvictEvent, FrameEvent, failure_kind, save_case
from tests.fuzz.packets.conntrack import ESTABLISHED, TRANSIENT, CtKey, RealEntry
from tests.fuzz.packets.frames import IPV6_FAMILIES, Flow, Frame, FrameGenerator
from tests.fuzz.packets.oracle import BACKEND_COUNTERS, CHECKED_COUNTERS, PICK_DROPPED, Oracle, Verdict
from tests.fuzz.packets.pick import DROP_CONFLICT
from tests.fuzz.packets.rewrite import TC_ACT_OK, TC_ACT_UNSPEC
from tests.fuzz.packets.topology import (
    BACKEND_BY_ENDPOINT,
    BACKENDS,
    CONNTRACK_ENTRIES,
    GROUP_TABLES,
    MAX_GROUPS,
    ROUTES,
    SERVICES,
    TABLE_SIZE,
    group_of,
)
from tests.fuzz.packets.wire import TCP, UDP, addr, hexdump
from tests.support.maps import evict, write_table

CT_TABLE_NAMES = {ESTABLISHED: "lb_ct_established", TRANSIENT: "lb_ct_transient"}
# the IPv6 twins: the mirror keeps both families in one pair of tables (their keys never collide:
# 4-byte and 16-byte addresses)
CT6_TABLE_NAMES = {ESTABLISHED: "lb_ct6_established", TRANSIENT: "lb_ct6_transient"}

log = logging.getLogger(__name__)

LRU_LOCAL_FREE_TARGET = 128  # kernel/bpf/bpf_lru_list.c LOCAL_FREE_TARGET: free nodes a CPU keeps aside
EMPTY_SLOT = 0xFFFFFFFF  # lb.h LB_EMPTY_SLOT


def check_sizes(sync_every: int) -> None:
    """The LRU map evicts only when a CPU finds fewer free nodes than it keeps aside: with at most
    two entries per frame between syncs, this many frames never get there."""
    cpus = os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        last = open("/sys/devices/system/cpu/possible").read().strip().split("-")[-1]
        cpus = int(last) + 1
    most = 2 * (sync_every + 1) + (cpus + 1) * LRU_LOCAL_FREE_TARGET
    if most > CONNTRACK_ENTRIES:
        raise ValueError(f"sync_every {sync_every} is too large: conntrack could evict on its own")


@contextlib.contextmanager
def pinned_to_one_cpu(cpu: int | None = None) -> Iterator[int]:
    """Run on one CPU (the given index into the allowed ones, else the first); restore afterwards."""
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[(cpu or 0) % len(allowed)]
    os.sched_setaffinity(0, {chosen})
    try:
        yield chosen
    finally:
        os.sched_setaffinity(0, allowed)


# ---- the data path under test ---------------------------------------------------------------------


class Dataplane:
    """A private copy of lb.c (no attach, no traffic) filled with the fuzz topology; `fast_path`: built
    with LB_FAST_PATH=1, with its lab namespace (fastpath.FastPathLab)."""

    def __init__(self, fast_path: bool = False) -> None:
        from lbtui.dataplane.loader import DataplaneSpec, Loaded
        from lbtui.dataplane.maps import Maps

        self.loaded = Loaded(
            DataplaneSpec(
                table_size=TABLE_SIZE,
                conntrack_entries=CONNTRACK_ENTRIES,
                transient_entries=CONNTRACK_ENTRIES,
                max_groups=MAX_GROUPS,
                max_backends=16,
                fast_path=fast_path,
            )
        )
        self.lab: fastpath.FastPathLab | None = None
        if fast_path:
            try:
                self.lab = fastpath.FastPathLab()
            except BaseException:
                self.loaded.close()
                raise
        self.maps = Maps(self.loaded)
        if self.lab is not None:
            self.maps.set_fast_path_interfaces(self.lab.managed_macs())
        for bid, (ip, port) in BACKENDS.items():
            self.maps.set_backend(bid, ip, port, active=True)
        for svc in SERVICES:
            events = svc.service_id in (0, 4)
            proto = "tcp" if svc.proto == TCP else "udp"
            entry = ServiceEntry(
                svc.vip_text, svc.port, proto, svc.service_id, svc.group, svc.algorithm, events, events
            )
            self.maps.set_service(entry)
        for group, table in GROUP_TABLES.items():
            self.write_table(group, table)
        for service_id, cidr, group in ROUTES:
            self.maps.set_route(service_id, cidr, group)
        self._fds = {
            "xdp": self.loaded.xdp_fn.fd,
            "tc": self.loaded.tc_fn.fd,
            "reply": self.loaded.tc_reply_fn.fd,  # the fast path's TC ingress program for replies
        }

    def close(self) -> None:
        self.loaded.close()
        if self.lab is not None:
            self.lab.close()

    @property
    def fast_path_rules(self) -> fastpath.Rules | None:
        """What the fast path does in the lab (None: not compiled in)."""
        return None if self.lab is None else self.lab.rules

    def run(self, hook: str, frame: bytes, ingress: str = "", mark: int = 0) -> tuple[int | None, bytes]:
        """(verdict, output frame); verdict None when the kernel refuses the frame (EINVAL). With the
        fast path an XDP frame arrives on the lab interface `ingress` (default fastpath.INGRESS), a
        reply ("reply": lbtui_tc_reply) on fastpath.REPLY_INGRESS; `mark`: lbtui_tc's skb->mark."""
        verdict, out, _ = self._run(hook, frame, ingress, mark)
        return verdict, out

    def run_reply(self, frame: bytes) -> tuple[int | None, bytes, int]:
        """lbtui_tc_reply on a frame arriving on the lab's backend side: (verdict, output, its mark)."""
        return self._run("reply", frame, "", 0)

    def _run(self, hook: str, frame: bytes, ingress: str, mark: int) -> tuple[int | None, bytes, int]:
        from lbtui.dataplane.progrun import run_program, skb_context

        try:
            if self.lab is not None and hook != "tc":
                with self.lab.inside():
                    if hook == "xdp":
                        ifindex = self.lab.ifindex[ingress or fastpath.INGRESS]
                        result = run_program(self._fds[hook], frame, ingress_ifindex=ifindex)
                    else:
                        ctx = skb_context(self.lab.ifindex[fastpath.REPLY_INGRESS])
                        result = run_program(self._fds[hook], frame, ctx=ctx)
            else:
                ctx = skb_context(0, mark=mark) if mark else None
                result = run_program(self._fds[hook], frame, ctx=ctx)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return None, b"", 0
            raise
        skb_mark = int.from_bytes(result.ctx[8:12], "little") if len(result.ctx) >= 12 else 0
        return result.retval, result.data, skb_mark

    def global_counters(self) -> dict[str, int]:
        return self.maps.global_counters()

    def drops(self) -> dict[tuple[int, str], int]:
        """(service id, drop reason) -> count, summed over CPUs."""
        return {
            (svc.service_id, reason): n
            for svc in SERVICES
            for reason, n in self.maps.service_counters(svc.service_id)[1].items()
        }

    def backend_counters(self) -> dict[tuple[int, str], int]:
        """(backend id, lb_backend_stats field) -> count, summed over CPUs."""
        table = self.loaded.table("lb_backend_stats")
        out: dict[tuple[int, str], int] = {}
        for bid in BACKENDS:
            for cpu in table.getvalue(table.Key(bid)):
                for name in BACKEND_COUNTERS:
                    out[(bid, name)] = out.get((bid, name), 0) + getattr(cpu, name)
        return out

    @contextlib.contextmanager
    def force_pick(self, group: int, backend_id: int) -> Iterator[None]:
        """Make the next new flow of `group` get `backend_id` (PICK_DROPPED: be dropped) wherever
        bpf_get_prandom_u32 starts the walk: every slot says so (none for a drop) until the block ends."""
        fill = EMPTY_SLOT if backend_id == PICK_DROPPED else backend_id
        self.write_table(group, [fill] * TABLE_SIZE)
        try:
            yield
        finally:
            self.write_table(group, GROUP_TABLES[group])

    # -- the only calls into lbtui.dataplane.maps that the engine split may change: keep them here

    def write_table(self, group: int, backend_ids: Sequence[int]) -> None:
        write_table(self.maps, group, backend_ids)

    def conntrack(self) -> list[RealEntry]:
        """Every entry of both families' tables, named as the mirror names them."""
        names = (
            (ESTABLISHED, ESTABLISHED),
            (TRANSIENT, TRANSIENT),
            (ESTABLISHED, ESTABLISHED6),
            (TRANSIENT, TRANSIENT6),
        )
        out = []
        for table, name in names:
            for keys, values in self.maps.conntrack_chunks(name):
                for e, v in zip(flow_entries(keys, values), values, strict=True):
                    seq = (
                        int(v["seq_first"]),
                        int(v["seq_next"]),
                        int(v["window"]),
                        int(v["wscale"]),
                        int(v["win_shift"]),
                    )
                    key = (
                        addr(e.key.saddr),
                        addr(e.key.daddr),
                        e.key.sport,
                        e.key.dport,
                        _PROTO[e.key.protocol],
                    )
                    out.append(
                        RealEntry(
                            table=table,
                            key=key,
                            dir=e.direction,
                            client=(addr(e.client[0]), e.client[1]),
                            vip=(addr(e.vip[0]), e.vip[1]),
                            backend=(addr(e.backend[0]), e.backend[1]),
                            backend_id=e.backend_id,
                            service_id=e.service_id,
                            flags=e.flags,
                            packets=e.packets,
                            octets=e.bytes,
                            seq=seq,
                        )
                    )
        return out

    def delete(self, keys: Iterable[CtKey], table: str = TRANSIENT) -> None:
        """Delete single entries by key, as an LRU eviction does."""
        keys = list(keys)
        wanted = {k for k in keys if len(k[0]) == 4}
        for key in keys:
            if len(key[0]) == 16:
                self._delete6(key, table)
        if not wanted:
            return

        def chosen(raw: np.ndarray, _values: np.ndarray) -> np.ndarray:
            return np.fromiter(
                (
                    (
                        int(r["saddr"]).to_bytes(4, "little"),
                        int(r["daddr"]).to_bytes(4, "little"),
                        socket.ntohs(int(r["sport"])),
                        socket.ntohs(int(r["dport"])),
                        int(r["proto"]),
                    )
                    in wanted
                    for r in raw
                ),
                dtype=bool,
                count=len(raw),
            )

        evict(self.loaded, chosen, tables=(CT_TABLE_NAMES[table],))

    def _delete6(self, key: CtKey, table: str) -> None:
        """One IPv6 entry by key (lb_ct6_key: two addresses, the ports in network order, the protocol)."""
        saddr, daddr, sport, dport, proto = key
        raw = saddr + daddr + sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes((proto, 0, 0, 0))
        t = self.loaded.table(CT6_TABLE_NAMES[table])
        with contextlib.suppress(KeyError):
            del t[t.Key.from_buffer_copy(raw)]

    def empty(self) -> None:
        """Every conntrack entry of both families' tables, and every remembered fragment, gone."""
        evict(self.loaded, lambda raw, _v: np.ones(len(raw), dtype=bool))
        for name in CT6_TABLE_NAMES.values():
            t = self.loaded.table(name)
            for k in list(t.keys()):
                with contextlib.suppress(KeyError):
                    del t[k]
        for name in ("lb_frags", "lb_frags6"):
            frags = self.loaded.table(name)
            for k in list(frags.keys()):
                with contextlib.suppress(KeyError):
                    del frags[k]


_PROTO = {"tcp": TCP, "udp": UDP}


# ---- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    family: str
    hook: str
    problems: tuple[str, ...]
    frame_hex: str
    output_hex: str
    case: str = ""  # the case file with the frames that led here

    def __str__(self) -> str:
        lines = [f"[{self.hook}] {self.family}:", *(f"  {p}" for p in self.problems)]
        if self.frame_hex:
            lines += ["  input:", *("    " + line for line in self.frame_hex.splitlines())]
        if self.output_hex:
            lines += ["  output:", *("    " + line for line in self.output_hex.splitlines())]
        if self.case:
            lines.append(f"  case: {self.case}")
        return "\n".join(lines)


@dataclass
class FuzzStats:
    frames: int = 0
    syncs: int = 0
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (family, outcome) -> count
    failures: list[Failure] = field(default_factory=list)
    failure_count: int = 0
    findings: Counter[str] = field(default_factory=Counter)
    finding_examples: dict[str, list[str]] = field(default_factory=dict)
    evictions: int = 0
    forced_picks: int = 0
    fast_path: Counter[str] = field(default_factory=Counter)  # fast_path_* decisions the oracle made

    def merge(self, other: FuzzStats, keep: int = 50) -> None:
        self.frames += other.frames
        self.syncs += other.syncs
        self.outcomes.update(other.outcomes)
        self.failure_count += other.failure_count
        self.failures.extend(other.failures[: max(0, keep - len(self.failures))])
        self.findings.update(other.findings)
        for kind, examples in other.finding_examples.items():
            mine = self.finding_examples.setdefault(kind, [])
            mine.extend(examples[: max(0, 3 - len(mine))])
        self.evictions += other.evictions
        self.forced_picks += other.forced_picks
        self.fast_path.update(other.fast_path)


# ---- the fuzzer -----------------------------------------------------------------------------------


class PacketFuzzer:
    """Generator + oracle against one Dataplane; records each segment for a replay."""

    def __init__(
        self,
        dataplane: Dataplane,
        seed: int,
        *,
        sync_every: int = 1000,
        evict_rate: float = 0.005,
        keep_failures: int = 20,
        case_dir: str | Path | None = None,
        scapy_pool: int = 48,
        families: str = "all",
    ):
        check_sizes(sync_every)
        self.dp = dataplane
        self.seed = seed
        self.sync_every = sync_every
        self.evict_rate = evict_rate
        self.keep_failures = keep_failures
        self.case_dir = Path(case_dir) if case_dir else None
        self.families = families
        fast_path = dataplane.fast_path_rules is not None
        self.generator = FrameGenerator(seed, scapy_pool=scapy_pool, families=families, fast_path=fast_path)
        self.oracle = Oracle(dataplane.fast_path_rules)
        self.generator.seq_hint = self.oracle.seq_hint
        self.stats = FuzzStats()
        self._baseline: dict[str, int] = {}
        self._segment: list[Event] = []  # what ran since conntrack was last emptied
        self._segment_start = 0  # index of its first frame in this run
        self._frames_planned = 0
        self.first_case: Case | None = None  # the case of the first failure
        self._resync()

    # -- driving -------------------------------------------------------------------------------

    def run(self, frames: int) -> FuzzStats:
        """`frames` generated frames, with a sync every `sync_every` and one at the end."""
        self._frames_planned += frames
        rng = self.generator.rng
        for i in range(frames):
            if self.oracle.flows and rng.random() < self.evict_rate:
                flow = rng.choice(self.oracle.flows[-64:])
                self.evict(flow_key(flow, reverse=rng.random() < 0.7))
            self.check_frame(self.generator.next(self.oracle.flows))
            if (i + 1) % self.sync_every == 0:
                self.sync()
        self.sync()
        return self.finish()

    def replay_events(self, events: Sequence[Event], *, stop_at_failure: bool = False) -> FuzzStats:
        """Recorded events from an empty conntrack, making the recorded weighted-random draws, then a sync."""
        self._resync()
        for event in events:
            if isinstance(event, EvictEvent):
                self.evict(event.key)
            else:
                self.check_frame(
                    Frame(event.family, event.hook, event.data, event.ingress),
                    pick=event.pick,
                    failed=event.failed,
                )
            if stop_at_failure and self.stats.failure_count:
                return self.finish()
        self.sync()
        return self.finish()

    def finish(self) -> FuzzStats:
        self.stats.findings = Counter(self.oracle.findings)
        self.stats.finding_examples = {k: list(v) for k, v in self.oracle.finding_examples.items()}
        self.stats.fast_path = Counter(self.oracle.fast_path_seen)
        return self.stats

    # -- one step ------------------------------------------------------------------------------

    def check_frame(self, frame: Frame, *, pick: int | None = None, failed: bool = False) -> Verdict:
        """Run one frame and check it. `pick`: a recorded weighted-random draw to make again."""
        forced = self._forced_pick(frame, pick, failed)
        mark = 0
        if frame.hook == "tc" and self.dp.lab is not None:
            verdict, out, mark = self.dp.run_reply(frame.data)  # first the reply program
        elif forced is None:
            verdict, out = self.dp.run(frame.hook, frame.data, frame.ingress)
        else:
            self.stats.forced_picks += 1
            self.oracle.forced_drop = forced[1] == PICK_DROPPED  # an empty table: counted no_backend
            with self.dp.force_pick(*forced):
                verdict, out = self.dp.run(frame.hook, frame.data, frame.ingress)
        if frame.hook == "xdp":
            result = self.oracle.check_xdp(frame.data, verdict, out, frame.ingress or fastpath.INGRESS)
        elif self.dp.lab is None:
            result = self.oracle.check_tc(frame.data, verdict, out)
        else:
            result = self.oracle.check_reply(frame.data, verdict, out, *self._tc_after(verdict, out, mark))
        self.oracle.forced_drop = False
        self._segment.append(
            FrameEvent(
                frame.hook, frame.family, frame.data, result.pick, bool(result.problems), frame.ingress
            )
        )
        self.stats.frames += 1
        self.stats.outcomes[(frame.family, result.outcome)] += 1
        if result.problems:
            self._fail(frame.family, frame.hook, result.problems, hexdump(frame.data), hexdump(out))
        return result

    def _tc_after(self, reply_verdict: int | None, reply_out: bytes, mark: int) -> tuple[int | None, bytes]:
        """lbtui_tc on what the reply program let through or redirected, with the mark it left (TC
        egress on the client's side); (None, b"") after a drop."""
        if reply_verdict not in (TC_ACT_OK, TC_ACT_UNSPEC, fastpath.TC_ACT_REDIRECT):
            return None, b""
        return self.dp.run("tc", reply_out, mark=mark)

    def _forced_pick(self, frame: Frame, pick: int | None, failed: bool) -> tuple[int, int] | None:
        """(group, backend id) to force for a replayed frame that starts a weighted-random flow now.

        The recorded draw is made again when the oracle allows it in the state the replay reached.
        A shortened case (replay.shrink) can reach other states; there a draw the oracle forbids
        would be a failure of the harness's making, so an allowed one is forced instead (the highest
        backend id), except on the frame the recording failed on, whose draw may be the failure.
        """
        if pick is None or frame.hook != "xdp":
            return None
        plan = self.oracle.plan_xdp(frame.data)
        if not plan.random_pick or plan.svc is None or plan.view is None:
            return None
        allowed = {BACKEND_BY_ENDPOINT[o] for o in plan.outcomes if isinstance(o, tuple)}
        if DROP_CONFLICT in plan.outcomes:
            allowed.add(PICK_DROPPED)
        if pick not in allowed and not failed:
            pick = max(allowed)  # a backend if there is one (PICK_DROPPED is -1)
        return group_of(plan.svc, plan.view.saddr), pick

    def evict(self, key: CtKey) -> None:
        """Delete one transient entry from the map and the mirror, as an LRU eviction would (the
        established table never evicts)."""
        if key not in self.oracle.ct.tables[TRANSIENT]:
            return
        self.dp.delete([key])
        self.oracle.ct.evict(key)
        self._segment.append(EvictEvent(key))
        self.stats.evictions += 1

    def sync(self) -> None:
        """Compare conntrack and counters with the mirror, then empty conntrack on both sides."""
        self.stats.syncs += 1
        problems = self.oracle.conntrack_problems(self.dp.conntrack())
        counters = self.dp.global_counters()
        for name in CHECKED_COUNTERS:
            got = counters[name] - self._baseline.get(name, 0)
            if got != self.oracle.counters[name]:
                problems.append(
                    f"global counter {name}: expected {self.oracle.counters[name]}, map has {got}"
                )
        for (sid, reason), n in self.dp.drops().items():
            got = n - self._drops_baseline.get((sid, reason), 0)
            want = self.oracle.drops[(sid, reason)]
            if got != want:
                problems.append(f"service {sid} drops {reason}: expected {want}, map has {got}")
        for (bid, name), n in self.dp.backend_counters().items():
            got = n - self._backend_baseline.get((bid, name), 0)
            want = self.oracle.backend_counters()[(bid, name)]
            if got != want:
                problems.append(f"backend {bid} {name}: expected {want}, map has {got}")
        if problems:
            self._fail("conntrack-sync", "-", tuple(problems[:10]), "", "")
            return
        self._empty_conntrack()

    def _empty_conntrack(self) -> None:
        self.dp.empty()
        self.oracle.reset()
        self._segment = []
        self._segment_start = self.stats.frames
        self._backend_baseline = self.dp.backend_counters()

    def _resync(self) -> None:
        """Start over from empty tables and zeroed counters (after a failure, or for a replay)."""
        self._empty_conntrack()
        self.oracle.counters.clear()
        self.oracle.drops.clear()
        self._baseline = self.dp.global_counters()
        self._drops_baseline = self.dp.drops()

    def _fail(
        self, family: str, hook: str, problems: tuple[str, ...], frame_hex: str, output_hex: str
    ) -> None:
        self.stats.failure_count += 1
        failure = Failure(family, hook, problems, frame_hex, output_hex)
        case = self.case(failure)
        if self.first_case is None:
            self.first_case = case
        if self.case_dir is not None:
            path = save_case(case, self.case_dir / f"seed{self.seed}-frame{self.stats.frames}.json")
            failure = Failure(family, hook, problems, frame_hex, output_hex, str(path))
        if len(self.stats.failures) < self.keep_failures:
            self.stats.failures.append(failure)
        log.error("fuzz failure: %s", failure)
        self._resync()

    def case(self, failure: Failure) -> Case:
        """The current segment as a case that reproduces `failure`."""
        origin = {
            "seed": self.seed,
            "sync_every": self.sync_every,
            "evict_rate": self.evict_rate,
            "families": self.families,
            "fast_path": self.dp.lab is not None,
            "frames_planned": self._frames_planned,
            "segment_frames": [self._segment_start, self.stats.frames],
        }
        return Case(tuple(self._segment), origin, str(failure), failure_kind(failure.problems[0]))


def flow_key(flow: Flow, *, reverse: bool) -> CtKey:
    """The conntrack key of one direction of a flow."""
    if reverse:
        return (flow.backend_ip, flow.client_ip, flow.backend_port, flow.client_port, flow.proto)
    return (flow.client_ip, flow.vip, flow.client_port, flow.vip_port, flow.proto)


def fuzz_packets(
    seed: int,
    frames: int,
    *,
    sync_every: int = 1000,
    evict_rate: float = 0.005,
    case_dir: str | Path | None = None,
    cpu: int | None = None,
    families: str = "all",
    fast_path: bool = False,
) -> FuzzStats:
    """Load a private copy of the programs, run `frames` frames of `seed` on one CPU, unload. Root.
    `families`: "all", "ipv4" or "ipv6" (frames.FAMILY_SETS); `fast_path`: LB_FAST_PATH=1 and its lab."""
    with pinned_to_one_cpu(cpu):
        dataplane = Dataplane(fast_path=fast_path)
        try:
            fuzzer = PacketFuzzer(
                dataplane,
                seed,
                sync_every=sync_every,
                evict_rate=evict_rate,
                case_dir=case_dir,
                families=families,
            )
            return fuzzer.run(frames)
        finally:
            dataplane.close()


def ipv6_frames(stats: FuzzStats) -> int:
    """How many of the frames were IPv6 ones (frames6.py's families)."""
    return sum(n for (family, _), n in stats.outcomes.items() if family in IPV6_FAMILIES)


def summary_table(stats: FuzzStats) -> str:
    """Counts per family and outcome, as text."""
    outcomes = sorted({o for _, o in stats.outcomes})
    families = sorted({f for f, _ in stats.outcomes})
    width = max([len(f) for f in families] + [8])
    lines = [f"{'family':<{width}} " + " ".join(f"{o:>10}" for o in outcomes) + f" {'total':>9}"]
    for fam in families:
        row = [stats.outcomes.get((fam, o), 0) for o in outcomes]
        lines.append(f"{fam:<{width}} " + " ".join(f"{c:>10}" for c in row) + f" {sum(row):>9}")
    totals = [sum(c for (_, o), c in stats.outcomes.items() if o == out) for out in outcomes]
    lines.append(f"{'total':<{width}} " + " ".join(f"{c:>10}" for c in totals) + f" {sum(totals):>9}")
    return "\n".join(lines)
