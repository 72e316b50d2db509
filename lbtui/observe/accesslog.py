# SPDX-License-Identifier: Apache-2.0
"""Access log: one line per closed connection (optionally per new one), as JSON or Common Log Format.

The engine's loop only builds a LogRecord and offers it to a bounded queue (put_nowait); a
QueueListener thread formats it and writes it to stdout and/or a size-rotated file. When the queue
is full the record is dropped and counted, so a slow disk costs lines (reported by `dropped`), never
engine latency or unbounded memory. Rotation happens in the writer thread between two lines, and
stop() drains the queue before returning, so no accepted line is lost on rotation or on a clean stop.

CLF status codes (CLF has no field for a close reason; these keep standard parsers happy and make
"non-200" mean "did not end cleanly"):

    new      100  connection opened (only with log_new)
    fin      200  closed by FIN
    rst      499  reset by either side
    idle     408  expired by the idle timeout
    evicted  503  pushed out of a full conntrack table
    other    520  closed, reason unknown
"""

from __future__ import annotations

import itertools
import json
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from lbtui import model

log = logging.getLogger(__name__)

CLF_STATUS = {"fin": 200, "rst": 499, "idle": 408, "evicted": 503}
CLF_STATUS_NEW = 100
CLF_STATUS_UNKNOWN = 520
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc3339_utc(ts: float) -> str:
    """2024-01-02T03:04:05.123Z"""
    t = time.gmtime(ts)
    millis = int(round((ts - int(ts)) * 1000))
    if millis == 1000:  # 0.9996 rounds up into the next second
        return rfc3339_utc(float(int(ts) + 1))
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{millis:03d}Z"


def clf_time(ts: float) -> str:
    """02/Jan/2024:03:04:05 +0000 (month names fixed, not from the locale)."""
    t = time.gmtime(ts)
    date = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year:04d}"
    return f"{date}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def format_json(ev: model.FlowEvent) -> str:
    """One JSON object on one line; absent values are null."""
    return json.dumps(
        {
            "timestamp": rfc3339_utc(ev.ts),
            "event": ev.kind,
            "proxy": ev.proxy,
            "protocol": ev.protocol,
            "client_ip": ev.client_ip,
            "client_port": ev.client_port,
            "vip_ip": ev.vip_ip,
            "vip_port": ev.vip_port,
            "backend_ip": ev.backend_ip,
            "backend_port": ev.backend_port,
            "duration_ms": _ms(ev.duration_s),
            "bytes_in": ev.bytes_in,
            "bytes_out": ev.bytes_out,
            "packets_in": ev.packets_in,
            "packets_out": ev.packets_out,
            "handshake_ms": _ms(ev.handshake_s),
            "close_reason": ev.close_reason,
        },
        separators=(",", ":"),
    )


def clf_status(ev: model.FlowEvent) -> int:
    if ev.kind == "new":
        return CLF_STATUS_NEW
    return CLF_STATUS.get(ev.close_reason or "", CLF_STATUS_UNKNOWN)


def format_clf(ev: model.FlowEvent) -> str:
    """client - - [time] "PROTO vip backend" status bytes_to_client ("-" for none, as CLF does)."""
    vip, backend = _endpoint(ev.vip_ip, ev.vip_port), _endpoint(ev.backend_ip, ev.backend_port)
    request = f"{ev.protocol.upper()} {vip} {backend}"
    size = str(ev.bytes_out) if ev.bytes_out > 0 else "-"
    return f'{ev.client_ip} - - [{clf_time(ev.ts)}] "{request}" {clf_status(ev)} {size}'


FORMATTERS: dict[str, Callable[[model.FlowEvent], str]] = {"json": format_json, "clf": format_clf}


class AccessLogSettings(Protocol):
    """What AccessLog reads from the config (settings.access_log); log_new is optional (False)."""

    @property
    def format(self) -> str: ...
    @property
    def stdout(self) -> bool: ...
    @property
    def file(self) -> str | None: ...
    @property
    def max_bytes(self) -> int: ...
    @property
    def max_files(self) -> int: ...


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    """Offers records to a bounded queue without ever blocking; counts what did not fit."""

    def __init__(self, q: queue.Queue[logging.LogRecord | None]) -> None:
        super().__init__(q)
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # formatting happens in the writer thread, not on the engine's loop

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1  # Handler.handle holds self.lock here


class _EventListener(logging.handlers.QueueListener):
    """Formats each FlowEvent once (record.msg becomes the line) before the handlers see it."""

    def __init__(
        self,
        q: queue.Queue[logging.LogRecord | None],
        formatter: Callable[[model.FlowEvent], str],
        handlers: Iterable[logging.Handler],
    ) -> None:
        super().__init__(q, *handlers)
        self._records = q
        self._formatter = formatter
        self.written = 0

    def handle(self, record: logging.LogRecord) -> None:
        event = record.msg
        try:
            if not isinstance(event, model.FlowEvent):
                raise TypeError("not a FlowEvent")
            record.msg = self._formatter(event)
            record.args = ()
        except Exception:  # an exception here would end the writer thread
            log.exception("access log: cannot format %r", event)
            return
        try:
            super().handle(record)
        except Exception:  # handlers report their own write errors; this is a last guard
            log.exception("access log: a sink failed")
        self.written += 1

    def enqueue_sentinel(self) -> None:
        # Blocking put (the base class uses put_nowait): the queue may be full while the writer
        # drains it. None is QueueListener's sentinel.
        self._records.put(None)


class _TailHandler(logging.Handler):
    """Keeps the last lines in memory for the console."""

    def __init__(self, maxlen: int) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=maxlen)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())  # called with self.lock held

    def tail(self, n: int) -> tuple[str, ...]:
        if n <= 0:
            return ()
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            return tuple(itertools.islice(self.lines, max(len(self.lines) - n, 0), None))


class AccessLog:
    """Access log writer. log() may be called from the engine's loop; it never blocks.

    extra_handlers: more logging handlers fed with the formatted lines (tests, other sinks).
    The stdout option writes to the process's stdout: only for the headless front end.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        cfg: AccessLogSettings,
        queue_size: int = 10_000,
        tail_size: int = 200,
        extra_handlers: Iterable[logging.Handler] = (),
    ) -> None:
        if cfg.format not in FORMATTERS:
            raise ValueError(f"access log format must be one of {sorted(FORMATTERS)}, got {cfg.format!r}")
        self.cfg = cfg
        self.log_new = bool(getattr(cfg, "log_new", False))
        self._queue: queue.Queue[logging.LogRecord | None] = queue.Queue(maxsize=queue_size)
        self._queue_handler = _DroppingQueueHandler(self._queue)
        self._tail = _TailHandler(tail_size)
        self._extra = list(extra_handlers)
        self._sinks: list[logging.Handler] = []
        self._listener: _EventListener | None = None
        self._written_before = 0  # by listeners of earlier start/stop cycles
        # A private Logger (not in logging's registry): never shared, never propagates to root.
        self._logger = logging.Logger(f"lbtui.accesslog.{next(self._ids)}", logging.INFO)
        self._logger.propagate = False
        self._lock = threading.Lock()

    @property
    def dropped(self) -> int:
        """Lines dropped because the writer could not keep up."""
        return self._queue_handler.dropped

    @property
    def written(self) -> int:
        """Lines handed to the sinks so far."""
        current = self._listener.written if self._listener is not None else 0
        return self._written_before + current

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            sinks: list[logging.Handler] = []
            if self.cfg.file:
                directory = os.path.dirname(os.path.abspath(self.cfg.file))
                os.makedirs(directory, exist_ok=True)
                sinks.append(
                    logging.handlers.RotatingFileHandler(
                        self.cfg.file,
                        maxBytes=self.cfg.max_bytes,
                        backupCount=self.cfg.max_files,
                        encoding="utf-8",
                    )
                )
            if self.cfg.stdout:
                sinks.append(logging.StreamHandler(sys.stdout))
            self._sinks = sinks
            self._listener = _EventListener(
                self._queue, FORMATTERS[self.cfg.format], [*sinks, self._tail, *self._extra]
            )
            self._listener.start()
            self._logger.addHandler(self._queue_handler)

    def log(self, ev: model.FlowEvent) -> None:
        if ev.kind == "new" and not self.log_new:
            return
        if self._listener is None:
            return
        record = self._logger.makeRecord(self._logger.name, logging.INFO, "", 0, ev, (), None)
        self._logger.handle(record)

    def tail(self, n: int) -> tuple[str, ...]:
        """The last n lines written (at most tail_size), oldest first."""
        return self._tail.tail(n)

    def stop(self) -> None:
        """Stop accepting lines, write every line already queued, close the file."""
        with self._lock:
            listener, self._listener = self._listener, None
            if listener is None:
                return
            self._logger.removeHandler(self._queue_handler)
            listener.stop()  # enqueues the sentinel behind the queued lines and joins the thread
            self._written_before += listener.written
            for handler in self._sinks:
                handler.flush()
                handler.close()  # closes the file; a StreamHandler leaves stdout open
            self._sinks = []
