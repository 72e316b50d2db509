# SPDX-License-Identifier: Apache-2.0
"""The metrics HTTP endpoint against real sockets: idle and slow clients cannot keep a scrape out."""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Iterator

import pytest

from lbtui import model
from lbtui.observe.metrics import Metrics
from lbtui.observe.scrape import ScrapeServer
from tests.support.snapshots import bare_snapshot


def _snapshot() -> model.Snapshot:
    return bare_snapshot(taken_at=1.0, config_path=None)


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics(_snapshot, version="1.2.3")
    m.start("127.0.0.1:0", "/metrics")
    yield m
    m.stop()


def _address(m: Metrics) -> tuple[str, int]:
    address = m.server_address
    assert address is not None
    return address


def _request(sock: socket.socket, head: str) -> bytes:
    """Send one request head, read one response (headers and the Content-Length body)."""
    sock.sendall(head.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in top.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    if not head.startswith("HEAD"):
        while len(body) < length:
            body += sock.recv(65536)
    return top + b"\r\n\r\n" + body


def scrape(address: tuple[str, int], timeout: float) -> tuple[bytes, float]:
    t0 = time.monotonic()
    with socket.create_connection(address, timeout=timeout) as sock:
        response = _request(sock, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return response, time.monotonic() - t0


def test_a_scrape_gets_in_past_500_idle_connections(metrics: Metrics) -> None:
    address = _address(metrics)
    idle = []
    try:
        for _ in range(500):  # connect and say nothing, as an idle keep-alive or a stuck client does
            idle.append(socket.create_connection(address, timeout=5))
        server = metrics.server
        assert server is not None
        response, _took = scrape(address, timeout=1.0)  # the bound: answered within 1 s
        assert response.startswith(b"HTTP/1.1 200 ")
        assert b'lbtui_build_info{version="1.2.3"} 1.0' in response
        assert server.open_connections <= server.max_connections
        assert server.evicted >= 500 - server.max_connections
    finally:
        for sock in idle:
            sock.close()


def test_slowloris_heads_do_not_keep_a_scrape_out(metrics: Metrics) -> None:
    address = _address(metrics)
    slow = []
    try:
        for _ in range(100):
            sock = socket.create_connection(address, timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: ")  # and never the rest
            slow.append(sock)
        response, _took = scrape(address, timeout=1.0)
        assert response.startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in slow:
            sock.close()


def test_a_silent_connection_is_closed_after_the_header_timeout() -> None:
    server = ScrapeServer(lambda accept: (b"x\n", "text/plain"), "/metrics", header_timeout_s=0.3)
    server.start("127.0.0.1", 0)
    try:
        address = server.address
        assert address is not None
        with socket.create_connection(address, timeout=5) as sock:
            assert sock.recv(10) == b""  # the server hung up: no request within 0.3 s
    finally:
        server.stop()


def test_keep_alive_head_gzip_and_errors(metrics: Metrics) -> None:
    address = _address(metrics)
    with socket.create_connection(address, timeout=5) as sock:
        first = _request(sock, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
        top, _, body = first.partition(b"\r\n\r\n")
        assert b"Content-Encoding: gzip" in top and b"Connection: keep-alive" in top
        assert b"lbtui_build_info" in gzip.decompress(body)
        second = _request(sock, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # same connection
        assert second.startswith(b"HTTP/1.1 200 ") and second.endswith(b"\r\n\r\n")
        assert _request(sock, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404 ")
        assert _request(sock, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(address, timeout=5) as sock:
        openmetrics = _request(
            sock,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
        )
        assert b"Content-Type: application/openmetrics-text" in openmetrics
        assert openmetrics.rstrip().endswith(b"# EOF")


def test_a_busy_port_raises_at_start() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        m = Metrics(_snapshot)
        with pytest.raises(OSError):
            m.start(f"127.0.0.1:{port}")
        assert m.server_address is None
