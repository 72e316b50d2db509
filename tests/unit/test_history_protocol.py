# SPDX-License-Identifier: Apache-2.0
"""The `history` request of the control protocol: query decoding, the answer over the socket, from
the real engine over the in-memory dataplane after the story of tests/support/console_time.py."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import pytest

from lbtui import model, wire
from lbtui.control_client import RemoteError, SocketEngineHandle
from lbtui.control_socket import ControlServer
from tests.support.console_engine import ConsoleEngine
from tests.support.console_time import STORY_S, make_engine

B2 = "10.0.2.12:8080"


@pytest.fixture(scope="module")
def story() -> Iterator[ConsoleEngine]:
    """One engine after the whole story for the tests that only read (it takes seconds to play)."""
    handle = make_engine(story_s=STORY_S)
    yield handle
    handle.shutdown()


@pytest.fixture
def engine(story: ConsoleEngine) -> Iterator[ConsoleEngine]:
    story.history_queries.clear()
    story.keeps_history = True
    yield story
    story.keeps_history = True


@pytest.fixture
def server(engine: ConsoleEngine, sock_dir: str) -> Iterator[ControlServer]:
    srv = ControlServer(engine, os.path.join(sock_dir, "lbtui.sock"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: ControlServer) -> Iterator[SocketEngineHandle]:
    handle = SocketEngineHandle(server.path)
    yield handle
    handle.close()


def raw(path: str, request: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(json.dumps(request).encode() + b"\n")
        reply: dict = json.loads(s.makefile("rb").readline())
        return reply


def test_client_gets_the_same_history_as_the_engine(
    engine: ConsoleEngine, client: SocketEngineHandle
) -> None:
    now = engine.snapshot().taken_at
    query = model.HistoryQuery(proxy="web", backend=B2, since=now - 900)
    direct = engine.history(query)
    answer = client.history(query)
    assert answer == direct
    (history,) = answer.histories
    assert (history.proxy, history.backend, history.start) == ("web", B2, int(now) - 899)
    assert {s.name for s in history.series} == set(model.HISTORY_SERIES)
    assert all(len(s.values) == 900 for s in history.series)
    # draining, its timeout, back in rotation; the reload
    assert [m.kind for m in answer.marks] == ["drain", "drain", "drain", "reload"]
    assert all(m.backend in (B2, None) for m in answer.marks)
    assert query in engine.history_queries


def test_every_target_with_a_few_series_for_sparklines(
    engine: ConsoleEngine, client: SocketEngineHandle
) -> None:
    now = engine.snapshot().taken_at
    answer = client.history(model.HistoryQuery(since=now - 60, series=("new_flows",)))
    targets = {(h.proxy, h.backend) for h in answer.histories}
    assert ("web", None) in targets and ("dns", "10.0.4.11:53") in targets and len(targets) == 8
    assert all(
        [s.name for s in h.series] == ["new_flows"] and len(h.series[0].values) == 60
        for h in answer.histories
    )


def test_bad_queries_are_refused_with_the_reason(server: ControlServer) -> None:
    for query, reason in (
        ({"backend": B2}, "a backend needs its proxy"),
        ({"series": ["nonsense"]}, "unknown series 'nonsense'"),
        ({"since": "yesterday"}, "query.since: expected a number"),
        ({"proxy": "web", "colour": "red"}, "unknown field(s) 'colour'"),
        ({"series": ["new_flows"] * 65}, "more than 64 series"),
    ):
        reply = raw(server.path, {"v": 1, "id": 1, "op": "history", "query": query})
        assert reply["ok"] is False and reason in reply["error"], (query, reply)
    reply = raw(server.path, {"v": 1, "id": 2, "op": "history"})  # no query: everything
    assert reply["ok"] is True and len(reply["result"]["histories"]) == 8


def test_an_instance_without_history_answers_kept_s_zero(
    engine: ConsoleEngine, client: SocketEngineHandle
) -> None:
    engine.keeps_history = False
    answer = client.history(model.HistoryQuery(proxy="web"))
    assert answer.kept_s == 0 and answer.histories == ()
    assert engine.snapshot().history_s == 0


def test_an_instance_from_before_history_is_read_as_keeping_none(
    client: SocketEngineHandle, monkeypatch
) -> None:
    def old_server(request: dict, timeout: float, retry: bool = True) -> object:
        raise RemoteError("unknown op 'history' (known: hello, snapshot, events, command)")

    monkeypatch.setattr(client, "_call", old_server)
    assert client.history(model.HistoryQuery()).kept_s == 0


def test_windows_travel_in_the_snapshot(engine: ConsoleEngine, client: SocketEngineHandle) -> None:
    snap = client.snapshot()
    view = snap.latency_of("web", B2)
    assert view is not None and [w.seconds for w in view.windows] == list(model.LATENCY_WINDOWS_S)
    window = view.window(10)
    assert window is not None and window.handshake is not None and window.handshake.p99_ms is not None
    direct = engine.snapshot().latency_of("web", B2)
    assert direct is not None and direct.windows == view.windows
    assert view.handshake is not None and view.handshake.p99_ms is not None
    assert window.handshake.p99_ms < 32 < view.handshake.p99_ms  # its slow period: in lifetime only
    udp = snap.latency_of("dns", "10.0.4.11:53")
    assert udp is not None and all(w.handshake is None and w.duration is not None for w in udp.windows)
    assert snap.access_log_target == engine.access_log_path and snap.history_s == 3600
    assert wire.decode_snapshot(wire.encode_snapshot(snap)) == snap


def test_the_engine_side_says_where_the_access_log_goes(tmp_path) -> None:
    from lbtui.config import AccessLogConfig, MetricsConfig, Settings
    from lbtui.observe.hub import ObservabilityHub

    snap = model.Snapshot(0.0, 0.0, None, (), model.ConntrackSummary(), ())
    hub = ObservabilityHub(lambda: snap, allow_stdout=False)
    try:
        hub.configure(Settings(metrics=MetricsConfig(enabled=False)))
        assert hub.decorate(snap).access_log_target is None  # console: "no access log configured"
        path = str(tmp_path / "access.log")
        hub.configure(Settings(metrics=MetricsConfig(enabled=False), access_log=AccessLogConfig(file=path)))
        assert hub.decorate(snap).access_log_target == path
    finally:
        hub.close()
