# SPDX-License-Identifier: Apache-2.0
"""The oracle: from an input frame and the conntrack mirror alone, what lb.c must do with it.

- XDP: anything that is not a well-formed IPv4 TCP/UDP non-fragment to a configured VIP:port passes
  untouched; a new flow (TCP SYN without ACK, any UDP, any TCP for maglev) and every packet of a
  tracked flow is DNATed; a TCP non-SYN without an entry passes untouched. A DNATed frame differs
  from the input only in daddr, the IP checksum, dport and the L4 checksum; daddr:dport is the
  flow's backend (or, for a new flow, one of the backends pick.py allows).
- TC egress: a reply that matches a reverse entry is SNATed back to VIP:port (saddr, IP checksum,
  sport, L4 checksum), anything else passes untouched.

Every decision has one place. `plan_xdp` decides, without changing anything, what lbtui_xdp does with
a frame (which parser outcome, which tracked flow, which closed flow a SYN replaces, which backends a
new flow may get); `check_xdp` compares the program's verdict and output with the plan and applies it
to the mirror. `check_tc` does the same for lbtui_tc. Behaviour that mirrors lb.c but contradicts
docs/datapath.md is counted as a finding (FINDINGS), not a failure.

Where an extension goes: a new frame family (ICMP errors, IPv6) gets its parser in parse.py and its
own `_plan_*` branch in plan_xdp (and a `_tc_*` one in check_tc); TCP state rules (sequence cases)
live in conntrack.track_tcp; a new way to pick a backend in pick.py; a verdict the program may take
before conntrack (a fast path) is one more plan outcome.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tests.fuzz.packets.conntrack import (
    CT_F_CLOSED,
    CT_F_RST,
    DIR_FORWARD,
    DIR_REVERSE,
    ConntrackMirror,
    CtEntry,
    CtKey,
    RealEntry,
    flow_text,
    track_tcp,
)
from tests.fuzz.packets.frames import Flow
from tests.fuzz.packets.parse import FRAGMENT, MALFORMED, NOT_OURS, REFUSED, View, parse_tc, parse_xdp
from tests.fuzz.packets.pick import DROP_CONFLICT, pick_outcomes
from tests.fuzz.packets.rewrite import (
    TC_ACT_OK,
    XDP_DROP,
    XDP_PASS,
    check_refused,
    check_rewrite,
    check_untouched,
)
from tests.fuzz.packets.topology import (
    BACKEND_BY_ENDPOINT,
    MAGLEV,
    SERVICE_BY_KEY,
    SERVICES,
    WEIGHTED_RANDOM,
    Endpoint,
    FuzzService,
)
from tests.fuzz.packets.wire import TCP, u16

# decisions (stats names) besides the parser's outcomes
MIDSTREAM = "midstream"
DNAT = "dnat"
SNAT = "snat"
TC_MISS = "tc_miss"
DROPPED = "dropped"  # a new flow refused: every backend it could get already serves its client port
PICK_DROPPED = -1  # Verdict.pick of a weighted-random new flow the program dropped

COUNTER_OF = {
    NOT_OURS: "xdp_not_ours",
    MALFORMED: "xdp_malformed",
    FRAGMENT: "xdp_fragment",
    MIDSTREAM: "xdp_midstream",
    SNAT: "tc_snat",
    TC_MISS: "tc_miss",
}
CHECKED_COUNTERS = ("xdp_packets", *COUNTER_OF.values(), "xdp_ct_restored")
FINDING_REVERSE_CLASH = "reverse-entry clash"
FINDING_SHARED_AFTER_EVICTION = "backend tuple shared after an eviction"
FINDINGS = {
    FINDING_REVERSE_CLASH: (
        "a new flow overwrote the reverse conntrack entry of another live flow: same client "
        "address:port, same backend address:port, another VIP port or VIP"
    ),
    FINDING_SHARED_AFTER_EVICTION: (
        "a new flow got the backend address:port a live flow of the same client address:port (to "
        "another VIP port) already uses, because that flow's reverse entry had been evicted: the "
        "backend sees one 4-tuple for two connections"
    ),
}


@dataclass(frozen=True)
class Verdict:
    outcome: str
    problems: tuple[str, ...] = ()
    # a weighted-random new flow: the backend id the program chose (PICK_DROPPED: it dropped the
    # frame), recorded so that a replay can make the same choice (harness.Dataplane.force_pick)
    pick: int | None = None


@dataclass(frozen=True)
class XdpPlan:
    """What lbtui_xdp does with one frame, decided before it runs."""

    outcome: str  # REFUSED, an untouched outcome, or DNAT (tracked or new flow)
    view: View | None = None
    svc: FuzzService | None = None
    tracked: CtEntry | None = None  # DNAT of a tracked flow: its forward entry
    ends: CtEntry | None = None  # a new flow replacing a closed one on the same tuple: the old entry
    outcomes: frozenset[Endpoint | str] = frozenset()  # new flow: allowed backends, DROP_CONFLICT

    @property
    def random_pick(self) -> bool:
        """A new flow whose backend the program draws at random (the one choice a seed does not fix)."""
        return (
            self.outcome == DNAT
            and self.tracked is None
            and self.svc is not None
            and self.svc.algorithm == WEIGHTED_RANDOM
        )


class Oracle:
    """Predicts every frame's fate from the frame and a mirror of the conntrack map."""

    def __init__(self) -> None:
        self.ct = ConntrackMirror()
        self.counters: Counter[str] = Counter()
        self.flows: list[Flow] = []
        # behaviour that mirrors lb.c exactly but breaks docs/datapath.md: kind -> count, first examples
        self.findings: Counter[str] = Counter()
        self.finding_examples: dict[str, list[str]] = {}

    def _finding(self, kind: str, text: str) -> None:
        self.findings[kind] += 1
        examples = self.finding_examples.setdefault(kind, [])
        if len(examples) < 3:
            examples.append(text)

    def reset(self) -> None:
        """The real map was emptied: empty the mirror too (counters stay cumulative)."""
        self.ct.clear()
        self.flows.clear()

    def conntrack_problems(self, real_entries: list[RealEntry]) -> list[str]:
        return self.ct.problems(real_entries)

    # -- XDP -----------------------------------------------------------------------------------

    def plan_xdp(self, data: bytes) -> XdpPlan:
        view = parse_xdp(data)
        if isinstance(view, str):
            return XdpPlan(view)
        svc = SERVICE_BY_KEY.get((view.daddr, view.dport, view.proto))
        if svc is None:
            return XdpPlan(NOT_OURS, view)
        return self._plan_service(view, svc)

    def _plan_service(self, view: View, svc: FuzzService) -> XdpPlan:
        """IPv4 TCP or UDP to a service: a tracked flow, a midstream packet, or a new flow."""
        key: CtKey = (view.saddr, view.daddr, view.sport, view.dport, view.proto)
        is_tcp = view.proto == TCP
        is_syn = is_tcp and view.tcp_flags & 0x12 == 0x02
        fwd = self.ct.get(key)
        ends = None
        if fwd is not None and is_syn and fwd.flags & (CT_F_CLOSED | CT_F_RST):
            ends, fwd = fwd, None  # a SYN reusing a closed flow's port starts a new flow
        if fwd is not None:
            return XdpPlan(DNAT, view, svc, tracked=fwd)
        if is_tcp and not is_syn and svc.algorithm != MAGLEV:
            return XdpPlan(MIDSTREAM, view, svc)
        removed = self.ct.reverse_removed_with(ends) if ends is not None else None
        outcomes = pick_outcomes(svc, view, lambda ep: self.ct.reverse_taken(view, ep, ignoring=removed))
        return XdpPlan(DNAT, view, svc, ends=ends, outcomes=frozenset(outcomes))

    def check_xdp(self, data: bytes, verdict: int | None, out: bytes) -> Verdict:
        plan = self.plan_xdp(data)
        if plan.outcome == REFUSED:
            return Verdict(REFUSED, tuple(check_refused(verdict)))
        self.counters["xdp_packets"] += 1
        if plan.outcome != DNAT:
            return self._untouched(plan.outcome, data, verdict, out, XDP_PASS)
        if plan.tracked is not None:
            return self._xdp_tracked(plan.tracked, plan, data, verdict, out)
        return self._xdp_new_flow(plan, data, verdict, out)

    def _xdp_tracked(
        self, fwd: CtEntry, plan: XdpPlan, data: bytes, verdict: int | None, out: bytes
    ) -> Verdict:
        assert plan.view is not None
        view = plan.view
        problems = check_rewrite(data, verdict, out, view, "dst", {fwd.backend()})
        fwd.packets += 1
        fwd.octets += view.ip_len
        fwd.last_frame = data
        if self.ct.restore_reverse(fwd):
            self.counters["xdp_ct_restored"] += 1
        if view.proto == TCP:
            track_tcp(fwd, view.tcp_flags, from_backend=False)
        return Verdict(DNAT, tuple(problems))

    def _xdp_new_flow(self, plan: XdpPlan, data: bytes, verdict: int | None, out: bytes) -> Verdict:
        assert plan.view is not None and plan.svc is not None
        view = plan.view
        if plan.ends is not None:
            self.ct.end_closed(plan.ends)
        pick = _kernel_pick(view, verdict, out, data) if plan.random_pick else None
        if verdict == XDP_DROP and DROP_CONFLICT in plan.outcomes:
            self.counters["drop_conflict"] += 1
            return Verdict(DROPPED, (), pick)
        candidates = {o for o in plan.outcomes if isinstance(o, tuple)}
        problems = check_rewrite(data, verdict, out, view, "dst", candidates)
        if not problems:
            self._new_flow(plan.svc, view, data, out)
        return Verdict(DNAT, tuple(problems), pick)

    def _new_flow(self, svc: FuzzService, view: View, data: bytes, out: bytes) -> None:
        backend = (bytes(out[view.l3 + 16 : view.l3 + 20]), u16(out, view.l4 + 2))
        entry = CtEntry(
            client_ip=view.saddr,
            vip=view.daddr,
            backend_ip=backend[0],
            client_port=view.sport,
            vip_port=view.dport,
            backend_port=backend[1],
            proto=view.proto,
            dir=DIR_FORWARD,
            backend_id=BACKEND_BY_ENDPOINT[backend],
            service_id=svc.service_id,
            packets=1,
            octets=view.ip_len,
            last_frame=data,
        )
        displaced = self.ct.create(entry)
        if displaced is not None:
            owner = self.ct.get(displaced.forward_key())
            if owner is not None and owner.reverse_key() == entry.reverse_key():
                self._finding(
                    FINDING_REVERSE_CLASH,
                    f"flow {flow_text(displaced)} lost its reverse entry to {flow_text(entry)}: "
                    f"replies of the first are now SNATed to port {entry.vip_port}",
                )
        for other in self._same_client_port(entry):
            if other.backend() == entry.backend() and not other.flags & (CT_F_CLOSED | CT_F_RST):
                self._finding(
                    FINDING_SHARED_AFTER_EVICTION,
                    f"{flow_text(entry)} shares its backend tuple with live {flow_text(other)}",
                )
        self.flows.append(Flow(view.saddr, view.sport, view.dport, view.proto, backend[0], backend[1]))

    def _same_client_port(self, entry: CtEntry) -> list[CtEntry]:
        """Forward entries of the same client address:port and protocol to the VIP's other ports."""
        keys = [
            (entry.client_ip, entry.vip, entry.client_port, svc.port, svc.proto)
            for svc in SERVICES
            if svc.proto == entry.proto and svc.port != entry.vip_port
        ]
        return [e for e in map(self.ct.get, keys) if e is not None and e.dir == DIR_FORWARD]

    # -- TC ------------------------------------------------------------------------------------

    def check_tc(self, data: bytes, verdict: int | None, out: bytes) -> Verdict:
        view = parse_tc(data)
        if view == REFUSED:
            return Verdict(REFUSED, tuple(check_refused(verdict)))
        if isinstance(view, str):
            return self._untouched(view, data, verdict, out, TC_ACT_OK)
        rev = self.ct.get((view.saddr, view.daddr, view.sport, view.dport, view.proto))
        if rev is None or rev.dir != DIR_REVERSE:
            return self._untouched(TC_MISS, data, verdict, out, TC_ACT_OK)
        return self._tc_reply(rev, view, data, verdict, out)

    def _tc_reply(self, rev: CtEntry, view: View, data: bytes, verdict: int | None, out: bytes) -> Verdict:
        problems = check_rewrite(data, verdict, out, view, "src", {(rev.vip, rev.vip_port)})
        self.counters["tc_snat"] += 1
        rev.packets += 1
        rev.octets += view.ip_len
        rev.last_frame = data
        if view.proto == TCP and view.tcp_flags & 0x07:
            fwd = self.ct.get(rev.forward_key())
            # only the reverse entry's own flow (not a later flow on the same client port)
            if fwd is not None and fwd.backend() == rev.backend():
                track_tcp(fwd, view.tcp_flags, from_backend=True)
                fwd.last_frame = data
        return Verdict(SNAT, tuple(problems))

    # -- shared --------------------------------------------------------------------------------

    def _untouched(self, outcome: str, data: bytes, verdict: int | None, out: bytes, ok: int) -> Verdict:
        if outcome in COUNTER_OF:
            self.counters[COUNTER_OF[outcome]] += 1
        return Verdict(outcome, tuple(check_untouched(outcome, data, verdict, out, ok)))


def _kernel_pick(view: View, verdict: int | None, out: bytes, data: bytes) -> int | None:
    """The backend id the program gave a new flow (PICK_DROPPED for a drop; None: not a backend)."""
    if verdict == XDP_DROP:
        return PICK_DROPPED
    if verdict != XDP_PASS or len(out) != len(data):
        return None
    return BACKEND_BY_ENDPOINT.get((bytes(out[view.l3 + 16 : view.l3 + 20]), u16(out, view.l4 + 2)))
