# SPDX-License-Identifier: Apache-2.0
"""The console's calls to its engine and peers (lbtui/console_fetch.py), without Textual: a failing
transport becomes a result or a peer's error, a failing history query costs only the sparklines."""

from __future__ import annotations

from collections.abc import Sequence

from lbtui import model
from lbtui.console_fetch import ConsoleFetcher, PeerState
from lbtui.screens.operate import TRAFFIC_ACTIONS, TrafficActions

SNAP = model.Snapshot(
    taken_at=1000.0,
    started_at=900.0,
    config_path=None,
    services=(),
    conntrack=model.ConntrackSummary(),
    flows=(),
    history_s=60,
)


class Handle:
    """An EngineHandle whose calls answer, or raise `error` when it is set."""

    def __init__(self, error: Exception | None = None, history_error: Exception | None = None) -> None:
        self.error = error
        self.history_error = history_error
        self.history_queries: list[model.HistoryQuery] = []
        self.event_queries: list[int] = []

    def snapshot(self, flows: model.FlowQuery | None = None) -> model.Snapshot:
        if self.error:
            raise self.error
        return SNAP

    def events_since(self, seq: int, limit: int = 1000) -> Sequence[model.Event]:
        self.event_queries.append(seq)
        return []

    def history(self, query: model.HistoryQuery) -> model.HistoryAnswer:
        self.history_queries.append(query)
        if self.history_error:
            raise self.history_error
        return model.HistoryAnswer(taken_at=SNAP.taken_at, kept_s=60)

    def submit(self, command: model.Command, timeout: float = 10.0) -> model.CommandResult:
        if self.error:
            raise self.error
        return model.CommandResult(True, "done")


def test_a_poll_asks_for_events_after_the_last_and_trends_from_trend_s_back() -> None:
    handle = Handle()
    poll = ConsoleFetcher(handle, {}, trend_s=120).poll(7, None, None)  # type: ignore[arg-type]
    assert poll.snapshot is SNAP and poll.events == [] and poll.trends is not None
    assert handle.event_queries == [7]
    assert handle.history_queries[0].since == SNAP.taken_at - 120


def test_a_failing_history_costs_only_the_sparklines() -> None:
    fetcher = ConsoleFetcher(Handle(history_error=ConnectionResetError("gone")), {}, trend_s=60)  # type: ignore[arg-type]
    poll = fetcher.poll(0, None, None)
    assert poll.snapshot is SNAP and poll.trends is None
    assert fetcher.history_error == "gone"


def test_transport_errors_become_a_failed_result_and_a_peer_error() -> None:
    down = Handle(error=ConnectionRefusedError())
    fetcher = ConsoleFetcher(down, {"h2": Handle(), "h3": down}, trend_s=60)  # type: ignore[arg-type,dict-item]
    result = fetcher.submit(model.Stop())
    assert not result.ok and result.message == "ConnectionRefusedError"
    assert fetcher.peer_states() == [
        PeerState("h2", snapshot=SNAP),
        PeerState("h3", error="ConnectionRefusedError"),
    ]


def test_the_traffic_actions_are_the_mixins_actions() -> None:
    assert TRAFFIC_ACTIONS == {
        "drain",
        "reweight",
        "weight_up",
        "weight_down",
        "rate_limits",
        "circuit",
        "reload",
        "add_backend",
        "remove_backend",
        "maintenance",
        "health",
        "announce",
    }
    assert all(callable(getattr(TrafficActions, f"action_{name}")) for name in TRAFFIC_ACTIONS)
