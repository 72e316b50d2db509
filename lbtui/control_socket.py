# SPDX-License-Identifier: Apache-2.0
"""The control socket's server: a running instance's engine served on a unix socket.

`ControlServer` answers JSON-lines requests (docs/control-protocol.md) from `lbtui ctl`, `lbtui attach`
and scripts, on a thread of its own with its own event loop, so the engine's loop never waits for a
client and a client never waits for another one. The client is lbtui/control_client.py.

The operator socket is the way in, so it is root-only: mode 0600 from the moment it exists (bound
under umask 0177), in a 0700 directory when we create it, and peers with another uid are refused. A
second, read-only server (`read_only=True`, settings.read_only) serves the members of one group:
socket 0660 root:GROUP in a searchable (0755) directory, peers checked by SO_PEERCRED and
SO_PEERGROUPS, and every `command` refused; it answers hello, snapshot, events and history. Clients
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
import socket
import stat
import struct
import threading
from collections.abc import Mapping
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
REFUSAL_LINGER_S = 1.0  # how long a refused client may still send before the socket closes
MAX_EVENTS = 1000  # most events in one reply
MAX_EVENTS_WAIT_S = 60.0  # an events request may wait this long for the first new event
EVENTS_POLL_S = 0.1  # how often a waiting events request looks for new events
MAX_SUBMIT_TIMEOUT_S = 300.0
OPS = ("hello", "snapshot", "events", "command", "history")
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; Python 3.11 lacks the name
PEER_GROUPS_BUFFER = 1024  # bytes: 256 groups (Python's getsockopt takes at most 1024)
READ_ONLY_REFUSAL = (
    "this is the read-only socket {path} (status, flows, events and history only); "
    "commands that change traffic go through the operator socket, as root"
)


class SocketInUse(RuntimeError):
    """The control socket path belongs to another running instance (or is not a socket)."""


def resolve_group(text: str) -> int:
    """The gid of a group given by name or number (settings.read_only.group); KeyError if unknown."""
    import grp

    if text.isdigit():
        return int(text)
    return grp.getgrnam(text).gr_gid


def encode_line(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, allow_nan=False, separators=(",", ":")).encode() + b"\n"


async def _discard_until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


def _error(req_id: Any, message: str) -> bytes:
    return encode_line({"v": wire.PROTOCOL_VERSION, "id": req_id, "ok": False, "error": message})


def _ok(req_id: Any, result: Any) -> bytes:
    return encode_line({"v": wire.PROTOCOL_VERSION, "id": req_id, "ok": True, "result": result})


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
        read_only: bool = False,
        group: int | None = None,
    ) -> None:
        self.handle = handle
        self.path = path
        self.read_only = read_only
        self.group = group  # read_only: the gid whose members may connect
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
            "read_only": read_only,
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
        # the operator's directory is closed; the read-only socket's must be searchable by its group
        # (the sockets guard themselves: their modes and the peer checks)
        mode = 0o755 if self.read_only else 0o700
        if not os.path.isdir(parent):
            os.makedirs(parent, mode=mode, exist_ok=True)
            os.chmod(parent, mode)
        elif self.read_only:
            _open_directory(parent)
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
        if self.read_only and self.group is not None:
            os.chown(self.path, -1, self.group)  # still 0600 here: nobody else could connect yet
            os.chmod(self.path, 0o660)
        else:
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
            probe.sendall(encode_line({"v": wire.PROTOCOL_VERSION, "id": 0, "op": "hello"}))
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
                writer.write_eof()
                await within(WRITE_TIMEOUT_S, writer.drain())
                # Read what the client sent before closing: closing a Unix socket with unread data
                # resets the connection, and the client would get ECONNRESET after our reply.
                with contextlib.suppress(TimeoutError, ConnectionError):
                    await within(REFUSAL_LINGER_S, _discard_until_eof(reader))
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
            pid, uid, gid = struct.unpack("3i", creds)
        except (AttributeError, OSError):
            return "permission", "permission denied: cannot tell who is connecting"
        if uid in (0, os.geteuid()):
            return None
        if not self.read_only:
            return "permission", "permission denied: the control socket is root-only"
        if self.group is not None and (gid == self.group or self.group in _peer_groups(sock, pid)):
            return None
        return "permission", "permission denied: the read-only socket serves members of its group only"

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
                since, limit, wait = _events_args(request)
                return await self._events_waiting(req_id, since, limit, wait)
            if op == "history":
                try:
                    history_query = wire.decode_history_query(request.get("query", {}))
                except wire.WireError as exc:
                    raise _BadRequest(str(exc)) from None
                return await loop.run_in_executor(self._reads, self._history_reply, req_id, history_query)
            if op == "command" and self.read_only:
                raise _BadRequest(READ_ONLY_REFUSAL.format(path=self.path))
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

    async def _events_waiting(self, req_id: Any, since: int, limit: int, wait: float) -> bytes:
        """The events after `since`; with `wait`, the first ones to come within that many seconds
        (polled on this loop, so a waiting client holds no thread)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            events = await loop.run_in_executor(self._reads, self.handle.events_since, since, limit)
            if events or loop.time() >= deadline:
                return _ok(req_id, [wire.encode_event(e) for e in events])
            await asyncio.sleep(min(EVENTS_POLL_S, max(0.0, deadline - loop.time())))

    def _history_reply(self, req_id: Any, query: model.HistoryQuery) -> bytes:
        return _ok(req_id, wire.encode_value(self.handle.history(query)))

    def _command_reply(self, req_id: Any, command: model.Command, timeout: float) -> bytes:
        return _ok(req_id, wire.encode_result(self.handle.submit(command, timeout)))


def _peer_groups(sock: socket.socket, pid: int) -> set[int]:
    """The peer's supplementary groups: SO_PEERGROUPS (as they were at connect), or, for a peer with
    more than fit in its buffer, /proc/PID/status; empty when neither can say."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, PEER_GROUPS_BUFFER)
        count = len(raw) // 4
        return set(struct.unpack(f"{count}I", raw[: count * 4]))
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:] if g.isdigit()}
    except OSError:
        pass
    return set()


def _open_directory(path: str) -> None:
    """Make our own socket directory searchable and listable (0755): a read-only user must reach
    the socket in it, and `lbtui ctl list` must see it. A directory of another owner is left alone."""
    st = os.stat(path)
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o055 != 0o055:
        os.chmod(path, stat.S_IMODE(st.st_mode) | 0o055)
        log.info(
            "socket directory %s opened to 0%o for the read-only socket",
            path,
            stat.S_IMODE(st.st_mode) | 0o055,
        )


def _events_args(request: Mapping[str, Any]) -> tuple[int, int, float]:
    since = request.get("since", 0)
    limit = request.get("limit", MAX_EVENTS)
    for name, value in (("since", since), ("limit", limit)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _BadRequest(f'"{name}" must be an integer >= 0')
    wait = request.get("wait", 0)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_EVENTS_WAIT_S:
        raise _BadRequest(f'"wait" must be a number of seconds from 0 to {MAX_EVENTS_WAIT_S:g}')
    return since, min(limit, MAX_EVENTS), float(wait)


def _timeout_arg(request: Mapping[str, Any]) -> float:
    timeout = request.get("timeout", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout:
        raise _BadRequest('"timeout" must be a number of seconds > 0')
    return min(float(timeout), MAX_SUBMIT_TIMEOUT_S)
