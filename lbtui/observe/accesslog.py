# SPDX-License-Identifier: Apache-2.0
"""Access log: one line per closed connection (optionally per new one), as JSON or Common Log Format.

The engine's loop only builds a LogRecord and offers it to a bounded queue (put_nowait); a
QueueListener thread formats it and writes it to stdout, a file and/or syslog. When the queue is
full the record is dropped and counted, so a slow disk costs lines (reported by `dropped`), never
engine latency or unbounded memory. Rotation happens in the writer thread between two lines, and
stop() drains the queue before returning, so no accepted line is lost on rotation or on a clean stop.

The file is created with `file_mode` (0640: root and the log readers' group, Debian's adm), whatever
the umask. It is rotated by size (max_bytes, max_files) and it is also reopened when another tool
moved or removed it (logrotate without copytruncate), as logging's WatchedFileHandler does: the path
is checked before each line. The syslog target sends each line as one message (RFC 3164 framing by
logging's SysLogHandler, tag "lbtui[pid]") to a local socket path (/dev/log), "host:port" (UDP) or
"tcp://host:port" (one message per line).

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

import io
import itertools
import json
import logging
import logging.handlers
import os
import queue
import socket
import stat
import sys
import threading
import time
import typing
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from lbtui import model
from lbtui.addresses import format_endpoint

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
    vip, backend = format_endpoint(ev.vip_ip, ev.vip_port), format_endpoint(ev.backend_ip, ev.backend_port)
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


DEFAULT_FILE_MODE = 0o640
DEFAULT_SYSLOG_FACILITY = "local0"


class _AccessFileHandler(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler that creates its file with `mode` and follows moves by other tools."""

    def __init__(self, path: str, max_bytes: int, backups: int, mode: int) -> None:
        self._create_mode = mode  # before super().__init__, which opens the file
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")

    def _open(self) -> io.TextIOWrapper:
        stream = open(  # the handler owns and closes it
            self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors, opener=self._opener
        )
        return typing.cast(io.TextIOWrapper, stream)

    def _opener(self, path: str, flags: int) -> int:
        try:
            fd = os.open(path, flags | os.O_EXCL, self._create_mode)
        except FileExistsError:
            return os.open(path, flags)  # an existing file keeps the mode it has
        os.fchmod(fd, self._create_mode)  # exactly the mode: the umask does not apply
        return fd

    def emit(self, record: logging.LogRecord) -> None:
        self._reopen_if_moved()
        super().emit(record)

    def _reopen_if_moved(self) -> None:
        if self.stream is None:
            return
        try:
            on_disk = os.stat(self.baseFilename)
        except FileNotFoundError:
            on_disk = None
        ours = os.fstat(self.stream.fileno())
        if on_disk is None or (on_disk.st_dev, on_disk.st_ino) != (ours.st_dev, ours.st_ino):
            self.stream.close()
            self.stream = self._open()


def syslog_handler(address: str, facility: str = DEFAULT_SYSLOG_FACILITY) -> logging.Handler:
    """A SysLogHandler for "/dev/log" (a local socket), "host:port" (UDP) or "tcp://host:port"."""
    codes = logging.handlers.SysLogHandler.facility_names
    if facility not in codes:
        raise ValueError(f"syslog facility must be one of {sorted(codes)}, got {facility!r}")
    kind = socket.SOCK_DGRAM
    target: str | tuple[str, int] = address
    if address.startswith("/"):
        # SysLogHandler ignores a socket it cannot connect to (as openlog does); a typo would then
        # lose every line, so a path must at least be a socket now
        if not stat.S_ISSOCK(os.stat(address).st_mode):
            raise ValueError(f"syslog target {address} is not a socket")
    else:
        kind = socket.SOCK_STREAM if address.startswith("tcp://") else socket.SOCK_DGRAM
        host, sep, port = address.removeprefix("tcp://").removeprefix("udp://").rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(
                f"syslog target must be a socket path, host:port or tcp://host:port, got {address!r}"
            )
        target = (host.strip("[]"), int(port))
    handler = logging.handlers.SysLogHandler(address=target, facility=codes[facility], socktype=kind)
    handler.ident = f"lbtui[{os.getpid()}]: "
    handler.append_nul = False  # one datagram is one message; TCP frames by newline (below)
    if kind == socket.SOCK_STREAM and not address.startswith("/"):
        handler.setFormatter(logging.Formatter("%(message)s\n"))
    return handler


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
            try:
                if self.cfg.file:
                    directory = os.path.dirname(os.path.abspath(self.cfg.file))
                    os.makedirs(directory, mode=0o750, exist_ok=True)
                    mode = getattr(self.cfg, "file_mode", DEFAULT_FILE_MODE)
                    sinks.append(
                        _AccessFileHandler(self.cfg.file, self.cfg.max_bytes, self.cfg.max_files, mode)
                    )
                syslog = getattr(self.cfg, "syslog", None)
                if syslog:
                    facility = getattr(self.cfg, "syslog_facility", DEFAULT_SYSLOG_FACILITY)
                    sinks.append(syslog_handler(syslog, facility))
            except BaseException:
                for handler in sinks:
                    handler.close()
                raise
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
