# SPDX-License-Identifier: Apache-2.0
"""Test clients, run inside a lab client namespace; each prints one JSON line per result.

    python -m tests.support.labclients http --url URL --count N (--new-conn | --keepalive)
    python -m tests.support.labclients udp --host H --port P --count N
    python -m tests.support.labclients hold --host H --port P --count N --seconds S [--every E] [--until F]
    python -m tests.support.labclients steady --url URL --interval I --seconds S [--until F]
    python -m tests.support.labclients blindrst --host H --port P --resets N

``http``/``udp`` print ``{"b1": k, ..., "errors": e}``. ``hold`` opens N keep-alive connections,
asks each once, prints ``{"event": "opened", "backends": {...}, "errors": e}``, holds them S seconds,
asks each again and prints ``{"event": "done", "backends": {...}, "errors": e}`` (backends that still
answered on the same connection); with --every it also asks each one every E seconds meanwhile, and
a connection that fails once counts as an error. ``steady`` opens a new connection every I seconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence

from lbtui.labservers import ERRORS_KEY, http_counts, http_get, udp_counts


def _emit(obj: object) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def _go_on(end: float, until: str | None) -> bool:
    """Before `end`, and (with `until`) until that file exists."""
    return time.monotonic() < end and not (until and os.path.exists(until))


def hold_connections(
    host: str,
    port: int,
    count: int,
    seconds: float,
    timeout: float,
    every: float = 0.0,
    until: str | None = None,
) -> None:
    conns: list[http.client.HTTPConnection] = []
    first: Counter[str] = Counter()
    errors = 0
    for _ in range(count):
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            first[http_get(conn, "/", close=False)] += 1
            conns.append(conn)
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
    _emit({"event": "opened", "backends": dict(first), ERRORS_KEY: errors})
    end = time.monotonic() + seconds
    failed: set[int] = set()
    asked = 0
    while every > 0 and _go_on(end - every, until):  # each connection asked again every `every` s
        round_start = time.monotonic()
        for i, held in enumerate(conns):
            if i in failed:
                continue
            try:
                http_get(held, "/", close=False)
                asked += 1
            except (OSError, http.client.HTTPException):
                failed.add(i)
        time.sleep(max(0.0, every - (time.monotonic() - round_start)))
    while _go_on(end, until):
        time.sleep(0.05)
    second: Counter[str] = Counter()
    errors = len(failed)
    conns = [c for i, c in enumerate(conns) if i not in failed]
    for held in conns:
        try:
            second[http_get(held, "/", close=True)] += 1
        except (OSError, http.client.HTTPException):
            errors += 1
        held.close()
    done: dict[str, object] = {"event": "done", "backends": dict(second), ERRORS_KEY: errors}
    if every > 0:
        done["asked"] = asked  # requests made while holding
    _emit(done)


def steady_connections(
    url: str, interval: float, seconds: float, timeout: float, until: str | None = None
) -> None:
    """A new connection (one request) every `interval` seconds for `seconds` (or until the file
    `until` exists), on a fixed schedule (late requests do not catch up); prints {"ok": n, "errors": e,
    "longest_gap_s": the longest time between two answered requests (or the start and the first),
    "slowest_s": the slowest answered request, "slow": requests slower than 0.2 s}."""
    u = urllib.parse.urlsplit(url)
    host, port, path = u.hostname or "127.0.0.1", u.port or 80, u.path or "/"
    ok = errors = slow = 0
    start = last_answer = time.monotonic()
    gap = slowest = 0.0
    n = 0
    while _go_on(start + seconds, until):
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        began = time.monotonic()
        try:
            http_get(conn, path, close=True)
            ok += 1
            now = time.monotonic()
            gap, slowest = max(gap, now - last_answer), max(slowest, now - began)
            slow += now - began > 0.2
            last_answer = now
        except (OSError, http.client.HTTPException):
            errors += 1
        finally:
            conn.close()
        n += 1
        time.sleep(max(0.0, start + n * interval - time.monotonic()))
    _emit(
        {
            "ok": ok,
            ERRORS_KEY: errors,
            "longest_gap_s": round(gap, 3),
            "slowest_s": round(slowest, 3),
            "slow": slow,
        }
    )


def blind_resets(host: str, port: int, resets: int, timeout: float) -> None:
    """One keep-alive connection; between two requests on it, `resets` RSTs with random (blind)
    sequence numbers, then a RST followed by a SYN on its tuple (a takeover attempt), all spoofed
    with the connection's own addresses through a raw socket. Prints the backend of each request."""
    import random

    from scapy.layers.inet import IP, TCP
    from scapy.sendrecv import send

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    first = http_get(conn, "/", close=False)
    assert conn.sock is not None
    src, sport = conn.sock.getsockname()[:2]
    rng = random.Random(sport)
    for _ in range(resets):
        send(
            IP(src=src, dst=host) / TCP(sport=sport, dport=port, flags="R", seq=rng.getrandbits(32)),
            verbose=0,
        )
    send(IP(src=src, dst=host) / TCP(sport=sport, dport=port, flags="R", seq=rng.getrandbits(32)), verbose=0)
    send(IP(src=src, dst=host) / TCP(sport=sport, dport=port, flags="S", seq=rng.getrandbits(32)), verbose=0)
    time.sleep(0.5)
    errors = 0
    second = None
    try:
        second = http_get(conn, "/", close=True)
    except (OSError, http.client.HTTPException):
        errors += 1
    conn.close()
    _emit({"first": first, "second": second, ERRORS_KEY: errors, "client_port": sport})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.support.labclients", description="lab test clients")
    sub = p.add_subparsers(dest="kind", required=True)
    h = sub.add_parser("http")
    h.add_argument("--url", default="http://10.0.0.1/")
    h.add_argument("--count", type=int, default=10)
    mode = h.add_mutually_exclusive_group()
    mode.add_argument("--new-conn", dest="new_conn", action="store_true", default=True)
    mode.add_argument("--keepalive", dest="new_conn", action="store_false")
    h.add_argument("--timeout", type=float, default=2.0)
    u = sub.add_parser("udp")
    u.add_argument("--host", default="10.0.0.1")
    u.add_argument("--port", type=int, default=5353)
    u.add_argument("--count", type=int, default=10)
    u.add_argument("--timeout", type=float, default=1.0)
    o = sub.add_parser("hold")
    o.add_argument("--host", default="10.0.0.1")
    o.add_argument("--port", type=int, default=80)
    o.add_argument("--count", type=int, default=10)
    o.add_argument("--seconds", type=float, default=10.0)
    o.add_argument("--timeout", type=float, default=5.0)
    o.add_argument("--every", type=float, default=0.0, help="ask each connection again this often")
    o.add_argument("--until", help="stop holding (at most --seconds) once this file exists")
    br = sub.add_parser("blindrst")
    br.add_argument("--host", default="10.0.0.1")
    br.add_argument("--port", type=int, default=80)
    br.add_argument("--resets", type=int, default=3)
    br.add_argument("--timeout", type=float, default=5.0)
    st = sub.add_parser("steady")
    st.add_argument("--url", default="http://10.0.0.1/")
    st.add_argument("--interval", type=float, default=0.01)
    st.add_argument("--seconds", type=float, default=10.0)
    st.add_argument("--timeout", type=float, default=2.0)
    st.add_argument("--until", help="stop (at most --seconds) once this file exists")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    if a.kind == "http":
        _emit(http_counts(a.url, a.count, a.new_conn, a.timeout))
    elif a.kind == "udp":
        _emit(udp_counts(a.host, a.port, a.count, a.timeout))
    elif a.kind == "blindrst":
        blind_resets(a.host, a.port, a.resets, a.timeout)
    elif a.kind == "steady":
        steady_connections(a.url, a.interval, a.seconds, a.timeout, a.until)
    else:
        hold_connections(a.host, a.port, a.count, a.seconds, a.timeout, a.every, a.until)
    return 0


if __name__ == "__main__":
    sys.exit(main())
