# SPDX-License-Identifier: Apache-2.0
"""Finding the running instances: `lbtui ctl` and `lbtui attach` without --socket, and `lbtui ctl list`.

Every instance serves its control socket, and perhaps a read-only one, in the run directory
(/run/lbtui; $LBTUI_RUN_DIR replaces it). Each `*.sock` there is asked `hello`; the sockets that
answer with the same pid are one instance. When exactly one instance answers, its socket is the
one to use: the operator socket when we may open it (root), else its read-only socket.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass

from lbtui.control_client import ControlPermissionError, SocketEngineHandle

RUN_DIR = "/run/lbtui"
HELLO_TIMEOUT_S = 2.0


def run_dir() -> str:
    return os.environ.get("LBTUI_RUN_DIR") or RUN_DIR


@dataclass(frozen=True)
class Found:
    """One socket in the run directory and what it answered (or why it did not)."""

    socket: str
    pid: int | None = None
    read_only: bool = False
    instance: str = ""
    config: str = ""
    version: str = ""
    refused: str | None = None  # we may not open it (permission): the reason

    @property
    def access(self) -> str:
        if self.refused is not None:
            return "refused"
        return "read-only" if self.read_only else "operator"


class NotFound(LookupError):
    """No instance, or more than one: the message says which and what to do."""

    def __init__(self, message: str, several: bool = False) -> None:
        super().__init__(message)
        self.several = several


def scan(directory: str | None = None) -> list[Found]:
    """Every socket of the run directory that an instance answers on, or that refused us; NotFound
    when we may not list the directory."""
    where = directory or run_dir()
    if os.path.isdir(where) and not os.access(where, os.R_OK | os.X_OK):
        raise NotFound(
            f"cannot look for instances in {where}: permission denied "
            "(use sudo, or give a read-only socket with --socket)"
        )
    found = []
    for path in sorted(glob.glob(os.path.join(where, "*.sock"))):
        client = SocketEngineHandle(path, connect_timeout=HELLO_TIMEOUT_S)
        try:
            hello = client.hello()
        except ControlPermissionError as exc:
            found.append(Found(path, refused=str(exc).split(": ", 1)[-1]))
            continue
        except (ConnectionError, OSError):
            continue  # a stale socket (nobody listens) or something else: not an instance
        finally:
            client.close()
        pid = hello.get("pid")
        found.append(
            Found(
                socket=path,
                pid=pid if isinstance(pid, int) else None,
                read_only=hello.get("read_only") is True,
                instance=str(hello.get("instance") or ""),
                config=str(hello.get("config") or ""),
                version=str(hello.get("lbtui") or ""),
            )
        )
    return found


def instances(found: Sequence[Found]) -> dict[int | None, list[Found]]:
    """The answering sockets by the pid of the instance behind them."""
    by_pid: dict[int | None, list[Found]] = {}
    for f in found:
        if f.refused is None:
            by_pid.setdefault(f.pid, []).append(f)
    return by_pid


def the_socket(found: Sequence[Found] | None = None, directory: str | None = None) -> str:
    """The socket of the one running instance; NotFound when there is none or several."""
    where = directory or run_dir()
    found = scan(where) if found is None else found
    by_pid = instances(found)
    if len(by_pid) == 1:
        sockets = next(iter(by_pid.values()))
        operator = [f for f in sockets if not f.read_only]
        return (operator or sockets)[0].socket
    if len(by_pid) > 1:
        listing = "\n".join(f"  {line}" for line in format_list(found).splitlines())
        raise NotFound(
            f"{len(by_pid)} lbtui instances run; choose one with --socket PATH:\n{listing}", several=True
        )
    refused = [f for f in found if f.refused is not None]
    if refused:
        raise NotFound(f"cannot connect to {refused[0].socket}: {refused[0].refused}")
    raise NotFound(
        f"no lbtui instance is running (no socket in {where} answers); "
        "start one, or give its socket with --socket"
    )


def format_list(found: Sequence[Found]) -> str:
    """`lbtui ctl list`: one line per socket."""
    rows = [("SOCKET", "ACCESS", "PID", "INSTANCE", "VERSION", "CONFIG")] + [
        (
            f.socket,
            f.access,
            "-" if f.pid is None else str(f.pid),
            f.instance or "-",
            f.version or "-",
            f.config or (f.refused or "-"),
        )
        for f in found
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"
