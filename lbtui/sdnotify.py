# SPDX-License-Identifier: Apache-2.0
"""systemd's service notification protocol (sd_notify(3)) for Type=notify: READY, STATUS, WATCHDOG.

A notification is one datagram of newline-separated KEY=VALUE lines sent to $NOTIFY_SOCKET (a socket
path, or an abstract socket when it starts with "@"). Outside systemd (no NOTIFY_SOCKET) every call
does nothing. The watchdog is on when $WATCHDOG_USEC is set (and $WATCHDOG_PID, when set, is this
process); systemd's advice is to ping at half that interval.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        self._stopping = False
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        for_us = not pid or (pid.isdigit() and int(pid) == os.getpid())
        self.watchdog_s: float | None = (
            int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and for_us else None
        )

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *lines: str) -> bool:
        """Send one notification; False (and a debug log) when there is no socket or sending failed."""
        if not self._address:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # never block the caller: if the receiver's queue is full, this notification is lost (a
            # watchdog ping is sent again within a quarter of the interval)
            self._socket.sendto("\n".join(lines).encode(), socket.MSG_DONTWAIT, self._address)
        except OSError as exc:
            log.debug("sd_notify %s: %s", lines, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str) -> bool:
        """STOPPING=1, once: the first caller that sees the stop says it (False for the others)."""
        if self._stopping:
            return False
        self._stopping = True
        return self.notify("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
