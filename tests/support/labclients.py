# SPDX-License-Identifier: Apache-2.0
"""Test clients, run inside a lab client namespace; each prints one JSON line per result.

    python -m tests.support.labclients http --url URL --count N (--new-conn | --keepalive)
    python -m tests.support.labclients udp --host H --port P --count N
    python -m tests.support.labclients hold --host H --port P --count N --seconds S

``http``/``udp`` print ``{"b1": k, ..., "errors": e}``. ``hold`` opens N keep-alive connections,
asks each once, prints ``{"event": "opened", "backends": {...}, "errors": e}``, holds them S seconds,
asks each again and prints ``{"event": "done", "backends": {...}, "errors": e}`` (backends that still
answered on the same connection).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence

from lbtui.labservers import ERRORS_KEY, http_counts, http_get, udp_counts


def _emit(obj: object) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def hold_connections(host: str, port: int, count: int, seconds: float, timeout: float) -> None:
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
    time.sleep(seconds)
    second: Counter[str] = Counter()
    errors = 0
    for held in conns:
        try:
            second[http_get(held, "/", close=True)] += 1
        except (OSError, http.client.HTTPException):
            errors += 1
        held.close()
    _emit({"event": "done", "backends": dict(second), ERRORS_KEY: errors})


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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    if a.kind == "http":
        _emit(http_counts(a.url, a.count, a.new_conn, a.timeout))
    elif a.kind == "udp":
        _emit(udp_counts(a.host, a.port, a.count, a.timeout))
    else:
        hold_connections(a.host, a.port, a.count, a.seconds, a.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
