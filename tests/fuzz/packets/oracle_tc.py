# SPDX-License-Identifier: Apache-2.0
"""The oracle's rules for lbtui_tc (TC egress on the client-facing interfaces): SNAT of replies, later
fragments of a SNATed reply, ICMP and ICMPv6 errors about a flow, the reply side's TCP state and the
moves it makes (a forward entry re-created, a flow established by the backend's answer, a close).

Mixed into oracle.Oracle; see its docstring for the whole picture."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from tests.fuzz.packets import tcp
from tests.fuzz.packets.conntrack import (
    DIR_FORWARD,
    DIR_REVERSE,
    ESTABLISHED,
    TRANSIENT,
    ConntrackMirror,
    CtEntry,
)
from tests.fuzz.packets.icmp import check_fragment_rewrite, check_icmp_rewrite, quote_of
from tests.fuzz.packets.icmp6 import check_fragment6_rewrite, check_icmp6_rewrite, quote6_of
from tests.fuzz.packets.parse import REFUSED, Fragment, IcmpView, View, parse_tc
from tests.fuzz.packets.rewrite import TC_ACT_OK, TC_ACT_SHOT, check_refused, check_rewrite, check_untouched
from tests.fuzz.packets.wire import TCP

if TYPE_CHECKING:
    from tests.fuzz.packets.oracle import Verdict


class TcRules:
    ct: ConntrackMirror
    counters: Counter[str]
    drops: Counter[tuple[int, str]]
    frags: dict[tuple[bytes, bytes, int, int], bytes]

    def close(self, fwd: CtEntry, table: str) -> None:
        raise NotImplementedError

    def _untouched(self, outcome: str, data: bytes, verdict: int | None, out: bytes, ok: int) -> Verdict:
        raise NotImplementedError

    def check_tc(self, data: bytes, verdict: int | None, out: bytes) -> Verdict:
        from tests.fuzz.packets.oracle import FRAGMENT_SNAT, ICMP_TRANSLATED, TC_MISS, Verdict

        view = parse_tc(data)
        if view == REFUSED:
            return Verdict(REFUSED, tuple(check_refused(verdict)))
        if isinstance(view, str):
            return self._untouched(view, data, verdict, out, TC_ACT_OK)
        if isinstance(view, IcmpView):
            return self._tc_icmp(view, data, verdict, out) or self._untouched(
                "tc_icmp", data, verdict, out, TC_ACT_OK
            )
        if isinstance(view, Fragment):
            vip = self.frags.get((view.saddr, view.daddr, view.ip_id, view.proto))
            if vip is None:
                return self._untouched("tc_fragment", data, verdict, out, TC_ACT_OK)
            self.counters["tc_fragments_snat"] += 1
            check = check_fragment6_rewrite if view.v6 else check_fragment_rewrite
            return Verdict(FRAGMENT_SNAT, tuple(check(data, verdict, out, view, vip, TC_ACT_OK)))
        rev, table = self.ct.lookup((view.saddr, view.daddr, view.sport, view.dport, view.proto))
        if rev is None or rev.dir != DIR_REVERSE:
            return self._untouched(TC_MISS, data, verdict, out, TC_ACT_OK)
        _ = ICMP_TRANSLATED
        return self._tc_reply(rev, table, view, data, verdict, out)

    def _tc_icmp(self, icmp: IcmpView, data: bytes, verdict: int | None, out: bytes) -> Verdict | None:
        from tests.fuzz.packets.oracle import ICMP_TRANSLATED, Verdict, outer_daddr

        q = quote6_of(data, icmp) if icmp.v6 else quote_of(data, icmp)
        if q is None or q.saddr != outer_daddr(data, icmp):
            return None
        rev = self.ct.get((q.daddr, q.saddr, q.dport, q.sport, q.proto))
        if rev is None or rev.dir != DIR_REVERSE:
            return None
        self.counters["tc_icmp_translated"] += 1
        check = check_icmp6_rewrite if icmp.v6 else check_icmp_rewrite
        problems = check(data, verdict, out, icmp, q, False, rev.vip, rev.vip_port, TC_ACT_OK)
        return Verdict(ICMP_TRANSLATED, tuple(problems))

    def _tc_reply(
        self, rev: CtEntry, table: str, view: View, data: bytes, verdict: int | None, out: bytes
    ) -> Verdict:
        """lbtui_tc on a reply of a tracked flow."""
        from tests.fuzz.packets.oracle import SNAT, Verdict

        seg = None
        if view.proto == TCP:
            hdr = (data[view.l4 + 12] >> 4) * 4
            payload = view.ip_len - view.ihl_len - hdr if view.ip_len > view.ihl_len + hdr else 0
            seg = tcp.segment_of(data, view.l4, payload)
        vip = (rev.vip, rev.vip_port)
        fwd = None
        if table == TRANSIENT or (seg is not None and seg.flags & (tcp.SYN | tcp.FIN | tcp.RST)):
            found, where_found = self.ct.lookup(rev.forward_key())
            if found is not None and (
                where_found != table or found.dir != DIR_FORWARD or found.backend() != rev.backend()
            ):
                found = None  # a later flow on the same client port
            elif found is None and table == TRANSIENT:
                found = self.ct.rebuild_forward(rev)
                found.last_frame = data
                self.counters["tc_ct_restored"] += 1
            fwd = found
        where = tcp.EXACT
        if seg is not None and not seg.flags & tcp.SYN:
            where = tcp.in_window(rev, fwd, seg.seq)
        if seg is not None and seg.flags & tcp.RST and where == tcp.OUTSIDE:
            self.drops[(rev.service_id, "rst_out_of_window")] += 1
            return Verdict(
                "invalid", tuple(check_untouched("rst_out_of_window", data, verdict, out, TC_ACT_SHOT))
            )
        # the reply's own counters, before the flow moves or closes (lbtui_tc counts them first)
        rev.packets += 1
        rev.octets += view.ip_len
        rev.last_frame = data
        if seg is not None:
            if seg.flags & tcp.RST and where == tcp.INSIDE:
                self.counters["rst_challenged"] += 1
            if not seg.flags & tcp.RST and where != tcp.OUTSIDE:
                tcp.track(rev, fwd, seg)
            if fwd is not None:
                old, flags, failed = tcp.flow_flags(fwd, seg, True, where == tcp.EXACT, where != tcp.OUTSIDE)
                fwd.last_frame = data
                if failed:
                    self.ct.count(fwd.backend_id, "conn_failures")
                if (
                    table == TRANSIENT
                    and not old & (tcp.CT_F_SYN | tcp.CT_F_EST | tcp.CT_F_CLOSED)
                    and not seg.flags & tcp.RST
                ):
                    self.ct.promote(fwd)
                    table = ESTABLISHED
                if tcp.closed(flags) and not old & tcp.CT_F_CLOSED:
                    self.close(fwd, table)
        elif fwd is not None and table == TRANSIENT and not fwd.flags & (tcp.CT_F_EST | tcp.CT_F_CLOSED):
            self.ct.promote(fwd)  # UDP: the backend answered
            table = ESTABLISHED
        problems = check_rewrite(data, verdict, out, view, "src", {vip})
        self.counters["tc_snat"] += 1
        if view.frag:  # the first fragment: its followers get the same source
            self.frags[(view.saddr, view.daddr, view.ip_id, view.proto)] = vip[0]
        _ = DIR_FORWARD
        return Verdict(SNAT, tuple(problems))
