# SPDX-License-Identifier: Apache-2.0
import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from lbtui.control.health import (
    MIN_RAMP,
    CheckResult,
    HealthChecker,
    HealthTracker,
    Target,
    check_http,
    check_tcp,
    run_check,
)
from lbtui.model import Health

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class HCfg:
    type: str = "tcp"
    path: str = "/healthz"
    http_host: str | None = None
    interval_ms: int = 20
    timeout_ms: int = 1000
    rise: int = 1
    fall: int = 1
    expected_status: tuple[int, ...] = (200,)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def closed_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def tcp_server() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def http_server(status: int | None, requests: list[bytes] | None = None) -> AsyncIterator[int]:
    """A tiny HTTP server answering every request with `status`; None: read the request, never answer."""
    release = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            if requests is not None:
                requests.append(request)
            if status is None:
                await release.wait()
            else:
                writer.write(f"HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        release.set()
        server.close()
        await server.wait_closed()


# ---- single checks ------------------------------------------------------------------------------


def test_check_tcp_up():
    async def main() -> CheckResult:
        async with tcp_server() as port:
            return await check_tcp(LOOPBACK, port, 2.0)

    result = asyncio.run(main())
    assert result.ok
    assert result.detail == "connected"
    assert result.latency_s >= 0


def test_check_tcp_refused():
    result = asyncio.run(check_tcp(LOOPBACK, closed_port(), 2.0))
    assert not result.ok
    assert result.detail == "connection refused"


def test_check_http_200_and_request_shape():
    requests: list[bytes] = []

    async def main() -> CheckResult:
        async with http_server(200, requests) as port:
            return await check_http(LOOPBACK, port, "/healthz", "www.example.com", [200], 2.0)

    result = asyncio.run(main())
    assert result.ok
    assert result.detail == "HTTP 200"
    [request] = requests
    assert request.startswith(b"GET /healthz HTTP/1.1\r\n")
    assert b"\r\nHost: www.example.com\r\n" in request
    assert b"\r\nConnection: close\r\n" in request


def test_check_http_default_host_is_backend_address():
    requests: list[bytes] = []

    async def main() -> int:
        async with http_server(200, requests) as port:
            await check_http(LOOPBACK, port, "/", None, [200], 2.0)
            return port

    port = asyncio.run(main())
    assert f"\r\nHost: {LOOPBACK}:{port}\r\n".encode() in requests[0]


def test_check_http_503_is_down():
    async def main() -> CheckResult:
        async with http_server(503) as port:
            return await check_http(LOOPBACK, port, "/", None, [200, 204], 2.0)

    result = asyncio.run(main())
    assert not result.ok
    assert result.detail == "HTTP 503 (expected 200,204)"


def test_check_http_expected_other_status():
    async def main() -> CheckResult:
        async with http_server(503) as port:
            return await check_http(LOOPBACK, port, "/", None, [503], 2.0)

    assert asyncio.run(main()).ok


def test_check_http_timeout():
    async def main() -> CheckResult:
        async with http_server(None) as port:
            return await check_http(LOOPBACK, port, "/", None, [200], 0.2)

    result = asyncio.run(main())
    assert not result.ok
    assert result.detail == "timeout after 0.2s"


def test_check_http_refused():
    result = asyncio.run(check_http(LOOPBACK, closed_port(), "/", None, [200], 2.0))
    assert not result.ok
    assert result.detail == "connection refused"


def test_check_http_garbage_status_line():
    async def main() -> CheckResult:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"SSH-2.0-OpenSSH\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, LOOPBACK, 0)
        try:
            return await check_http(LOOPBACK, server.sockets[0].getsockname()[1], "/", None, [200], 2.0)
        finally:
            server.close()
            await server.wait_closed()

    result = asyncio.run(main())
    assert not result.ok
    assert result.detail.startswith("bad status line")


# ---- HealthTracker ------------------------------------------------------------------------------


def test_tracker_starts_unknown_with_full_factor():
    tracker = HealthTracker(rise=2, fall=3, clock=FakeClock())
    assert tracker.health is Health.UNKNOWN
    assert tracker.factor == 1.0


def test_tracker_fall_then_rise():
    tracker = HealthTracker(rise=2, fall=3, clock=FakeClock())
    assert tracker.observe(False) is None
    assert tracker.observe(False) is None
    assert tracker.factor == 1.0  # still unknown: traffic continues until the fall
    assert tracker.observe(False) == (Health.UNKNOWN, Health.DOWN)
    assert tracker.factor == 0.0
    assert tracker.observe(False) is None
    assert tracker.observe(True) is None
    assert tracker.observe(True) == (Health.DOWN, Health.UP)
    assert tracker.factor == 1.0  # no slow start configured


def test_tracker_unknown_to_up_after_rise():
    tracker = HealthTracker(rise=2, fall=3, clock=FakeClock())
    assert tracker.observe(True) is None
    assert tracker.observe(True) == (Health.UNKNOWN, Health.UP)
    assert tracker.observe(True) is None


def test_tracker_streaks_reset_on_flap():
    tracker = HealthTracker(rise=2, fall=2, clock=FakeClock())
    tracker.observe(True)
    tracker.observe(True)
    assert tracker.observe(False) is None
    assert tracker.observe(True) is None  # the failure streak restarted
    assert tracker.observe(False) is None
    assert tracker.observe(False) == (Health.UP, Health.DOWN)
    assert tracker.observe(True) is None
    assert tracker.observe(False) is None
    assert tracker.consecutive_failures == 1


def test_tracker_slow_start_ramp():
    clock = FakeClock()
    tracker = HealthTracker(rise=1, fall=1, slow_start_s=10.0, clock=clock)
    tracker.observe(False)
    assert tracker.observe(True) == (Health.DOWN, Health.UP)
    assert tracker.in_slow_start
    assert tracker.factor == MIN_RAMP
    clock.t += 4
    assert abs(tracker.factor - 0.4) < 1e-9
    clock.t += 6
    assert tracker.factor == 1.0
    assert not tracker.in_slow_start


def test_tracker_no_slow_start_from_unknown():
    tracker = HealthTracker(rise=1, fall=1, slow_start_s=10.0, clock=FakeClock())
    tracker.observe(True)
    assert tracker.health is Health.UP
    assert tracker.factor == 1.0


def test_tracker_down_during_ramp_stops_it():
    clock = FakeClock()
    tracker = HealthTracker(rise=1, fall=1, slow_start_s=10.0, clock=clock)
    tracker.observe(False)
    tracker.observe(True)
    clock.t += 5
    tracker.observe(False)
    assert tracker.factor == 0.0
    tracker.observe(True)
    assert tracker.factor == MIN_RAMP  # the ramp starts again


# ---- HealthChecker ------------------------------------------------------------------------------


def test_checker_reports_results_and_stops_cleanly():
    results: dict[str, list[tuple[CheckResult, object]]] = {}

    async def main() -> None:
        enough = asyncio.Event()

        def on_result(key: str, result: CheckResult, change: object) -> None:
            results.setdefault(key, []).append((result, change))
            if all(len(results.get(k, [])) >= 3 for k in ("tcp", "http", "dead")):
                enough.set()

        async with tcp_server() as tcp_port, http_server(200) as http_port:
            checker = HealthChecker(on_result, rng=random.Random(7))
            checker.set_targets(
                {
                    "tcp": Target(LOOPBACK, tcp_port, HCfg()),
                    "http": Target(LOOPBACK, http_port, HCfg(type="http")),
                    "dead": Target(LOOPBACK, closed_port(), HCfg()),
                }
            )
            await asyncio.wait_for(enough.wait(), 10)
            tracker = checker.tracker("dead")
            assert tracker is not None and tracker.health is Health.DOWN

            checker.set_targets({"tcp": Target(LOOPBACK, tcp_port, HCfg())})
            assert checker.keys() == ["tcp"]
            assert checker.tracker("http") is None
            await checker.close()
            assert checker.keys() == []

            seen = sum(len(v) for v in results.values())
            await asyncio.sleep(0.1)
            assert sum(len(v) for v in results.values()) == seen  # nothing runs after close
        # Every check task has finished: nothing left for asyncio.run to cancel.
        assert [t for t in asyncio.all_tasks() if t.get_name().startswith("health ")] == []

    asyncio.run(main())

    assert all(r.ok for r, _ in results["tcp"])
    assert all(r.ok and r.detail == "HTTP 200" for r, _ in results["http"])
    assert not any(r.ok for r, _ in results["dead"])
    # rise = fall = 1: the first result is the change, later ones report none.
    assert results["tcp"][0][1] == (Health.UNKNOWN, Health.UP)
    assert results["dead"][0][1] == (Health.UNKNOWN, Health.DOWN)
    assert all(change is None for _, change in results["http"][1:])


def test_checker_keeps_state_when_only_config_changes():
    async def main() -> None:
        changes: list[object] = []
        down = asyncio.Event()

        def on_result(key: str, result: CheckResult, change: object) -> None:
            changes.append(change)
            if change == (Health.UNKNOWN, Health.DOWN):
                down.set()

        port = closed_port()
        checker = HealthChecker(on_result, rng=random.Random(1))
        checker.set_targets({"b": Target(LOOPBACK, port, HCfg())})
        await asyncio.wait_for(down.wait(), 10)
        before = checker.tracker("b")
        checker.set_targets({"b": Target(LOOPBACK, port, replace(HCfg(), rise=5, fall=5))})
        after = checker.tracker("b")
        assert after is before
        assert after is not None and after.health is Health.DOWN and after.rise == 5
        await checker.close()

    asyncio.run(main())


def test_checker_callback_errors_do_not_stop_checks():
    async def main() -> int:
        calls = 0
        enough = asyncio.Event()

        def on_result(key: str, result: CheckResult, change: object) -> None:
            nonlocal calls
            calls += 1
            if calls >= 3:
                enough.set()
            raise RuntimeError("boom")

        async with tcp_server() as port:
            checker = HealthChecker(on_result)
            checker.set_targets({"a": Target(LOOPBACK, port, HCfg())})
            await asyncio.wait_for(enough.wait(), 10)
            await checker.close()
        return calls

    assert asyncio.run(main()) >= 3


@dataclass(frozen=True)
class HCfgWithPort(HCfg):
    port: int | None = None


def test_run_check_uses_config_port_when_set():
    async def main() -> tuple[CheckResult, CheckResult]:
        async with tcp_server() as port:
            dead = closed_port()
            overridden = await run_check(Target(LOOPBACK, dead, HCfgWithPort(port=port)))
            plain = await run_check(Target(LOOPBACK, dead, HCfgWithPort()))
            return overridden, plain

    overridden, plain = asyncio.run(main())
    assert overridden.ok
    assert not plain.ok
