# SPDX-License-Identifier: Apache-2.0
"""The oracle: from an input frame and the conntrack mirror alone, what lb.c must do with it.

- XDP: anything that is not a well-formed IPv4 or IPv6 TCP/UDP non-fragment to a configured VIP:port
  passes untouched (IPv6: neighbour discovery and other ICMPv6 too, and packets whose upper-layer
  header lies beyond the extension headers lb_ipv6.h walks), except an ICMP or ICMPv6 error about a
  tracked flow's reply, which is translated toward the flow's backend (icmp.py, icmp6.py); a SYN
  with RST or FIN, and a state-changing segment with a bad checksum, are dropped; a RST outside its
  flow's window is dropped; a new flow (TCP SYN without ACK, any UDP, any TCP for maglev) and every
  other packet of a tracked flow is DNATed; a TCP non-SYN without an entry passes untouched. A
  DNATed frame differs from the input only in daddr, the IP checksum (none in IPv6), dport and the
  L4 checksum; daddr:dport is the flow's backend (or, for a new flow, one of the backends pick.py
  allows).
- TC egress (oracle_tc.py): a reply that matches a reverse entry is SNATed back to VIP:port (the
  first fragment of one too), later fragments of a SNATed reply get the VIP as source (lb_frags,
  lb_frags6), ICMP and ICMPv6 errors about a flow leave with the VIP, a backend's RST outside the
  window is dropped; anything else passes untouched.

Every decision has one place. `plan_xdp` decides, without changing anything, what lbtui_xdp does with
a frame; `check_xdp` compares the program's verdict and output with the plan and applies it to the
mirror. `check_tc` (oracle_tc.TcRules) does the same for lbtui_tc. Behaviour that mirrors lb.c but
contradicts docs/datapath.md is counted as a finding (FINDINGS), not a failure.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tests.fuzz.packets import fastpath, fastpath6, tcp
from tests.fuzz.packets.conntrack import (
    DIR_FORWARD,
    DIR_REVERSE,
    ESTABLISHED,
    TRANSIENT,
    ConntrackMirror,
    CtEntry,
    CtKey,
    RealEntry,
    flow_text,
)
from tests.fuzz.packets.frames import Flow
from tests.fuzz.packets.icmp import Quote, check_icmp_rewrite, quote_of
from tests.fuzz.packets.icmp6 import check_icmp6_rewrite, quote6_of
from tests.fuzz.packets.oracle_tc import TcRules
from tests.fuzz.packets.parse import (
    FRAGMENT,
    MALFORMED,
    NOT_OURS,
    REFUSED,
    V6_NO_L4,
    IcmpView,
    View,
    parse_tc,
    parse_xdp,
)
from tests.fuzz.packets.pick import DROP_CONFLICT, pick_outcomes
from tests.fuzz.packets.rewrite import (
    TC_ACT_OK,
    TC_ACT_SHOT,
    TC_ACT_UNSPEC,
    XDP_DROP,
    XDP_PASS,
    check_refused,
    check_rewrite,
    check_untouched,
    l4_csum_ok,
)
from tests.fuzz.packets.topology import (
    BACKEND_BY_ENDPOINT,
    MAGLEV,
    SERVICE_BY_KEY,
    SERVICES,
    WEIGHTED_RANDOM,
    FuzzService,
)
from tests.fuzz.packets.wire import ETH_IPV6, TCP, u16

# decisions (stats names) besides the parser's outcomes
MIDSTREAM = "midstream"
DNAT = "dnat"
SNAT = "snat"
REDIRECTED = "redirected"  # DNATed and sent on by the fast path (XDP_REDIRECT)
REPLY_REDIRECTED = "reply_redirected"  # SNATed and sent on by the fast path's reply program
REPLY_PASSED = "reply_passed"  # the reply program changed or kept a frame it must pass untouched
TC_MISS = "tc_miss"
ICMP_TRANSLATED = "icmp"
FRAGMENT_SNAT = "fragment_snat"
DROPPED = "dropped"  # a new flow refused: every backend it could get already serves its client port
DROPPED_INVALID = "invalid"  # dropped by a validation rule (counted by reason)
PICK_DROPPED = -1  # Verdict.pick of a weighted-random new flow the program dropped

COUNTER_OF = {
    NOT_OURS: "xdp_not_ours",
    MALFORMED: "xdp_malformed",
    FRAGMENT: "xdp_fragment",
    MIDSTREAM: "xdp_midstream",
    SNAT: "tc_snat",
    TC_MISS: "tc_miss",
    V6_NO_L4: "xdp_v6_no_l4",
}
CHECKED_COUNTERS = (
    "xdp_packets",
    *COUNTER_OF.values(),
    "xdp_ct_restored",
    "tc_ct_restored",
    "xdp_icmp_translated",
    "tc_icmp_translated",
    "tc_fragments_snat",
    "xdp_repick",
    "rst_challenged",
    *fastpath.FAST_PATH_COUNTERS,
)
BACKEND_COUNTERS = ("new_flows", "handshakes", "conn_failures", "closes", "established", "ended")
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

    outcome: str  # REFUSED, an untouched outcome, DROPPED_INVALID, ICMP_TRANSLATED or DNAT
    view: View | None = None
    svc: FuzzService | None = None
    seg: tcp.Segment | None = None
    drop_reason: str = ""
    tracked: CtEntry | None = None  # DNAT of a tracked flow: its forward entry
    table: str = TRANSIENT  # where the tracked (or ended) flow lives
    ends: CtEntry | None = None  # a new flow replacing a closed one on the same tuple: the old entry
    outcomes: frozenset[tuple[bytes, int] | str] = frozenset()  # new flow: allowed backends, DROP_CONFLICT
    icmp: IcmpView | None = None
    quote: Quote | None = None

    @property
    def random_pick(self) -> bool:
        """A new flow whose backend the program draws at random (the one choice a seed does not fix)."""
        return (
            self.outcome == DNAT
            and self.tracked is None
            and self.svc is not None
            and self.svc.algorithm == WEIGHTED_RANDOM
        )


class Oracle(TcRules):
    """Predicts every frame's fate from the frame and a mirror of the conntrack tables."""

    def __init__(self, fast_path: fastpath.Rules | None = None) -> None:
        self.fast_path = fast_path  # the fast path compiled in: its rules over the lab (fastpath.py)
        # fast_path_* decisions of the whole run (a reply's fallback: "reply " + the counter; IPv6
        # frames' decisions: "v6 " + those)
        self.fast_path_seen: Counter[str] = Counter()
        self._ingress = fastpath.INGRESS
        self._redirected = False
        self.ct = ConntrackMirror()
        self.counters: Counter[str] = Counter()
        self.drops: Counter[tuple[int, str]] = Counter()  # (service id, reason)
        self.frags: dict[tuple[bytes, bytes, int, int], bytes] = {}  # lb_frags
        self.forced_drop = False  # the harness replays a recorded drop with an empty table
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
        """The real maps were emptied: empty the mirror too (counters stay cumulative)."""
        self.ct.clear()
        self.frags.clear()
        self.flows.clear()

    def conntrack_problems(self, real_entries: list[RealEntry]) -> list[str]:
        return self.ct.problems(real_entries)

    def backend_counters(self) -> Counter[tuple[int, str]]:
        return self.ct.backend_counts

    def seq_hint(self, flow: Flow, from_backend: bool) -> tuple[int | None, int | None]:
        """The next sequence number the mirror expects from each side of a flow (the sender's, then
        the other's), for the generator's TCP sequence cases."""
        fwd = self.ct.get((flow.client_ip, flow.vip, flow.client_port, flow.vip_port, flow.proto))
        rev = self.ct.get((flow.backend_ip, flow.client_ip, flow.backend_port, flow.client_port, flow.proto))
        sender, other = (rev, fwd) if from_backend else (fwd, rev)

        def nxt(e: CtEntry | None) -> int | None:
            return e.seq_next if e is not None and e.flags & tcp.CT_F_SEQ else None

        return nxt(sender), nxt(other)

    # -- XDP -----------------------------------------------------------------------------------

    def plan_xdp(self, data: bytes) -> XdpPlan:
        view = parse_xdp(data)
        if isinstance(view, IcmpView):
            return self._plan_icmp(data, view)
        if isinstance(view, str):
            return XdpPlan(view)
        svc = SERVICE_BY_KEY.get((view.daddr, view.dport, view.proto))
        if svc is None:
            return XdpPlan(NOT_OURS, view)
        return self._plan_service(data, view, svc)

    def _plan_icmp(self, data: bytes, icmp: IcmpView) -> XdpPlan:
        q = quote6_of(data, icmp) if icmp.v6 else quote_of(data, icmp)
        if q is None or q.saddr != outer_daddr(data, icmp):
            return XdpPlan(NOT_OURS)
        fwd = self.ct.get((q.daddr, q.saddr, q.dport, q.sport, q.proto))
        if fwd is None or fwd.dir != DIR_FORWARD:
            return XdpPlan(NOT_OURS)
        return XdpPlan(ICMP_TRANSLATED, tracked=fwd, icmp=icmp, quote=q)

    def _plan_service(self, data: bytes, view: View, svc: FuzzService) -> XdpPlan:
        """IPv4 TCP or UDP to a service: validation drops, a tracked flow, midstream, or a new flow."""
        is_tcp = view.proto == TCP
        seg = None
        if is_tcp:
            seg = tcp.segment_of(data, view.l4, view.ip_len - view.ihl_len - (data[view.l4 + 12] >> 4) * 4)
            if seg.flags & tcp.SYN and seg.flags & (tcp.RST | tcp.FIN):
                return XdpPlan(DROPPED_INVALID, view, svc, seg, drop_reason="tcp_flags")
            if seg.flags & (tcp.SYN | tcp.RST | tcp.FIN) and l4_csum_ok(data, view) == 0:
                return XdpPlan(DROPPED_INVALID, view, svc, seg, drop_reason="bad_checksum")
        key: CtKey = (view.saddr, view.daddr, view.sport, view.dport, view.proto)
        is_syn = seg is not None and seg.flags & (tcp.SYN | tcp.ACK) == tcp.SYN
        fwd, table = self.ct.lookup(key)
        ends = None
        if fwd is not None and is_syn and fwd.flags & (tcp.CT_F_CLOSED | tcp.CT_F_RST):
            ends, fwd = fwd, None  # a SYN reusing a closed flow's port starts a new flow
        if fwd is not None:
            return XdpPlan(DNAT, view, svc, seg, tracked=fwd, table=table)
        if is_tcp and not is_syn and svc.algorithm != MAGLEV:
            return XdpPlan(MIDSTREAM, view, svc)
        if not is_tcp and l4_csum_ok(data, view) == 0:
            return XdpPlan(DROPPED_INVALID, view, svc, seg, drop_reason="bad_checksum")
        removed = None
        if ends is not None:
            rkey = self.ct.reverse_removed_with(ends, table)
            removed = (table, rkey) if rkey is not None else None
        outcomes = pick_outcomes(svc, view, lambda ep: self.ct.reverse_taken(view, ep, ignoring=removed))
        return XdpPlan(DNAT, view, svc, seg, table=table, ends=ends, outcomes=frozenset(outcomes))

    def check_xdp(
        self, data: bytes, verdict: int | None, out: bytes, ingress: str = fastpath.INGRESS
    ) -> Verdict:
        """`ingress`: the lab interface the frame arrived on (the fast path's lookup starts there)."""
        self._ingress, self._redirected = ingress, False
        result = self._check_xdp(data, verdict, out)
        if self._redirected and result.outcome == DNAT:
            return Verdict(REDIRECTED, result.problems, result.pick)
        return result

    def _check_xdp(self, data: bytes, verdict: int | None, out: bytes) -> Verdict:
        plan = self.plan_xdp(data)
        if plan.outcome == REFUSED:
            return Verdict(REFUSED, tuple(check_refused(verdict)))
        self.counters["xdp_packets"] += 1
        if plan.outcome == ICMP_TRANSLATED:
            return self._xdp_icmp(plan, data, verdict, out)
        if plan.outcome == DROPPED_INVALID:
            return self._dropped(plan, data, verdict, out, XDP_DROP)
        if plan.outcome != DNAT:
            return self._untouched(plan.outcome, data, verdict, out, XDP_PASS)
        if plan.tracked is not None:
            return self._xdp_tracked(plan, data, verdict, out)
        return self._xdp_new_flow(plan, data, verdict, out)

    def _xdp_icmp(self, plan: XdpPlan, data: bytes, verdict: int | None, out: bytes) -> Verdict:
        assert plan.tracked is not None and plan.icmp is not None and plan.quote is not None
        fwd = plan.tracked
        check = check_icmp6_rewrite if plan.icmp.v6 else check_icmp_rewrite
        problems = check(
            data, verdict, out, plan.icmp, plan.quote, True, fwd.backend_ip, fwd.backend_port, XDP_PASS
        )
        self.counters["xdp_icmp_translated"] += 1
        return Verdict(ICMP_TRANSLATED, tuple(problems))

    def _xdp_tracked(self, plan: XdpPlan, data: bytes, verdict: int | None, out: bytes) -> Verdict:
        """lbtui_xdp on a packet of a tracked flow."""
        fwd, view, seg, table = plan.tracked, plan.view, plan.seg, plan.table
        assert fwd is not None and view is not None and plan.svc is not None
        rkey = fwd.reverse_key()
        # a plain packet of an established flow: no reverse entry looked at (lb_flow.h)
        plain = table == ESTABLISHED and tcp.is_plain(fwd, seg)
        found = None if plain else self.ct.tables[table].get(rkey)
        rev = found if found is not None and found.dir == DIR_REVERSE and found.flow == fwd.flow else None
        where = tcp.EXACT
        if seg is not None and not seg.flags & tcp.SYN and not plain:
            where = tcp.in_window(fwd, rev, seg.seq)
            if seg.flags & tcp.RST and where == tcp.OUTSIDE:
                return self._dropped(
                    XdpPlan(DROPPED_INVALID, view, plan.svc, seg, drop_reason="rst_out_of_window"),
                    data,
                    verdict,
                    out,
                    XDP_DROP,
                )
            if seg.flags & tcp.RST and where == tcp.INSIDE:
                self.counters["rst_challenged"] += 1
        verdict, out, fp_problems = self._fast_path(data, verdict, out, view)
        problems = fp_problems + check_rewrite(data, verdict, out, view, "dst", {fwd.backend()})
        fwd.packets += 1
        fwd.octets += view.ip_len
        fwd.last_frame = data
        if found is None and not plain:
            self.ct.restore_reverse(fwd, table)
            self.counters["xdp_ct_restored"] += 1
        if seg is None:
            return Verdict(DNAT, tuple(problems))
        if seg.flags & tcp.SYN and not seg.flags & tcp.ACK:
            if fwd.flags & tcp.CT_F_SYN and not fwd.flags & tcp.CT_F_EST and seg.seq == fwd.seq_first:
                fwd.flags |= tcp.CT_F_SYN_RETX
        elif plain:
            tcp.track_plain(fwd, seg)
        elif not seg.flags & tcp.RST and where != tcp.OUTSIDE:
            tcp.track(fwd, rev, seg)
        old, flags, _ = tcp.flow_flags(fwd, seg, False, where == tcp.EXACT, where != tcp.OUTSIDE)
        if (
            table == TRANSIENT
            and old & tcp.CT_F_SYNACK
            and not old & (tcp.CT_F_EST | tcp.CT_F_CLOSED)
            and seg.flags & (tcp.ACK | tcp.SYN | tcp.RST) == tcp.ACK
            and handshake_ack_ok(rev, seg.ack)
        ):
            if self.ct.promote(fwd) and old & tcp.CT_F_SYN:
                self.ct.count(fwd.backend_id, "handshakes")
            table = ESTABLISHED
        if tcp.closed(flags) and not old & tcp.CT_F_CLOSED:
            self.close(fwd, table)
        return Verdict(DNAT, tuple(problems))

    def _xdp_new_flow(self, plan: XdpPlan, data: bytes, verdict: int | None, out: bytes) -> Verdict:
        assert plan.view is not None and plan.svc is not None
        view = plan.view
        if plan.ends is not None:
            self.ct.end(plan.ends, plan.table)
        verdict, out, fp_problems = self._fast_path(data, verdict, out, view)
        pick = _kernel_pick(view, verdict, out, data) if plan.random_pick else None
        if verdict == XDP_DROP and DROP_CONFLICT in plan.outcomes:
            self.counters["drop_conflict"] += 1
            reason = "no_backend" if self.forced_drop else "tuple_conflict"
            self.drops[(plan.svc.service_id, reason)] += 1
            return Verdict(DROPPED, (), pick)
        candidates = {o for o in plan.outcomes if isinstance(o, tuple)}
        problems = fp_problems + check_rewrite(data, verdict, out, view, "dst", candidates)
        if not problems:
            self._new_flow(plan.svc, view, plan.seg, data, out)
        return Verdict(DNAT, tuple(problems), pick)

    def _fast_path(
        self, data: bytes, verdict: int | None, out: bytes, view: View
    ) -> tuple[int | None, bytes, list[str]]:
        """A DNATed frame through lb_fastpath.h (when compiled in): the fallback counted, or the
        redirect's own changes checked byte for byte. Returns the verdict and frame the DNAT alone
        gives (for check_rewrite), and the problems."""
        if self.fast_path is None or verdict == XDP_DROP or len(out) != len(data):
            return verdict, out, []
        backend_ip = bytes(out[view.dst_off : view.dst_off + view.alen])
        if view.v6:
            decision = self.fast_path.six.forward(data, view, backend_ip, self._ingress, fastpath.FORWARDED)
        else:
            decision = self.fast_path.forward(data, view, backend_ip, self._ingress)
        self.counters[decision.counter] += 1
        self.fast_path_seen[("v6 " if view.v6 else "") + decision.counter] += 1
        if not decision.redirected:
            if verdict == fastpath.XDP_REDIRECT:  # the frame as the DNAT left it is still checked
                return XDP_PASS, out, [f"fast path: expected XDP_PASS ({decision.counter}), got XDP_REDIRECT"]
            return verdict, out, []  # XDP_PASS with the DNATed frame: check_rewrite checks it
        self._redirected = True
        if verdict != fastpath.XDP_REDIRECT:
            return verdict, out, [f"fast path: expected XDP_REDIRECT, got verdict {verdict}"]
        if view.v6:
            problems, plain = fastpath6.check_redirect6(data, out, view.l3, decision)
        else:
            problems, plain = fastpath.check_redirect(data, out, view.l3, view.dst_off, decision)
        return XDP_PASS, plain, problems

    def check_reply(
        self, data: bytes, rverdict: int | None, rout: bytes, verdict: int | None, out: bytes
    ) -> Verdict:
        """A frame from the backend side with the fast path: lbtui_tc_reply at the backend interface's
        TC ingress first (`rverdict`/`rout`), then lbtui_tc at the client interface's egress on what
        it let through or redirected (`verdict`/`out`; None when it dropped the frame)."""
        assert self.fast_path is not None
        if parse_tc(data) == REFUSED:  # refused by the test run (as by lbtui_tc's: parse.parse_tc)
            return self.check_tc(data, rverdict, rout)
        # lbtui_tc_reply tail-calls lbtui_tc_reply6 for IPv6 by skb->protocol (the outer EtherType)
        v6 = len(data) >= 14 and u16(data, 12) == ETH_IPV6
        reply = (fastpath6.reply_view6 if v6 else fastpath.reply_view)(data, self.fast_path.host_mac)
        rev = None
        if reply is not None:
            found, _ = self.ct.lookup((reply.saddr, reply.daddr, reply.sport, reply.dport, reply.proto))
            rev = found if found is not None and found.dir == DIR_REVERSE else None
        decision = None
        if reply is not None and rev is not None:
            if v6:
                forwarded = fastpath.REPLY_FORWARDED
                decision = self.fast_path.six.reply(data, reply, rev.vip, fastpath.REPLY_INGRESS, forwarded)
            else:
                decision = self.fast_path.reply(data, reply)
        seen = "v6 reply " if v6 else "reply "
        if decision is None or not decision.redirected:
            if decision is not None:
                self.counters[decision.counter] += 1
                self.fast_path_seen[seen + decision.counter] += 1
            what = f"lbtui_tc_reply ({decision.counter if decision else 'not a reply it redirects'})"
            # what is no reply of ours goes to the hook's next filter (TC_ACT_UNSPEC); ours ends the chain
            passed = TC_ACT_UNSPEC if rev is None else TC_ACT_OK
            problems = check_untouched(what, data, rverdict, rout, passed)
            if problems:
                return Verdict(REPLY_PASSED, tuple(problems))
            return self.check_tc(data, verdict, out)  # TC egress SNATs it as without the fast path
        # the way out is sure: lbtui_tc's rules decide at TC ingress (tc_flow), and the frame leaves
        problems: list[str] = []
        if rverdict == fastpath.TC_ACT_REDIRECT:
            if v6:
                problems, plain = fastpath6.check_redirect6(data, rout, 14, decision)
            else:
                problems, plain = fastpath.check_redirect(data, rout, 14, 14 + 12, decision)
            result = self.check_tc(data, TC_ACT_OK, plain)
            # lbtui_tc on the way out: the reply's mark lets it through untouched, counted nothing
            problems += check_untouched("lbtui_tc on a redirected reply", rout, verdict, out, TC_ACT_OK)
        elif rverdict == TC_ACT_SHOT:
            result = self.check_tc(data, TC_ACT_SHOT, rout)
        else:
            problems = [f"lbtui_tc_reply: expected TC_ACT_REDIRECT or TC_ACT_SHOT, got verdict {rverdict}"]
            result = self.check_tc(data, verdict, out)
        if result.outcome != SNAT:
            return Verdict(result.outcome, (*problems, *result.problems), result.pick)
        self.counters[fastpath.REPLY_FORWARDED] += 1
        self.fast_path_seen[("v6 " if v6 else "") + fastpath.REPLY_FORWARDED] += 1
        return Verdict(REPLY_REDIRECTED, (*problems, *result.problems), result.pick)

    def _new_flow(
        self, svc: FuzzService, view: View, seg: tcp.Segment | None, data: bytes, out: bytes
    ) -> None:
        backend = (bytes(out[view.dst_off : view.dst_off + view.alen]), u16(out, view.l4 + 2))
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
        if seg is not None:
            entry.seq_first, entry.seq_next, entry.window = seg.seq, seg.end, seg.window
            entry.flags = tcp.CT_F_SEQ | tcp.CT_F_WIN
            if seg.flags & tcp.SYN:
                entry.flags |= tcp.CT_F_SYN
                if seg.wscale != tcp.NO_WSCALE:
                    entry.wscale = seg.wscale
                    entry.flags |= tcp.CT_F_WSCALE
        self.ct.count(entry.backend_id, "new_flows")
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
            if other.backend() == entry.backend() and not other.flags & (tcp.CT_F_CLOSED | tcp.CT_F_RST):
                self._finding(
                    FINDING_SHARED_AFTER_EVICTION,
                    f"{flow_text(entry)} shares its backend tuple with live {flow_text(other)}",
                )
        self.flows.append(
            Flow(view.saddr, view.sport, view.dport, view.proto, backend[0], backend[1], view.daddr)
        )

    def _same_client_port(self, entry: CtEntry) -> list[CtEntry]:
        """Forward entries of the same client address:port and protocol to the VIP's other ports."""
        keys = [
            (entry.client_ip, entry.vip, entry.client_port, svc.port, svc.proto)
            for svc in SERVICES
            if svc.proto == entry.proto and svc.port != entry.vip_port and svc.vip == entry.vip
        ]
        return [e for e in map(self.ct.get, keys) if e is not None and e.dir == DIR_FORWARD]

    # -- shared --------------------------------------------------------------------------------

    def close(self, fwd: CtEntry, table: str) -> None:
        """lb_tcp.h tcp_close: a FIN/RST close, accounted once; an established flow moves back."""
        old = self.ct.mark_closed(fwd)
        if old is None:
            return
        if old & tcp.CT_F_EST:
            self.ct.count(fwd.backend_id, "closes")
        if table == ESTABLISHED:
            self.ct.demote(fwd)

    def _dropped(self, plan: XdpPlan, data: bytes, verdict: int | None, out: bytes, drop: int) -> Verdict:
        assert plan.svc is not None
        self.drops[(plan.svc.service_id, plan.drop_reason)] += 1
        problems = check_untouched(plan.drop_reason, data, verdict, out, drop)
        return Verdict(DROPPED_INVALID, tuple(problems))

    def _untouched(self, outcome: str, data: bytes, verdict: int | None, out: bytes, ok: int) -> Verdict:
        if outcome in COUNTER_OF:
            self.counters[COUNTER_OF[outcome]] += 1
        return Verdict(outcome, tuple(check_untouched(outcome, data, verdict, out, ok)))


def outer_daddr(data: bytes, icmp: IcmpView) -> bytes:
    """The destination address of an ICMP message's own IP header: an error is translated only when
    its quote is a packet from that address."""
    if icmp.v6:
        return bytes(data[icmp.l3 + 24 : icmp.l3 + 40])
    return bytes(data[icmp.l3 + 16 : icmp.l3 + 20])


def handshake_ack_ok(rev: CtEntry | None, ack: int) -> bool:
    """lb.c handshake_ack_ok: the client's ACK acknowledges the backend's SYN-ACK."""
    if rev is None or not rev.flags & tcp.CT_F_SEQ:
        return True
    first = (rev.seq_first + 1) & tcp.MASK32
    return (ack - first) & tcp.MASK32 <= (rev.seq_next - first) & tcp.MASK32


def _kernel_pick(view: View, verdict: int | None, out: bytes, data: bytes) -> int | None:
    """The backend id the program gave a new flow (PICK_DROPPED for a drop; None: not a backend)."""
    if verdict == XDP_DROP:
        return PICK_DROPPED
    if verdict != XDP_PASS or len(out) != len(data):
        return None
    return BACKEND_BY_ENDPOINT.get(
        (bytes(out[view.dst_off : view.dst_off + view.alen]), u16(out, view.l4 + 2))
    )


__all__ = ["DIR_REVERSE", "Oracle", "Verdict", "XdpPlan"]
