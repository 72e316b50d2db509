# SPDX-License-Identifier: Apache-2.0
"""Live flows: the bounded view the engine chose among all flows for this pane's filter and sort.

The engine answers the pane's FlowQuery over every flow in conntrack; the same filter and sort are
applied locally too, so that typing narrows the rows at once, before the next answer arrives.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Static

from lbtui.addresses import parse_endpoint
from lbtui.model import FLOW_SORTS, MAX_QUERY_TEXT, FlowQuery, FlowView, Snapshot
from lbtui.widgets import fmt
from lbtui.widgets.keyed_table import KeyedTable


def _address_key(address: str) -> tuple[int, int, int]:
    """Numeric order of endpoints: IPv4 before IPv6, then by address and port."""
    try:
        ip, port = parse_endpoint(address)
    except ValueError:
        return 0, 0, 0
    parsed = ipaddress.ip_address(ip)
    return parsed.version, int(parsed), port


# Sort modes, cycled by `s`, in the engine's order (model.FLOW_SORTS): name -> (key, reverse)
SORTS: dict[str, tuple[Callable[[FlowView], Any], bool]] = {
    "bytes": (lambda f: f.bytes_in + f.bytes_out, True),
    "age": (lambda f: f.age_s, True),
    "idle": (lambda f: f.idle_s, True),
    "backend": (lambda f: (_address_key(f.backend), -(f.bytes_in + f.bytes_out)), False),
}
assert tuple(SORTS) == FLOW_SORTS
STATE_STYLE = {"established": "green", "syn_sent": "yellow", "closing": "magenta", "udp": "cyan"}


def flow_matches(flow: FlowView, needle: str) -> bool:
    """Every whitespace-separated term of `needle` is part of one of the flow's fields (FlowQuery)."""
    return fmt.matches(needle, flow.protocol, flow.client, flow.vip, flow.backend, flow.proxy, flow.state)


def select_flows(flows: tuple[FlowView, ...], needle: str, sort: str) -> list[FlowView]:
    key, reverse = SORTS[sort]
    return sorted((f for f in flows if flow_matches(f, needle)), key=key, reverse=reverse)


class FlowTable(KeyedTable):
    COLUMNS = (
        ("proto", "protocol"),
        ("client", "client"),
        ("backend", "backend"),
        ("state", "state"),
        ("bytes in", "in"),
        ("bytes out", "out"),
        ("age", "age"),
        ("idle", "idle"),
        ("proxy", "proxy"),
        ("pkts in", "pin"),
        ("pkts out", "pout"),
        ("vip", "vip"),
    )

    def __init__(self, **kwargs: Any) -> None:
        # A flow is identified as in conntrack: protocol, client address, VIP address.
        super().__init__(self.COLUMNS, ("protocol", "client", "vip"), **kwargs)

    @staticmethod
    def cells(f: FlowView) -> tuple[object, ...]:
        return (
            f.protocol,
            f.client,
            f.backend,
            Text(f.state, style=STATE_STYLE.get(f.state, "")),
            fmt.right(fmt.size(f.bytes_in)),
            fmt.right(fmt.size(f.bytes_out)),
            fmt.right(fmt.duration(f.age_s)),
            fmt.right(fmt.duration(f.idle_s)),
            f.proxy,
            fmt.right(fmt.count(f.packets_in)),
            fmt.right(fmt.count(f.packets_out)),
            f.vip,
        )


class ConntrackPane(Vertical):
    """Status line ("showing N of M flows"), the flow table, and a filter input opened with `/`."""

    BINDINGS = [Binding("escape", "close_filter", "Clear filter", show=False)]

    class QueryChanged(Message):
        """The filter or sort changed: the engine should be asked again."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.needle = ""
        self.sort = "bytes"
        self._snapshot: Snapshot | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="ct-status", markup=False)  # it quotes the filter, maybe "[fd00::1]"
        yield FlowTable(id="ct-table")
        yield Input(placeholder="filter flows: address, backend, proxy, state…", id="ct-filter", compact=True)

    @property
    def flow_query(self) -> FlowQuery:
        return FlowQuery(text=self.needle, sort=self.sort)

    def show(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._refresh_rows()

    def cycle_sort(self) -> str:
        modes = list(SORTS)
        self.sort = modes[(modes.index(self.sort) + 1) % len(modes)]
        self._refresh_rows()
        self.post_message(self.QueryChanged())
        return self.sort

    def open_filter(self) -> None:
        box = self.query_one("#ct-filter", Input)
        box.display = True
        box.value = self.needle
        box.focus()

    def action_close_filter(self) -> None:
        box = self.query_one("#ct-filter", Input)
        if box.display:
            box.value = ""
            box.display = False
            self.query_one(FlowTable).focus()

    @on(Input.Changed, "#ct-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        needle = event.value.strip()[:MAX_QUERY_TEXT]
        if needle != self.needle:
            self.needle = needle
            self._refresh_rows()
            self.post_message(self.QueryChanged())

    @on(Input.Submitted, "#ct-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.input.display = False
        self.query_one(FlowTable).focus()

    def _refresh_rows(self) -> None:
        snapshot = self._snapshot
        if snapshot is None:
            return
        shown = select_flows(snapshot.flows, self.needle, self.sort)
        with self.app.batch_update():
            self.query_one(FlowTable).sync([FlowTable.cells(f) for f in shown])
        self.query_one("#ct-status", Static).update(self.status_text(len(shown), snapshot))

    def status_text(self, shown: int, snapshot: Snapshot) -> Text:
        total = snapshot.conntrack.flows
        query = snapshot.flow_query
        matched = snapshot.flows_matched
        text = Text.assemble(
            ("showing ", "dim"), (f"{shown:,}", "bold"), (" of ", "dim"), (f"{matched:,}", "bold")
        )
        if query.text:
            text.append(" matching flows", style="dim")
            text.append(f" ({total:,} in conntrack)", style="dim")
        else:
            text.append(" flows", style="dim")
        if len(snapshot.flows) < matched:
            text.append(f" (top {len(snapshot.flows):,} by {query.sort})", style="dim")
        if query != self.flow_query:  # the engine answers from its next sweep on
            text.append("  searching all flows…", style="bold yellow")
        text.append("  sort ", style="dim")
        text.append(self.sort, style="bold cyan")
        if self.needle:
            text.append("  filter ", style="dim")
            text.append(repr(self.needle), style="bold yellow")
        ct = snapshot.conntrack
        text.append(f"  tcp {ct.tcp:,} · udp {ct.udp:,} · closing {ct.closing:,}", style="dim")
        return text
