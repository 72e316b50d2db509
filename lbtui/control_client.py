# SPDX-License-Identifier: Apache-2.0
"""The client of the control socket: `SocketEngineHandle`, a `model.EngineHandle` over the socket
(docs/control-protocol.md), so the console, `lbtui ctl` and `lbtui attach` do not care where the engine
runs. The server is lbtui/control_socket.py.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from lbtui import model, wire
from lbtui.control_socket import DEFAULT_SOCKET, encode_line

MAX_REPLY = 256 * 1024 * 1024  # longest reply the client accepts (a snapshot is bounded well below)
NOT_ALLOWED = "the control socket is root-only, use sudo; a read-only socket admits its group's members"


class RemoteError(RuntimeError):
    """The instance answered a request with an error (not a refused command: those are results)."""


class ControlPermissionError(ConnectionError):
    """The socket exists but we may not connect to it (not root)."""


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
        if flows is not None:  # the default query too: asking is what makes the engine read flows
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

    def events_since(self, seq: int, limit: int = 1000, wait: float = 0.0) -> Sequence[model.Event]:
        """Events after `seq`; wait > 0: return as soon as one comes, or empty after `wait` seconds."""
        request: dict[str, Any] = {"op": "events", "since": max(0, seq), "limit": limit}
        if wait:
            request["wait"] = wait
        data = self._call(request, self.connect_timeout + 25.0 + wait)
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
            self._sock.sendall(encode_line({"v": wire.PROTOCOL_VERSION, "id": req_id, **request}))
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
                f"cannot connect to {self.path}: permission denied ({NOT_ALLOWED})"
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
                why = text.removeprefix("permission denied").lstrip(": ")
                if why == "the control socket is root-only":
                    why = NOT_ALLOWED
                raise ControlPermissionError(
                    f"cannot connect to {self.path}: permission denied ({why})"
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
