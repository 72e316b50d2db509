# SPDX-License-Identifier: Apache-2.0
"""The signals that stop lbtui, handled from the first line of a start to the last of a stop
(docs/architecture.md#stopping).

SIGTERM and SIGINT are a clean stop at any moment: before anything is touched, during the BCC
compile, half-way through attaching, while the console starts. `Stopper.install` replaces Python's
defaults (SIGTERM kills, SIGINT raises KeyboardInterrupt wherever the main thread happens to be,
SIGHUP kills) before lbtui touches the kernel; from then on a signal is only recorded. Whoever runs
the current step of the life cycle registers what a stop means for it (`while_running`): cancel a
start in progress, end the console. Repeated signals change nothing: the first stop goes on.

SIGHUP reloads a headless instance (`reload` is set; the headless loop reloads) and stops a console
(the terminal it drew on is gone, e.g. a dropped SSH session).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopper:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self.reload = threading.Event()  # SIGHUP on a headless instance
        self.signum: int | None = None  # the first stop signal
        self._callbacks: list[Callable[[], None]] = []
        self._hup_stops = False

    def install(self, hup_stops: bool) -> None:
        """Take SIGTERM, SIGINT and SIGHUP (on the main thread, before anything is touched). Called
        again once the mode is known: a SIGHUP that came before then stops a console."""
        self._hup_stops = hup_stops
        for signum in (*STOP_SIGNALS, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        if hup_stops and self.reload.is_set():
            self.reload.clear()
            self.request(signal.SIGHUP)

    def release(self) -> None:
        """Give the signals back to their defaults (commands that change nothing: `--check`, `ctl`),
        delivering again the stop that came while they were ours: it ends the command as it would
        have."""
        for signum in (*STOP_SIGNALS, signal.SIGHUP):
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        if self.signum is not None:
            signal.raise_signal(self.signum)

    @property
    def requested(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is requested (or the timeout passes); True if one was."""
        return self._stop.wait(timeout)

    def request(self, signum: int | None = None) -> None:
        """Stop: record it and tell whoever runs now. Safe in a signal handler and from any thread."""
        first = not self._stop.is_set()
        if first:
            self.signum = signum
            self._stop.set()
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:  # a step that already ended; the recorded stop still holds
                log.debug("stop callback", exc_info=True)

    @contextlib.contextmanager
    def while_running(self, on_stop: Callable[[], None]) -> Iterator[None]:
        """Call `on_stop` if a stop is requested while the block runs (at once if one already was)."""
        self._callbacks.append(on_stop)
        try:
            if self.requested:
                on_stop()
            yield
        finally:
            self._callbacks.remove(on_stop)

    def describe(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a stop request"

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # runs on the main thread between two bytecodes: record, never block, never raise
        if signum == signal.SIGHUP and not self._hup_stops:
            self.reload.set()
            return
        self.request(signum)
