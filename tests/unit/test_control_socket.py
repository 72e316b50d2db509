# SPDX-License-Identifier: Apache-2.0
"""The control socket: JSON form of the model, server and client, robustness, socket file handling.

No BPF: the engine is the real one over the in-memory dataplane (tests/support/console_engine.py).
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lbtui import model, wire
from lbtui.control_client import RemoteError, SocketEngineHandle
from lbtui.control_socket import ControlServer, SocketInUse
from tests.support.console_engine import ConsoleEngine

# ---- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def server(engine: ConsoleEngine, sock_dir: str) -> Iterator[ControlServer]:
    srv = ControlServer(engine, os.path.join(sock_dir, "lbtui.sock"), instance={"mode": "test"})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: ControlServer) -> Iterator[SocketEngineHandle]:
    handle = SocketEngineHandle(server.path)
    yield handle
    handle.close()


def raw_exchange(path: str, payload: bytes, timeout: float = 20.0) -> list[bytes]:
    """Send payload, half-close, read until the server closes; the reply lines."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    try:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed early (e.g. a line too long): its reply is still readable
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    assert data == b"" or data.endswith(b"\n"), data[-200:]
    return data.splitlines()


def request(path: str, **req: object) -> dict:
    lines = raw_exchange(path, json.dumps({"v": 1, "id": 1, **req}).encode() + b"\n")
    assert len(lines) == 1
    return json.loads(lines[0])


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# ---- wire: every model type survives the JSON round trip ----------------------------------------


def roundtrip(value: object) -> object:
    return json.loads(json.dumps(wire.encode_value(value), allow_nan=False))


def test_snapshot_round_trip_is_exact(engine: ConsoleEngine):
    snap = engine.snapshot()
    snap = model.Snapshot(
        **{
            **{f: getattr(snap, f) for f in snap.__dataclass_fields__},
            "latency": (
                *snap.latency,
                model.LatencyView("dns", "10.0.4.12:53", model.Histogram((0.5, math.inf), (1, 2), 3, 1.5)),
                model.LatencyView("dns", "10.0.4.13:53"),
            ),
            "dns": (
                model.DnsStatus("api.example", "web", ("10.0.9.1", "10.0.9.2"), 1.5, None, 0),
                model.DnsStatus("db.example", "dns", (), None, "SERVFAIL", 3),
            ),
            "events_dropped": 7,
        }
    )
    data = roundtrip(snap)
    back = wire.decode_snapshot(data)
    assert back == snap
    # types are restored, not just equal-looking values
    svc = back.services[0]
    assert isinstance(back.services, tuple) and isinstance(svc.interfaces, tuple)
    assert svc.backends[0].health is model.Health.UP
    assert svc.backends[2].circuit is model.Circuit.OPEN
    assert isinstance(svc.rate_limit, model.RateLimitView)
    hist = back.latency[0].handshake
    assert hist is not None and hist.count == 68 and hist.counts == snap.latency[0].handshake.counts  # type: ignore[union-attr]
    infinite = back.latency[-2].handshake
    assert infinite is not None and math.isinf(infinite.bounds_ms[-1])
    assert back.latency[-1].handshake is None


def test_every_model_value_round_trips():
    values: list[object] = [
        model.Event(3, 1.25, "drain", "x draining", model.Level.WARNING, "web", "10.0.2.11:8080"),
        model.Event(4, 2.0, "started", "up"),
        model.CommandResult(True, "ok"),
        model.CommandResult(False, "no such backend"),
        model.CircuitTransition(
            1.0, "web", "10.0.2.11:8080", model.Circuit.OPEN, model.Circuit.HALF_OPEN, "30s"
        ),
        model.Histogram((0.5, math.inf), (1, 2), 3, 1.5, 0.4, None, 0.9),
        model.ServiceView(
            "s", "10.0.0.1", 80, "tcp", "maglev", ("a", "b"), (), drops={"rate_limit": 3, "no_backend": 1}
        ),
        model.FlowEvent(
            "closed", 1.0, "web", "tcp", "1.2.3.4", 5, "10.0.0.1", 80, "10.0.2.11", 8080, 1, 2, 3, 4, 0.5
        ),
    ]
    for value in values:
        assert wire.decode_dataclass(type(value), roundtrip(value), "v") == value


ALL_COMMANDS: list[model.Command] = [
    model.SetWeight("web", "10.0.2.11:8080", 5),
    model.AdjustWeight("web", "10.0.2.11:8080", step=-1),
    model.AdjustWeight("web", "10.0.2.11:8080", percent=50),
    model.AddBackend("web", "10.0.2.20:8080", 2),
    model.AddBackend("web", "10.0.3.20:8080", 2, group="192.168.0.0/16"),
    model.RemoveBackend("web", "10.0.2.20:8080"),
    model.RemoveBackend("web", "10.0.2.20:8080", cut=True),
    model.Maintenance("web", "10.0.2.11:8080"),
    model.Ready("web", "10.0.2.11:8080"),
    model.ForceHealth("web", "10.0.2.11:8080", "down"),
    model.ClearOverrides(),
    model.ClearOverrides("web", "10.0.2.11:8080"),
    model.Drain("web", "10.0.2.11:8080", 2.5),
    model.Drain("web", "10.0.2.11:8080"),
    model.Undrain("web", "10.0.2.11:8080"),
    model.SetRateLimit("web", 100, 200, None, 0),
    model.Reload("/etc/lbtui/lbtui.toml"),
    model.Reload(),
    model.CircuitCommand("web", "10.0.2.11:8080", "force_open"),
    model.Stop(),
    model.Announce("withdraw", "web"),
    model.Announce("announce"),
]


def test_every_command_round_trips():
    assert {type(c) for c in ALL_COMMANDS} == set(model.COMMAND_TYPES.values())
    for cmd in ALL_COMMANDS:
        data = roundtrip(wire.encode_command(cmd))
        assert data["type"] == type(cmd).__name__  # type: ignore[index]
        assert wire.decode_command(data) == cmd


def test_a_whole_number_is_accepted_where_a_float_is_expected():
    cmd = wire.decode_command({"type": "Drain", "proxy": "p", "backend": "b", "timeout_s": 3})
    assert isinstance(cmd, model.Drain) and cmd == model.Drain("p", "b", 3.0)
    assert isinstance(cmd.timeout_s, float)


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "expected an object"),
        ({"proxy": "p"}, "command.type"),
        ({"type": "Explode"}, "unknown command 'Explode'"),
        ({"type": "SetWeight", "proxy": "p", "backend": "b"}, "missing field 'weight'"),
        ({"type": "SetWeight", "proxy": "p", "backend": "b", "weight": True}, "expected an integer"),
        ({"type": "SetWeight", "proxy": "p", "backend": "b", "weight": 1.5}, "expected an integer"),
        ({"type": "SetWeight", "proxy": "p", "backend": "b", "weight": "3"}, "command.weight"),
        ({"type": "SetWeight", "proxy": 1, "backend": "b", "weight": 3}, "command.proxy: expected a string"),
        ({"type": "Undrain", "proxy": "p", "backend": "b", "force": True}, "unknown field(s) 'force'"),
        ({"type": "Drain", "proxy": "p", "backend": "b", "timeout_s": "soon"}, "command.timeout_s"),
        ({"type": "Drain", "proxy": "p", "backend": "b", "timeout_s": False}, "command.timeout_s"),
        ({"type": "Stop", "now": 1}, "unknown field"),
        ({"type": "Drain", "proxy": "p", "backend": "b", "timeout_s": "inf"}, "expected a finite number"),
    ],
)
def test_bad_commands_are_refused_with_a_clear_message(data: object, message: str):
    with pytest.raises(wire.WireError, match=None) as info:
        wire.decode_command(data)
    assert message in str(info.value)


def test_snapshot_decoding_ignores_new_fields_but_checks_types(engine: ConsoleEngine):
    data = roundtrip(engine.snapshot())
    data["added_by_a_newer_server"] = 1  # type: ignore[index]
    assert wire.decode_snapshot(data) == engine.snapshot()
    data["services"][0]["backends"][0]["health"] = "sideways"  # type: ignore[index]
    with pytest.raises(wire.WireError, match=r"snapshot\.services\[0\]\.backends\[0\]\.health"):
        wire.decode_snapshot(data)


# ---- server and client ---------------------------------------------------------------------------


def test_client_reads_snapshots_and_events_and_runs_commands(
    engine: ConsoleEngine, client: SocketEngineHandle
):
    assert client.snapshot() == engine.snapshot()
    assert client.instance["pid"] == os.getpid() and client.instance["mode"] == "test"
    assert client.instance["protocol"] == wire.PROTOCOL_VERSION

    ok = client.submit(model.Drain("web", "10.0.2.11:8080", 5.0))
    assert ok.ok, ok.message
    assert engine.commands[-1] == model.Drain("web", "10.0.2.11:8080", 5.0)
    refused = client.submit(model.Drain("web", "10.9.9.9:1"))
    assert refused == model.CommandResult(False, "proxy 'web' has no backend 10.9.9.9:1")
    snap = client.snapshot()
    backend = snap.backend("web", "10.0.2.11:8080")
    assert backend is not None and backend.drain is model.DrainState.DRAINING

    events = client.events_since(0)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events == list(engine.events_since(0))
    assert client.events_since(events[-1].seq) == []
    assert len(client.events_since(0, limit=2)) == 2


def test_flow_queries_reach_the_engine_and_bad_ones_are_refused(
    engine: ConsoleEngine, client: SocketEngineHandle, server: ControlServer
):
    query = model.FlowQuery(text="192.168 web", sort="age")
    client.snapshot(query)
    assert engine.flow_queries[-1] == query
    engine.sweep()
    snap = client.snapshot(query)
    assert snap.flow_query == query and len(snap.flows) == 4 and snap.flows_matched == 4
    assert all("192.168" in f.client for f in snap.flows)
    client.snapshot()
    assert engine.flow_queries[-1] is None  # the default view is asked for without a query
    client.snapshot(model.FlowQuery())  # an attached console's conntrack pane, unfiltered
    assert engine.flow_queries[-1] == model.FlowQuery()  # asking is what makes the engine read flows
    for flows, message in (
        ({"text": "x", "sort": "size"}, "flows: unknown sort 'size'"),
        ({"text": "x" * 201}, "flows: filter text longer than 200"),
        ({"text": 5}, "flows.text: expected"),
        ({"txt": "x"}, "flows: unknown field(s) 'txt'"),
        ("web", "flows: expected an object"),
    ):
        reply = request(server.path, op="snapshot", flows=flows)
        assert not reply["ok"] and message in reply["error"], (flows, reply)
    assert client.snapshot().running


def test_client_is_thread_safe(engine: ConsoleEngine, client: SocketEngineHandle):
    expected = engine.snapshot()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                assert client.snapshot() == expected
                assert client.events_since(0)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors


def test_client_reconnects_after_the_instance_restarts(engine: ConsoleEngine, sock_dir: str):
    path = os.path.join(sock_dir, "lbtui.sock")
    first = ControlServer(engine, path)
    first.start()
    client = SocketEngineHandle(path)
    try:
        assert client.snapshot().running
        first.stop()
        with pytest.raises(ConnectionError, match="no lbtui instance is running"):
            client.snapshot()
        second = ControlServer(engine, path)
        second.start()
        try:
            assert client.snapshot() == engine.snapshot()
            assert client.submit(model.Undrain("web", "10.0.2.13:8080")) == model.CommandResult(
                True, "10.0.2.13:8080 back in rotation"
            )
        finally:
            second.stop()
    finally:
        client.close()


def test_no_instance_gives_a_clear_connection_error(sock_dir: str):
    client = SocketEngineHandle(os.path.join(sock_dir, "none.sock"))
    with pytest.raises(ConnectionError, match=r"cannot connect to .*none\.sock: no lbtui instance"):
        client.snapshot()
    result_or_error = None
    with pytest.raises(ConnectionError):
        result_or_error = client.submit(model.Stop())
    assert result_or_error is None


def test_a_slow_command_does_not_hold_up_other_clients(engine: ConsoleEngine, server: ControlServer):
    release = threading.Event()
    entered = threading.Event()
    fast_submit = engine.submit

    def slow_submit(command: model.Command, timeout: float = 10.0) -> model.CommandResult:
        if isinstance(command, model.Reload):
            entered.set()
            release.wait(30)
        return fast_submit(command, timeout)

    engine.submit = slow_submit  # type: ignore[method-assign]
    slow = SocketEngineHandle(server.path)
    other = SocketEngineHandle(server.path)
    results: list[model.CommandResult] = []
    t = threading.Thread(target=lambda: results.append(slow.submit(model.Reload(), timeout=60)))
    t.start()
    try:
        assert entered.wait(10)
        assert other.snapshot() == engine.snapshot()  # answered while the reload is still running
        assert other.submit(model.SetWeight("web", "10.0.2.12:8080", 4)).ok
    finally:
        release.set()
        t.join(30)
        slow.close()
        other.close()
    assert results and results[0].ok


def test_engine_errors_become_error_replies(engine: ConsoleEngine, client: SocketEngineHandle):
    engine.snapshot_error = RuntimeError("maps unreadable")
    with pytest.raises(RemoteError, match="maps unreadable"):
        client.snapshot()
    engine.snapshot_error = None
    assert client.snapshot() == engine.snapshot()  # same connection, still serving


def test_request_level_errors(server: ControlServer):
    assert request(server.path, op="hello")["result"]["pid"] == os.getpid()
    reply = request(server.path, op="frobnicate")
    assert reply == {"v": 1, "id": 1, "ok": False, "error": reply["error"]}
    assert "unknown op 'frobnicate'" in reply["error"]
    assert "protocol version 2" in request(server.path, v=2, op="hello")["error"]
    assert "since" in request(server.path, op="events", since=-1)["error"]
    assert "since" in request(server.path, op="events", since=True)["error"]
    assert "timeout" in request(server.path, op="command", command={"type": "Stop"}, timeout=0)["error"]
    bad = request(server.path, op="command", command={"type": "SetWeight", "proxy": "web"})
    assert not bad["ok"] and "missing field 'backend'" in bad["error"]
    # pipelined requests are answered in order on one connection
    lines = raw_exchange(
        server.path, b'{"id":1,"op":"hello"}\n\n{"id":"two","op":"nope"}\nnot json\n{"id":4,"op":"snapshot"}'
    )
    replies = [json.loads(line) for line in lines]
    assert [r["id"] for r in replies] == [1, "two", None, 4]
    assert [r["ok"] for r in replies] == [True, False, False, True]


def test_idle_connection_is_closed_and_the_client_reconnects(engine: ConsoleEngine, sock_dir: str):
    srv = ControlServer(engine, os.path.join(sock_dir, "lbtui.sock"), idle_timeout_s=0.2)
    srv.start()
    try:
        lines = raw_exchange(srv.path, b"")  # sends nothing: the server says why and closes
        assert lines == [] or "idle" in json.loads(lines[0])["error"]
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(srv.path)
        notice = json.loads(s.makefile("rb").readline())
        assert notice["id"] is None and "idle" in notice["error"]
        s.close()

        client = SocketEngineHandle(srv.path)
        assert client.snapshot().running
        assert wait_until(lambda: srv.clients == 0)  # the server dropped the idle client
        assert client.snapshot() == engine.snapshot()  # transparently on a new connection
        assert client.submit(model.SetWeight("web", "10.0.2.11:8080", 2)).ok
        assert wait_until(lambda: srv.clients == 0)
        # a command is sent again only because the server closed before reading it
        assert client.submit(model.SetWeight("web", "10.0.2.11:8080", 3)).ok
        assert [c for c in engine.commands if isinstance(c, model.SetWeight)] == [
            model.SetWeight("web", "10.0.2.11:8080", 2),
            model.SetWeight("web", "10.0.2.11:8080", 3),
        ]
        client.close()
    finally:
        srv.stop()


def test_too_many_clients_get_an_error_and_are_closed(engine: ConsoleEngine, sock_dir: str):
    srv = ControlServer(engine, os.path.join(sock_dir, "lbtui.sock"), max_clients=3)
    srv.start()
    clients = [SocketEngineHandle(srv.path) for _ in range(3)]
    try:
        for c in clients:
            c.hello()
        assert srv.clients == 3
        lines = raw_exchange(srv.path, b'{"id":1,"op":"hello"}\n')
        assert len(lines) == 1
        reply = json.loads(lines[0])
        assert reply["ok"] is False and "too many clients" in reply["error"]
        with pytest.raises(ConnectionError, match="too many clients"):
            SocketEngineHandle(srv.path).snapshot()
        clients[0].close()
        assert wait_until(lambda: srv.clients == 2)
        assert SocketEngineHandle(srv.path).snapshot() == engine.snapshot()
    finally:
        for c in clients:
            c.close()
        srv.stop()


# ---- robustness: 1,000 malformed requests from 50 clients at once --------------------------------


def malformed_payloads(n: int, seed: int = 1234) -> list[bytes]:
    rng = random.Random(seed)
    fixed = [
        b"\n",
        b"{\n",
        b"}{\n",
        b"null\n",
        b"42\n",
        b'"hello"\n',
        b"[1,2,3]\n",
        b'{"op":"hello"\n',
        b'{"op": "snapshot", "id": [1]}\n',
        b'{"op": "snapshot", "id": 1.5}\n',
        b'{"op": "events", "since": "x"}\n',
        b'{"op": "events", "since": 1e999}\n',
        b'{"op": "events", "limit": -5}\n',
        b'{"op": "command"}\n',
        b'{"op": "command", "command": 1}\n',
        b'{"op": "command", "command": {"type": "SetWeight", "proxy": "web", "backend": 1, "weight": 1}}\n',
        b'{"op": "command", "command": {"type": "Drain", "proxy": "w", "backend": "x", "timeout_s": "N"}}\n',
        b'{"op": "command", "command": {"type": "Stop", "extra": true}}\n',
        b'{"op": "command", "command": {"type": "__class__"}}\n',
        b'{"op": "command", "command": {"type": "Reload", "path": ["a"]}}\n',
        b'{"op": null}\n',
        b'{"v": "1", "op": "hello"}\n',
        b'{"v": 1, "op": "hello", "id": ' + b"9" * 5000 + b"}\n",
        b"[" * 50_000 + b"]" * 10_000 + b"\n",
        b"\xff\xfe\xfd garbage \x00\x01\n",
        b'{"op": "\xc3\x28"}\n',
        b"x" * 70_000 + b"\n",  # longer than the 64 KiB limit
        b"y" * 200_000,  # huge, and no newline at all
        b'{"op": "hello"}',  # fine, but no newline before EOF
    ]
    ops: list[object] = ["hello", "snapshot", "events", "command", "", "HELLO", "stop", None, 1, [], {}]
    out = list(fixed)
    while len(out) < n:
        kind = rng.randrange(5)
        if kind == 0:  # random bytes, sometimes with newlines inside
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) + b"\n")
        elif kind == 1:  # truncated / mangled JSON
            text = json.dumps({"v": 1, "id": rng.randrange(100), "op": rng.choice(ops)})
            cut = rng.randrange(1, len(text))
            out.append((text[:cut] + rng.choice(["", "}", "]", '"', ",,"])).encode() + b"\n")
        elif kind == 2:  # well-formed JSON, wrong shapes and types
            req = {
                "v": rng.choice([1, 0, 2, "1", None, True]),
                "id": rng.choice([1, "a", None, 2.5, [], {}]),
                "op": rng.choice(ops),
                "since": rng.choice([0, -1, "0", None, 10**30, 1.5]),
                "limit": rng.choice([0, -1, 10**9, "x"]),
            }
            out.append(json.dumps(req).encode() + b"\n")
        elif kind == 3:  # commands with wrong fields or types (never a valid one)
            name = rng.choice([*model.COMMAND_TYPES, "Nope", "", None, 3])
            fields: dict[str, object] = {
                rng.choice(["proxy", "backend", "weight", "timeout_s", "path", "junk"]): rng.choice(
                    [True, None, [], {}, 1.5, -1, "x" * rng.randrange(50)]
                )
                for _ in range(rng.randrange(1, 4))
            }
            fields["junk"] = 1  # an unknown field makes every command invalid
            out.append(
                json.dumps({"v": 1, "id": 9, "op": "command", "command": {"type": name, **fields}}).encode()
                + b"\n"
            )
        else:  # long lines around the limit
            size = rng.choice([60_000, 65_535, 65_536, 65_537, 100_000])
            out.append(b'{"op":"hello","pad":"' + b"p" * size + b'"}\n')
    return out[:n]


def test_malformed_requests_from_many_clients_never_crash_or_hang(
    engine: ConsoleEngine, server: ControlServer
):
    payloads = malformed_payloads(1000)
    assert len(payloads) == 1000
    # warm up both thread pools so the counts below compare like with like
    warm = SocketEngineHandle(server.path)
    assert warm.snapshot() == engine.snapshot()
    assert warm.submit(model.SetWeight("web", "10.0.2.12:8080", 2)).ok
    warm.close()
    expected = engine.snapshot()
    commands_before = len(engine.commands)
    assert wait_until(lambda: server.clients == 0)
    fds_before, threads_before, rss_before = open_fds(), threading.active_count(), rss_kib()

    errors: list[str] = []
    outcomes = {"replied": 0, "closed": 0}
    lock = threading.Lock()
    start = threading.Barrier(50)

    def client(index: int) -> None:
        start.wait(30)
        try:
            for payload in payloads[index::50]:
                lines = raw_exchange(server.path, payload)
                for line in lines:
                    reply = json.loads(line)
                    if reply.get("v") != 1 or not isinstance(reply.get("ok"), bool):
                        errors.append(f"bad reply {line[:200]!r}")
                    if reply["ok"] is False and not reply.get("error"):
                        errors.append(f"error without a message {line[:200]!r}")
                with lock:
                    outcomes["replied" if lines else "closed"] += 1
            # a persistent connection still works after all that
            handle = SocketEngineHandle(server.path)
            try:
                if handle.snapshot() != expected:
                    errors.append("snapshot changed")
            finally:
                handle.close()
        except Exception as exc:  # collected and reported below
            errors.append(f"client {index}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert not errors, errors[:5]
    assert outcomes["replied"] + outcomes["closed"] == 1000
    assert outcomes["replied"] >= 990  # only empty/blank payloads go without an answer

    # the engine was not touched by any of it, and still answers
    assert len(engine.commands) == commands_before
    after = SocketEngineHandle(server.path)
    assert after.snapshot() == expected
    assert after.submit(model.Undrain("web", "10.0.2.11:8080")).message == "10.0.2.11:8080 back in rotation"
    after.close()

    # bounded: every connection's fd is closed again, no thread per client, memory about the same
    assert wait_until(lambda: server.clients == 0)
    assert wait_until(lambda: open_fds() <= fds_before + 2), (open_fds(), fds_before)
    pool_threads = [t for t in threading.enumerate() if t.name.startswith("lbtui-ctl-")]
    assert len(pool_threads) <= 8  # two pools of four, however many clients came
    assert threading.active_count() <= threads_before + 8 - 2
    assert rss_kib() - rss_before < 64 * 1024


def test_server_survives_clients_that_vanish_mid_request(engine: ConsoleEngine, server: ControlServer):
    accepted = server.accepted
    for i in range(100):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(server.path)
        s.sendall(b'{"op":"snapshot","id":%d}\n' % i if i % 2 else b'{"op":"snap')
        s.close()  # before reading the reply
    assert wait_until(lambda: server.accepted == accepted + 100 and server.clients == 0)
    assert SocketEngineHandle(server.path).snapshot() == engine.snapshot()


# ---- the socket file -------------------------------------------------------------------------------


def test_socket_is_0600_in_a_0700_directory_and_removed_on_stop(engine: ConsoleEngine, sock_dir: str):
    path = os.path.join(sock_dir, "run", "lbtui", "lbtui.sock")
    srv = ControlServer(engine, path)
    srv.start()
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.geteuid()
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    finally:
        srv.stop()
    assert not os.path.exists(path)


def test_stale_socket_is_replaced(engine: ConsoleEngine, sock_dir: str):
    path = os.path.join(sock_dir, "lbtui.sock")
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(path)
    crashed.close()  # a crash leaves the file behind, with nobody listening
    assert os.path.exists(path)
    srv = ControlServer(engine, path)
    srv.start()
    try:
        assert SocketEngineHandle(path).snapshot() == engine.snapshot()
    finally:
        srv.stop()


def test_live_socket_is_not_taken_over(engine: ConsoleEngine, server: ControlServer):
    second = ControlServer(engine, server.path)
    with pytest.raises(SocketInUse, match=rf"is used by a running lbtui \(pid {os.getpid()}\)"):
        second.start()
    # the first instance is untouched
    assert os.path.exists(server.path)
    assert SocketEngineHandle(server.path).snapshot() == engine.snapshot()


def test_a_path_that_is_not_a_socket_is_left_alone(engine: ConsoleEngine, sock_dir: str):
    path = os.path.join(sock_dir, "lbtui.sock")
    Path(path).write_text("not a socket")
    with pytest.raises(SocketInUse, match="is not a socket"):
        ControlServer(engine, path).start()
    assert Path(path).read_text() == "not a socket"


def test_another_listener_on_the_path_is_not_taken_over(engine: ConsoleEngine, sock_dir: str):
    path = os.path.join(sock_dir, "lbtui.sock")
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(path)
    other.listen(1)

    def answer_garbage() -> None:
        conn, _ = other.accept()
        conn.recv(1000)
        conn.sendall(b"220 hello from something else\n")
        conn.close()

    t = threading.Thread(target=answer_garbage)
    t.start()
    try:
        with pytest.raises(SocketInUse, match="in use by another process"):
            ControlServer(engine, path).start()
    finally:
        t.join(10)
        other.close()
    assert os.path.exists(path)


def test_stop_leaves_a_newer_instances_socket_alone(engine: ConsoleEngine, sock_dir: str):
    path = os.path.join(sock_dir, "lbtui.sock")
    old = ControlServer(engine, path)
    old.start()
    os.unlink(path)  # e.g. an operator removed it and a new instance started
    new = ControlServer(engine, path)
    new.start()
    try:
        old.stop()
        assert os.path.exists(path)
        assert SocketEngineHandle(path).snapshot() == engine.snapshot()
    finally:
        new.stop()
    assert not os.path.exists(path)


@pytest.mark.root
@pytest.mark.requires("setpriv")
def test_other_users_are_refused_even_if_the_socket_mode_is_opened(
    engine: ConsoleEngine, server: ControlServer
):
    import subprocess
    import sys

    # someone chmods the socket and its directory open: the peer check still refuses other uids
    os.chmod(os.path.dirname(server.path), 0o755)
    os.chmod(server.path, 0o666)
    code = (
        "import sys; from lbtui.control_client import SocketEngineHandle as H\n"
        "try:\n    H(sys.argv[1]).snapshot()\nexcept ConnectionError as e:\n    print(e); sys.exit(3)\n"
    )
    out = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            code,
            server.path,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 3, out
    assert "permission denied" in out.stdout


# ---- limits: per-client rate, counted refusals ----------------------------------------------------


def test_a_client_flooding_requests_is_held_to_its_rate_and_others_are_served(
    engine: ConsoleEngine, server: ControlServer
):
    """600 pipelined requests on one connection: the first 200 (the burst) are answered, then the
    connection is read no faster than 100 requests/s and what goes over is refused, with a reply
    each and a count; another client is served meanwhile."""
    n = 600
    results: dict[str, list[bytes]] = {}
    payload = b"".join(json.dumps({"id": i, "op": "hello"}).encode() + b"\n" for i in range(n))
    flood = threading.Thread(target=lambda: results.setdefault("lines", raw_exchange(server.path, payload)))
    flood.start()
    time.sleep(0.3)
    assert request(server.path, op="hello")["ok"] is True  # a polite client is not held up
    flood.join(30)
    replies = [json.loads(line) for line in results["lines"]]
    assert len(replies) == n  # every request has its answer: nothing silently dropped
    refused = [r for r in replies if not r["ok"]]
    assert all(r["error"].startswith("rate limit: at most 100 requests per second") for r in refused)
    assert all(r["ok"] for r in replies[:200])
    assert len(refused) >= (n - 200) // 3
    hello = request(server.path, op="hello")["result"]
    assert hello["refusals"]["rate_limited"] == len(refused)


def test_refusals_are_counted_by_reason(engine: ConsoleEngine, sock_dir: str):
    srv = ControlServer(engine, os.path.join(sock_dir, "lbtui.sock"), max_clients=1, max_line=1024)
    srv.start()
    try:
        held = SocketEngineHandle(srv.path)
        held.hello()
        assert json.loads(raw_exchange(srv.path, b'{"op":"hello"}\n')[0])["ok"] is False  # a second client
        held.close()
        assert wait_until(lambda: srv.clients == 0)
        long_line = json.loads(raw_exchange(srv.path, b'{"op":"hello","x":"' + b"x" * 2000 + b'"}\n')[0])
        assert "request longer than 1024 bytes" in long_line["error"]
        last = SocketEngineHandle(srv.path)
        counts = last.hello()["refusals"]
        last.close()
        assert counts == {
            "too_many_clients": 1,
            "permission": 0,
            "request_too_long": 1,
            "rate_limited": 0,
            "idle": 0,
        }
    finally:
        srv.stop()
