# SPDX-License-Identifier: Apache-2.0
"""Health checks of IPv6 backends over ::1 (tests/e2e/test_health_ipv6.py checks across a real IPv6 link):
TCP connects, HTTP GETs with the Host header in brackets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from lbtui.control import health
from lbtui.control.health import Target, check_http, check_tcp, run_check
from tests.unit.test_health import HCfg

LOOPBACK6 = "::1"


@dataclass(frozen=True)
class CheckPortCfg(HCfg):
    port: int | None = None


@contextlib.asynccontextmanager
async def http_server6(status: int, requests: list[bytes]) -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(f"HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, LOOPBACK6, 0, family=socket.AF_INET6)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def closed_port6() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind((LOOPBACK6, 0))
        return int(s.getsockname()[1])


def test_tcp_check_of_an_ipv6_backend() -> None:
    async def main() -> tuple[health.CheckResult, health.CheckResult]:
        async with http_server6(200, []) as port:
            up = await check_tcp(LOOPBACK6, port, 2.0)
        return up, await check_tcp(LOOPBACK6, closed_port6(), 2.0)

    up, refused = asyncio.run(main())
    assert up.ok and up.detail == "connected"
    assert not refused.ok and refused.detail == "connection refused"


def test_http_check_of_an_ipv6_backend_brackets_the_host_header() -> None:
    requests: list[bytes] = []

    async def main() -> tuple[health.CheckResult, health.CheckResult]:
        async with http_server6(200, requests) as port:
            ok = await check_http(LOOPBACK6, port, "/healthz", None, [200], 2.0)
            named = await check_http(LOOPBACK6, port, "/", "www.example.com", [200], 2.0)
        return ok, named

    ok, named = asyncio.run(main())
    assert ok.ok and ok.detail == "HTTP 200" and named.ok
    port = int(requests[0].split(b"Host: [::1]:")[1].split(b"\r\n")[0])
    assert requests[0].startswith(b"GET /healthz HTTP/1.1\r\n")
    assert f"\r\nHost: [::1]:{port}\r\n".encode() in requests[0]
    assert b"\r\nHost: www.example.com\r\n" in requests[1]


@pytest.mark.parametrize(
    ("ip", "port", "host"),
    [
        ("fd00:20::11", 80, "[fd00:20::11]"),
        ("fd00:20::11", 8080, "[fd00:20::11]:8080"),
        ("10.0.2.11", 80, "10.0.2.11"),
    ],
)
def test_the_default_host_header(monkeypatch: pytest.MonkeyPatch, ip: str, port: int, host: str) -> None:
    sent: list[bytes] = []

    async def status_line(_ip: str, _port: int, request: bytes, _tunnel: object) -> bytes:
        sent.append(request)
        return b"HTTP/1.1 200 OK\r\n"

    monkeypatch.setattr(health, "_http_status_line", status_line)
    assert asyncio.run(check_http(ip, port, "/", None, [200], 1.0)).ok
    assert f"\r\nHost: {host}\r\n".encode() in sent[0]


def test_run_check_of_an_ipv6_target_on_its_health_port() -> None:
    requests: list[bytes] = []

    async def main() -> health.CheckResult:
        async with http_server6(204, requests) as port:
            cfg = CheckPortCfg(type="http", expected_status=(204,), port=port)
            return await run_check(Target(LOOPBACK6, 1, cfg))  # the service port (1) is not checked

    result = asyncio.run(main())
    assert result.ok and result.detail == "HTTP 204"
    assert b"Host: [::1]:" in requests[0]
