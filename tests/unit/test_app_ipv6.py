# SPDX-License-Identifier: Apache-2.0
"""The console with IPv6 flows and backends: full "[addr]:port" cells in columns wide enough for them,
and the conntrack filter taking bracketed and bare IPv6 addresses (any spelling)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from lbtui.addresses import format_endpoint, parse_endpoint
from lbtui.app import LbtuiApp
from lbtui.model import FlowQuery, Snapshot
from lbtui.widgets.conntrack import FlowTable, flow_matches
from tests.support.console_engine import ConsoleEngine
from tests.unit.test_app import started, wait_until

pytestmark = pytest.mark.anyio
LONGEST = "[fd00:1234:5678:9abc:def0:1234:5678:9abc]:65535"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def as_ipv6(endpoint: str) -> str:
    """An IPv4 endpoint as an IPv6 one in fd00:40::/96, the same for the same input (a row keeps its key)."""
    ip, port = parse_endpoint(endpoint)
    if endpoint == "192.0.2.10:40000":
        return LONGEST
    return format_endpoint(
        str(ipaddress.IPv6Address((0xFD000040 << 96) | int(ipaddress.IPv4Address(ip)))), port
    )


class Ipv6Flows:
    """The console engine with every flow's client and backend written as IPv6 endpoints."""

    def __init__(self, inner: ConsoleEngine) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def snapshot(self, flows: FlowQuery | None = None) -> Snapshot:
        """The engine's flows as IPv6, filtered here by the query's text (the engine's rule)."""
        query = flows or FlowQuery()
        snap = self._inner.snapshot(replace(query, text=""))
        v6 = [replace(f, client=as_ipv6(f.client), backend=as_ipv6(f.backend)) for f in snap.flows]
        matching = tuple(f for f in v6 if flow_matches(f, query.text))
        return replace(snap, flows=matching, flow_query=query, flows_matched=len(matching))


@pytest.fixture
def engine() -> Iterator[Ipv6Flows]:
    handle = ConsoleEngine()
    yield Ipv6Flows(handle)
    handle.shutdown()


async def test_ipv6_endpoints_show_whole_and_filter_by_address(engine: Ipv6Flows) -> None:
    app = LbtuiApp(engine, refresh_s=0.05)  # type: ignore[arg-type]
    async with app.run_test(size=(200, 40)) as pilot:
        await started(app, pilot)
        await pilot.press("2")
        table = app.conntrack.query_one(FlowTable)
        await wait_until(lambda: table.row_count == 52, "the flows", pilot)
        clients = [str(table.get_row(key)[1]) for key in table.row_keys]
        assert LONGEST in clients
        client_column = table.ordered_columns[1]
        # nothing cut off: the column grows to the longest endpoint
        await wait_until(lambda: client_column.content_width == len(LONGEST), "the column's width", pilot)

        first = next(c for c in clients if c != LONGEST)
        address, port = parse_endpoint(first)
        spelled = "[" + ipaddress.IPv6Address(address).exploded.upper() + f"]:{port}"  # another spelling
        await pilot.press("slash", *spelled, "enter")
        await pilot.pause()
        assert app.conntrack.needle == spelled
        assert [str(table.get_row(key)[1]) for key in table.row_keys] == [first]
        await pilot.press("escape")
        await pilot.pause()
        backend = str(table.get_row(table.row_keys[0])[2])
        await pilot.press("slash", *backend.removeprefix("["), "enter")  # a part of an endpoint
        await pilot.pause()
        assert table.row_count > 0
        assert {str(table.get_row(key)[2]) for key in table.row_keys} == {backend}


async def test_dialogs_name_ipv6_backends_with_their_brackets() -> None:
    from textual.app import App
    from textual.widgets import Label

    from lbtui.screens.confirm import ConfirmScreen
    from lbtui.screens.weight import WeightScreen

    question = "Drain [fd00:20::11]:8080 of web6? New connections stop; existing ones continue."
    app: App[None] = App()
    async with app.run_test() as pilot:
        await app.push_screen(ConfirmScreen(question))
        await pilot.pause()
        assert str(app.screen.query_one("#question", Label).render()) == question
        app.pop_screen()
        await app.push_screen(WeightScreen("web6", "[fd00:20::11]:8080", 3))
        await pilot.pause()
        shown = [str(label.render()) for label in app.screen.query(Label)]
        assert "Weight of [fd00:20::11]:8080 in web6 (now 3)" in shown
