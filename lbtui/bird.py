# SPDX-License-Identifier: Apache-2.0
"""BIRD 2's state, read over its control socket (the line protocol `birdc` speaks; stdlib only).

BIRD's user guide ("Remote control") defines the replies: every line starts with a four-digit code,
then "-" when more lines follow or " " on the last line of a reply; a line starting with a space
continues the previous code. Codes 0xxx end a reply successfully, 1xxx are table rows, 2xxx table
headings, 8xxx run-time errors and 9xxx parse errors. Only `show` commands are sent: this module
reads BIRD, it never configures it (announcing is a route in a kernel table: dataplane/announce.py).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_SOCKET = "/run/bird/bird.ctl"  # Debian's bird2 package
_CODE_RE = re.compile(r"^(\d{4})([ -])(.*)$")
_SINCE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2} [\d:.]+|\S+)\s*(.*)$")
MAX_REPLY_BYTES = 4 << 20
_PLACEHOLDER_RE = re.compile(r"@([A-Z][A-Z0-9_]*)@")


class BirdError(Exception):
    """BIRD cannot be reached, or it refused the command (the message says which)."""


@dataclass(frozen=True)
class Protocol:
    """One row of `show protocols`."""

    name: str
    proto: str  # "BGP", "Kernel", "BFD", "Device", ...
    table: str
    state: str  # "up", "down", "start", "stop"
    since: str
    info: str  # for BGP: the session state, or the last error


@dataclass(frozen=True)
class BgpSession:
    """A BGP protocol's session, from `show protocols all`."""

    name: str
    state: str  # "Established", "Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Down"
    neighbor: str | None
    neighbor_as: int | None
    local_as: int | None
    since: str
    last_error: str | None

    @property
    def established(self) -> bool:
        return self.state == "Established"


def parse_reply(text: str) -> list[tuple[int, str]]:
    """Reply text -> (code, line) pairs; a continuation line gets the code of the line before it."""
    out: list[tuple[int, str]] = []
    code = 0
    for line in text.splitlines():
        m = _CODE_RE.match(line)
        if m:
            code = int(m.group(1))
            out.append((code, m.group(3)))
        elif line.startswith(" "):
            out.append((code, line[1:]))
    return out


def _is_last(line: str) -> bool:
    m = _CODE_RE.match(line)
    return m is not None and m.group(2) == " "


def parse_protocols(reply: list[tuple[int, str]]) -> list[Protocol]:
    """Rows of `show protocols` (code 1002; also the first row of each `show protocols all` block)."""
    rows = []
    for code, line in reply:
        if code != 1002 or not line.strip() or line.startswith(" "):
            continue
        parts = line.split(None, 4)
        if len(parts) < 4:
            continue
        m = _SINCE_RE.match(parts[4].strip() if len(parts) > 4 else "")
        since, info = (m.group(1), m.group(2).strip()) if m else ("", "")
        rows.append(Protocol(parts[0], parts[1], parts[2], parts[3], since, info))
    return rows


def parse_bgp_sessions(reply: list[tuple[int, str]]) -> list[BgpSession]:
    """BGP sessions from `show protocols all`: each 1002 row followed by its 1006 details."""
    sessions: list[BgpSession] = []
    current: Protocol | None = None
    details: dict[str, str] = {}

    def flush() -> None:
        if current is not None and current.proto == "BGP":
            sessions.append(
                BgpSession(
                    name=current.name,
                    state=details.get("BGP state", current.info.split(" ")[0] if current.info else "Down"),
                    neighbor=details.get("Neighbor address"),
                    neighbor_as=_int(details.get("Neighbor AS")),
                    local_as=_int(details.get("Local AS")),
                    since=current.since,
                    last_error=details.get("Last error"),
                )
            )

    for code, line in reply:
        if code == 1002:
            rows = parse_protocols([(code, line)])
            if rows:
                flush()
                current, details = rows[0], {}
        elif code == 1006 and current is not None:
            key, sep, value = line.strip().partition(":")
            if sep and key not in details:  # the first occurrence: session-level, before channels
                details[key] = value.strip()
    flush()
    return sessions


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class BirdControl:
    """One command per connection: BIRD serves many clients, and a reader that connects per
    question never holds a socket BIRD would have to keep alive."""

    def __init__(self, path: str = DEFAULT_SOCKET, timeout_s: float = 2.0) -> None:
        self.path = path
        self.timeout_s = timeout_s

    def command(self, command: str) -> list[tuple[int, str]]:
        """Send one command; the reply as (code, line) pairs. BirdError on 8xxx/9xxx or no answer."""
        if "\n" in command:
            raise ValueError("one command, one line")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout_s)
                s.connect(self.path)
                self._read_reply(s)  # the greeting: "0001 BIRD 2.x ready."
                s.sendall(command.encode() + b"\n")
                reply = parse_reply(self._read_reply(s))
        except OSError as exc:
            raise BirdError(f"BIRD control socket {self.path}: {exc.strerror or exc}") from exc
        if reply and reply[-1][0] >= 8000:
            raise BirdError(f"BIRD refused {command!r}: {reply[-1][1]}")
        return reply

    @staticmethod
    def _read_reply(s: socket.socket) -> str:
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("BIRD closed the connection")
            buf += chunk
            if len(buf) > MAX_REPLY_BYTES:
                raise ConnectionError("reply too long")
            if buf.endswith(b"\n"):
                last = buf.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode(errors="replace")
                if _is_last(last):
                    return buf.decode(errors="replace")

    def protocols(self) -> list[Protocol]:
        return parse_protocols(self.command("show protocols"))

    def bgp_sessions(self) -> list[BgpSession]:
        """Every BGP protocol's session state and neighbour (the state operators look at)."""
        return parse_bgp_sessions(self.command("show protocols all"))


def render_config(template: str, values: Mapping[str, object]) -> str:
    """Fill the @NAME@ placeholders of a configs/bird/ template (comments are left as written).

    ValueError names every placeholder without a value and every value without a placeholder."""
    used: set[str] = set()
    missing: set[str] = set()

    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            missing.add(name)
            return m.group(0)
        used.add(name)
        return str(values[name])

    lines = []
    for line in template.splitlines(keepends=True):
        code, hash_, comment = line.partition("#")
        lines.append(_PLACEHOLDER_RE.sub(fill, code) + hash_ + comment)
    unused = set(values) - used
    if missing or unused:
        raise ValueError(
            f"BIRD template: no value for {sorted(missing)}; no placeholder for {sorted(unused)}"
        )
    return "".join(lines)
