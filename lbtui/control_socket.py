# SPDX-License-Identifier: Apache-2.0
"""The control socket: a running instance's engine served on a unix socket, and the client for it.

`ControlServer` answers JSON-lines requests (docs/control-protocol.md) from `lbtui ctl`, `lbtui attach`
and scripts, on a thread of its own with its own event loop, so the engine's loop never waits for a
client and a client never waits for another one. `SocketEngineHandle` is the client side: a
`model.EngineHandle` over the socket, so the console does not care where the engine runs.

The socket is the only way in, so it is root-only: mode 0600 from the moment it exists (bound under
umask 0177), in a 0700 directory when we create it, and peers with another uid are refused. Clients
are limited in number, request size and rate, and every refusal is counted (control_limits).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import json
import logging
import os
import select
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lbtui import __version__, model, wire
from lbtui.control_limits import BURST, REQUESTS_PER_S, Refusals, TokenBucket
from lbtui.deadline import within

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/run/lbtui/lbtui.sock"
MAX_LINE = 64 * 1024  # longest request line accepted by the server
MAX_CLIENTS = 64
IDLE_TIMEOUT_S = 300.0  # a client that sends nothing for this long is disconnected
WRITE_TIMEOUT_S = 30.0  # a client that does not read its replies for this long is disconnected
MAX_EVENTS = 1000  # most events in one reply
MAX_SUBMIT_TIMEOUT_S = 300.0
MAX_REPLY = 256 * 1024 * 1024  # longest reply the client accepts (a snapshot is bounded well below)
OPS = ("hello", "snapshot", "events", "command", "history")


class SocketInUse(RuntimeError):
    """The control socket path belongs to another running instance (or is not a socket)."""


class RemoteError(RuntimeError):
    """The instance answered a request with an error (not a refused command: those are results)."""


class ControlPermissionError(ConnectionError):
    """The socket exists but we may not connect to it (not root)."""


def _line(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, allow_nan=False, separators=(",", ":")).encode() + b"\n"


def _error(req_id: Any, message: str) -> bytes:
    return _line({"v": wire.PROTOCOL_VERSION, "id": req_id, "ok": False, "error": message})


def _ok(req_id: Any, result: Any) -> bytes:
    return _line({"v": wire.PROTOCOL_VERSION, "id": req_id, "ok": True, "result": result})


class _BadRequest(Exception):
    pass


# ---- server ------------------------------------------------------------------------------------


class ControlServer:
    """Serves `handle` on the unix socket `path` until stop()."""

    def __init__(
        self,
        handle: model.EngineHandle,
        path: str = DEFAULT_SOCKET,
        *,
        instance: Mapping[str, Any] | None = None,
        max_clients: int = MAX_CLIENTS,
        max_line: int = MAX_LINE,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        rate: float = REQUESTS_PER_S,
        burst: int = BURST,
    ) -> None:
        self.handle = handle
        self.path = path
        self.max_clients = max_clients
        self.max_line = max_line
        self.idle_timeout_s = idle_timeout_s
        self.rate, self.burst = rate, burst
        self.refusals = Refusals()
        self._info: dict[str, Any] = {
            "protocol": wire.PROTOCOL_VERSION,
            "pid": os.getpid(),
            "lbtui": __version__,
            "socket": path,
            **(instance or {}),
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()  # every open connection, closed on stop
        self._tasks: set[asyncio.Task[None]] = set()
        self._served = 0  # connections being served (refused ones not counted)
        self._accepted = 0
        self._inode: tuple[int, int] | None = None
        # engine calls block; commands and reads get pools of their own so slow commands never hold
        # up snapshots, and both are bounded so a flood of clients cannot start a flood of threads
        self._commands = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="lbtui-ctl-cmd")
        self._reads = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="lbtui-ctl-read")

    @property
    def clients(self) -> int:
        """Connections being served now."""
        return self._served

    @property
    def accepted(self) -> int:
        """Connections accepted since start (served or refused)."""
        return self._accepted

    # ---- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the socket (replacing a stale one) and serve on a thread; SocketInUse if taken."""
        sock = self._bind()
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        self._loop = asyncio.new_event_loop()
        started = concurrent.futures.Future[None]()
        self._thread = threading.Thread(
            target=self._run, args=(sock, started), name="lbtui-control", daemon=True
        )
        self._thread.start()
        try:
            started.result(10)
        except BaseException:
            self._remove_socket_file()
            raise
        log.info("control socket listening on %s", self.path)

    def stop(self) -> None:
        """Disconnect every client, stop serving and remove the socket file."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = None
        if thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
            except Exception:
                log.exception("stopping the control socket")
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        self._commands.shutdown(wait=False, cancel_futures=True)
        self._reads.shutdown(wait=False, cancel_futures=True)
        self._remove_socket_file()

    def _bind(self) -> socket.socket:
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            os.makedirs(parent, mode=0o700, exist_ok=True)
            os.chmod(parent, 0o700)
        self._check_existing()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others could connect
        try:
            sock.bind(self.path)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise SocketInUse(f"{self.path} was taken by another process while starting") from exc
            raise
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        sock.listen(128)
        sock.setblocking(False)
        return sock

    def _check_existing(self) -> None:
        """Raise SocketInUse if a live instance answers on our path; remove a stale socket."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUse(f"{self.path} exists and is not a socket; remove it or choose another path")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2.0)
        try:
            probe.connect(self.path)
        except (ConnectionRefusedError, FileNotFoundError):
            log.info("removing stale control socket %s", self.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        except OSError as exc:
            raise SocketInUse(f"{self.path} exists and cannot be checked: {exc.strerror}") from exc
        try:
            probe.sendall(_line({"v": wire.PROTOCOL_VERSION, "id": 0, "op": "hello"}))
            reply = json.loads(probe.makefile("rb").readline(MAX_LINE))
            pid = reply["result"]["pid"]
        except (OSError, ValueError, KeyError, TypeError):
            raise SocketInUse(f"{self.path} is in use by another process") from None
        finally:
            probe.close()
        raise SocketInUse(f"{self.path} is used by a running lbtui (pid {pid})")

    def _remove_socket_file(self) -> None:
        # only our own socket: a newer instance may already have replaced it
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._inode:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def _run(self, sock: socket.socket, started: concurrent.futures.Future[None]) -> None:
        assert self._loop is not None
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_unix_server(self._connected, sock=sock, limit=self.max_line)
            )
        except BaseException as exc:
            sock.close()
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(None)
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._close_all()
            loop.run_until_complete(asyncio.sleep(0))  # lets the transports close their sockets
            loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        await asyncio.sleep(0)  # connections accepted just before close get their writers now
        self._close_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _close_all(self) -> None:
        # by writer, not by task: a task cancelled before its first step never runs its finally
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    # ---- one client ---------------------------------------------------------------------------

    def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # called synchronously as the connection is made, so stop() always knows every writer
        self._writers.add(writer)
        self._accepted += 1
        refusal = self._refusal(writer)
        if refusal is None:
            self._served += 1
        task = asyncio.get_running_loop().create_task(self._client(reader, writer, refusal))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, refusal: str | None
    ) -> None:
        try:
            if refusal is not None:
                writer.write(_error(None, refusal))
                await within(WRITE_TIMEOUT_S, writer.drain())
                return
            await self._serve(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or stopped reading: nothing to answer
        except Exception:
            log.exception("control client")
        finally:
            if refusal is None:
                self._served -= 1
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await within(1.0, writer.wait_closed())

    def _refusal(self, writer: asyncio.StreamWriter) -> str | None:
        refused = self._why_refused(writer)
        if refused is None:
            return None
        self.refusals.count(*refused)
        return refused[1]

    def _why_refused(self, writer: asyncio.StreamWriter) -> tuple[str, str] | None:
        """(reason, message) if this connection is refused."""
        if self._served >= self.max_clients:
            return "too_many_clients", f"too many clients (at most {self.max_clients}); try again later"
        sock = writer.get_extra_info("socket")
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
        except (AttributeError, OSError):
            return "permission", "permission denied: cannot tell who is connecting"
        if uid not in (0, os.geteuid()):
            return "permission", "permission denied: the control socket is root-only"
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        bucket = TokenBucket(self.rate, self.burst)
        while True:
            try:
                line = await within(self.idle_timeout_s, reader.readuntil(b"\n"))
            except TimeoutError:
                message = f"idle for {self.idle_timeout_s:g} s; closing"
                self.refusals.count("idle", message, first_of_connection=False)
                await self._send(writer, _error(None, message))
                return
            except asyncio.LimitOverrunError:
                message = f"request longer than {self.max_line} bytes; closing"
                self.refusals.count("request_too_long", message)
                await self._send(writer, _error(None, message))
                return
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():  # a last request without its newline still gets an answer
                    await self._send(writer, await self._limited_answer(bucket, exc.partial))
                return
            if line.strip():
                await self._send(writer, await self._limited_answer(bucket, line))

    async def _limited_answer(self, bucket: TokenBucket, line: bytes) -> bytes:
        """The answer to a request within the client's rate, else a refusal after a pause until its
        next token (a pipelined flood is read no faster than the rate)."""
        wait = bucket.take()
        if wait <= 0:
            return await self._answer(line)
        message = f"rate limit: at most {self.rate:g} requests per second per client; slow down"
        self.refusals.count("rate_limited", message, first_of_connection=bucket.refused == 1)
        await asyncio.sleep(wait)
        return _error(None, message)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await within(WRITE_TIMEOUT_S, writer.drain())

    async def _answer(self, line: bytes) -> bytes:
        """The reply line to one request line; never raises."""
        req_id: Any = None
        try:
            try:
                request = json.loads(line)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                raise _BadRequest(f"not JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
            if not isinstance(request, dict):
                raise _BadRequest("a request must be a JSON object")
            req_id = request.get("id")
            if not (req_id is None or isinstance(req_id, (int, str))) or isinstance(req_id, bool):
                req_id = None
                raise _BadRequest('"id" must be an integer or a string')
            version = request.get("v", wire.PROTOCOL_VERSION)
            if version != wire.PROTOCOL_VERSION:
                raise _BadRequest(
                    f"protocol version {version!r} is not supported (this instance speaks "
                    f"{wire.PROTOCOL_VERSION})"
                )
            op = request.get("op")
            loop = asyncio.get_running_loop()
            if op == "hello":
                return _ok(req_id, {**self._info, "refusals": self.refusals.counts()})
            if op == "snapshot":
                query = None
                if request.get("flows") is not None:
                    try:
                        query = wire.decode_flow_query(request["flows"])
                    except wire.WireError as exc:
                        raise _BadRequest(str(exc)) from None
                return await loop.run_in_executor(self._reads, self._snapshot_reply, req_id, query)
            if op == "events":
                since, limit = _events_args(request)
                return await loop.run_in_executor(self._reads, self._events_reply, req_id, since, limit)
            if op == "history":
                try:
                    history_query = wire.decode_history_query(request.get("query", {}))
                except wire.WireError as exc:
                    raise _BadRequest(str(exc)) from None
                return await loop.run_in_executor(self._reads, self._history_reply, req_id, history_query)
            if op == "command":
                try:
                    command = wire.decode_command(request.get("command"))
                except wire.WireError as exc:
                    raise _BadRequest(str(exc)) from None
                timeout = _timeout_arg(request)
                return await loop.run_in_executor(
                    self._commands, self._command_reply, req_id, command, timeout
                )
            raise _BadRequest(f"unknown op {op!r} (known: {', '.join(OPS)})")
        except _BadRequest as exc:
            return _error(req_id, str(exc))
        except Exception as exc:  # a request never takes the server down
            log.exception("control request")
            return _error(req_id, f"internal error: {type(exc).__name__}: {exc}")

    # these run on the pools' threads: the engine call and the JSON encoding of big replies

    def _snapshot_reply(self, req_id: Any, query: model.FlowQuery | None) -> bytes:
        return _ok(req_id, wire.encode_snapshot(self.handle.snapshot(query)))

    def _events_reply(self, req_id: Any, since: int, limit: int) -> bytes:
        events = self.handle.events_since(since, limit)
        return _ok(req_id, [wire.encode_event(e) for e in events])

    def _history_reply(self, req_id: Any, query: model.HistoryQuery) -> bytes:
        return _ok(req_id, wire.encode_value(self.handle.history(query)))

    def _command_reply(self, req_id: Any, command: model.Command, timeout: float) -> bytes:
        return _ok(req_id, wire.encode_result(self.handle.submit(command, timeout)))


def _events_args(request: Mapping[str, Any]) -> tuple[int, int]:
    since = request.get("since", 0)
    limit = request.get("limit", MAX_EVENTS)
    for name, value in (("since", since), ("limit", limit)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _BadRequest(f'"{name}" must be an integer >= 0')
    return since, min(limit, MAX_EVENTS)


def _timeout_arg(request: Mapping[str, Any]) -> float:
    timeout = request.get("timeout", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout:
        raise _BadRequest('"timeout" must be a number of seconds > 0')
    return min(float(timeout), MAX_SUBMIT_TIMEOUT_S)


# ---- client ------------------------------------------------------------------------------------


class SocketEngineHandle:
    """model.EngineHandle for an instance reached over its control socket.

    Blocking and thread-safe (one request at a time). A lost connection is re-opened on the next
    call; ConnectionError (ControlPermissionError when not allowed) says why when no instance answers.
    """

    def __init__(self, path: str = DEFAULT_SOCKET, connect_timeout: float = 5.0) -> None:
        self.path = path
        self.connect_timeout = connect_timeout
        self.instance: dict[str, Any] = {}  # the instance's hello: pid, version, ...
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._file: Any = None
        self._next_id = 0

    # ---- EngineHandle -------------------------------------------------------------------------

    def snapshot(self, flows: model.FlowQuery | None = None) -> model.Snapshot:
        request: dict[str, Any] = {"op": "snapshot"}
        if flows is not None and flows != model.FlowQuery():
            request["flows"] = wire.encode_value(flows)
        data = self._call(request, self.connect_timeout + 25.0)
        try:
            return wire.decode_snapshot(data)
        except wire.WireError as exc:
            raise RemoteError(f"unreadable snapshot from {self.path}: {exc}") from exc

    def submit(self, command: model.Command, timeout: float = 10.0) -> model.CommandResult:
        request = {"op": "command", "command": wire.encode_command(command), "timeout": timeout}
        try:
            data = self._call(request, timeout + 5.0, retry=False)
        except RemoteError as exc:  # the instance would not take the request: the command is refused
            return model.CommandResult(False, str(exc))
        try:
            return wire.decode_result(data)
        except wire.WireError as exc:
            raise RemoteError(f"unreadable result from {self.path}: {exc}") from exc

    def events_since(self, seq: int, limit: int = 1000) -> Sequence[model.Event]:
        data = self._call({"op": "events", "since": max(0, seq), "limit": limit}, self.connect_timeout + 25.0)
        if not isinstance(data, list):
            raise RemoteError(f"unreadable events from {self.path}: expected a list")
        try:
            return [wire.decode_event(e) for e in data]
        except wire.WireError as exc:
            raise RemoteError(f"unreadable events from {self.path}: {exc}") from exc

    def history(self, query: model.HistoryQuery) -> model.HistoryAnswer:
        request = {"op": "history", "query": wire.encode_value(query)}
        try:
            data = self._call(request, self.connect_timeout + 25.0)
        except RemoteError as exc:
            if "unknown op 'history'" in str(exc):  # an instance from before history existed
                return model.HistoryAnswer(taken_at=time.time())
            raise
        try:
            return wire.decode_history(data)
        except wire.WireError as exc:
            raise RemoteError(f"unreadable history from {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    def hello(self) -> dict[str, Any]:
        """Connect (if not connected) and return the instance's hello."""
        with self._lock:
            self._ensure_connected()
            return dict(self.instance)

    # ---- internals ----------------------------------------------------------------------------

    def _call(self, request: dict[str, Any], timeout: float, retry: bool = True) -> Any:
        """Send one request, return its result; RemoteError on an error reply.

        A request is sent again on a fresh connection only when the server cannot have acted on it:
        the connection was already closed (or closing) when we sent it. Reads also retry once after
        any lost connection, since they change nothing.
        """
        with self._lock:
            for attempt in (1, 2):
                reused = self._sock is not None
                self._ensure_connected()
                try:
                    return self._exchange(request, timeout)
                except _Unsent as exc:
                    self._disconnect()
                    if attempt == 2:
                        raise ConnectionError(f"lost connection to {self.path}: {exc}") from None
                except (OSError, ValueError) as exc:
                    self._disconnect()
                    if not (retry and reused) or attempt == 2:
                        raise ConnectionError(f"lost connection to {self.path}: {_reason(exc)}") from None
            raise AssertionError("unreachable")

    def _exchange(self, request: dict[str, Any], timeout: float, fresh: bool = False) -> Any:
        assert self._sock is not None
        # a reply we did not ask for (the server closing an idle connection) or EOF: start afresh
        if not fresh and select.select([self._sock], [], [], 0)[0]:
            raise _Unsent("the connection was closed by the instance")
        self._next_id += 1
        req_id = self._next_id
        self._sock.settimeout(timeout)
        try:
            self._sock.sendall(_line({"v": wire.PROTOCOL_VERSION, "id": req_id, **request}))
        except (BrokenPipeError, ConnectionResetError):
            # the server may have said why before closing ("too many clients", "permission denied")
            notice = self._read_reply()
            raise _Unsent(str(notice.get("error") or "the connection was closed by the instance")) from None
        while True:
            reply = self._read_reply()
            if reply.get("id") == req_id:
                break
            if reply.get("id") is None and reply.get("ok") is False:
                # the server closes with a notice ("idle", "too many clients") before reading us
                raise _Unsent(str(reply.get("error")))
        if reply.get("ok") is True:
            return reply.get("result")
        raise RemoteError(str(reply.get("error") or "error without a message"))

    def _read_reply(self) -> dict[str, Any]:
        line = self._file.readline(MAX_REPLY)
        if not line:
            raise ConnectionResetError("the instance closed the connection")
        if not line.endswith(b"\n"):
            raise ValueError("reply too long or cut off")
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise ValueError("reply is not a JSON object")
        return reply

    def _ensure_connected(self) -> None:
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.connect_timeout)
        try:
            sock.connect(self.path)
        except PermissionError:
            sock.close()
            raise ControlPermissionError(
                f"cannot connect to {self.path}: permission denied "
                "(the control socket is root-only; use sudo)"
            ) from None
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise ConnectionError(
                f"cannot connect to {self.path}: no lbtui instance is running there "
                "(start one, or give its socket with --socket)"
            ) from None
        except OSError as exc:
            sock.close()
            raise ConnectionError(f"cannot connect to {self.path}: {_reason(exc)}") from None
        self._sock = sock
        self._file = sock.makefile("rb")
        try:
            hello = self._exchange({"op": "hello"}, self.connect_timeout, fresh=True)
        except (OSError, ValueError, RemoteError, _Unsent) as exc:
            self._disconnect()
            text = _reason(exc) if isinstance(exc, OSError) else str(exc)
            if text.startswith("permission denied"):
                raise ControlPermissionError(
                    f"cannot connect to {self.path}: permission denied "
                    "(the control socket is root-only; use sudo)"
                ) from None
            raise ConnectionError(f"cannot connect to {self.path}: {text}") from None
        theirs = hello.get("protocol") if isinstance(hello, dict) else None
        if not isinstance(hello, dict) or theirs != wire.PROTOCOL_VERSION:
            self._disconnect()
            raise ConnectionError(
                f"{self.path} speaks control protocol {theirs!r}, this lbtui speaks {wire.PROTOCOL_VERSION}"
            )
        self.instance = hello

    def _disconnect(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self._file = None


class _Unsent(Exception):
    """The connection was closed before the server read our request."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def wait_for_socket(path: str, timeout: float = 10.0, is_alive: Callable[[], bool] | None = None) -> bool:
    """Poll until an instance answers on `path` (for tests and scripts); True if one did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_alive is not None and not is_alive():
            return False
        client = SocketEngineHandle(path, connect_timeout=1.0)
        try:
            client.hello()
            return True
        except ConnectionError:
            time.sleep(0.05)
        finally:
            client.close()
    return False
