# SPDX-License-Identifier: Apache-2.0
"""Run an Engine on a thread of its own: the in-process `EngineHandle` for front ends.

The engine's loop (counters, sweeps, health checks) never waits for the console's repaint and the
console never waits for a map read: they meet only through snapshots (immutable, replaced whole),
the bounded event list, and commands handed over with run_coroutine_threadsafe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Sequence

from lbtui import model
from lbtui.engine import Engine

log = logging.getLogger(__name__)


class StartCancelled(Exception):
    """A stop was requested while the engine started; what the start had done is undone."""


class EngineRunner:
    """Implements model.EngineHandle for an engine running in this process."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="lbtui-engine", daemon=True)
        self._started = concurrent.futures.Future[None]()
        self._start_task: asyncio.Task[None] | None = None
        self._cancel_start = threading.Event()
        self._closed = False

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def start(self) -> None:
        """Start the engine; raises what the engine raised if it could not start, StartCancelled if
        `cancel_start` ended the start."""
        self._thread.start()
        try:
            self._started.result()
        except asyncio.CancelledError:
            raise StartCancelled("stopped while starting") from None

    def cancel_start(self) -> None:
        """End a start in progress (the engine undoes what it did); nothing once it has started.
        Safe from any thread and from a signal handler."""
        if self._cancel_start.is_set():
            return  # once: a second cancellation must not interrupt the engine's undoing
        self._cancel_start.set()
        with contextlib.suppress(RuntimeError):  # the loop has ended
            self._loop.call_soon_threadsafe(self._cancel_start_task)

    def _cancel_start_task(self) -> None:
        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            if self._cancel_start.is_set():
                raise asyncio.CancelledError()
            self._start_task = self._loop.create_task(self._engine.start())
            self._loop.run_until_complete(self._start_task)
        except BaseException as exc:
            self._started.set_exception(exc)
            self._loop.close()
            return
        self._started.set_result(None)
        try:
            self._loop.run_until_complete(self._engine.wait_stopped())
        finally:
            pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
            for t in pending:
                t.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    # ---- EngineHandle ---------------------------------------------------------------------------

    def snapshot(self, flows: model.FlowQuery | None = None) -> model.Snapshot:
        return self._engine.snapshot(flows)

    def submit(self, command: model.Command, timeout: float = 10.0) -> model.CommandResult:
        if not self._thread.is_alive():
            return model.CommandResult(False, "the engine is not running")
        fut = asyncio.run_coroutine_threadsafe(self._engine.execute(command), self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            return model.CommandResult(False, f"no answer from the engine within {timeout:g} s")

    def events_since(self, seq: int, limit: int = 1000) -> Sequence[model.Event]:
        return self._engine.events_since(seq, limit)

    def history(self, query: model.HistoryQuery) -> model.HistoryAnswer:
        return self._engine.history(query)

    def close(self) -> None:
        """Stop the engine (detaching its programs) and wait for its thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._engine.stop(), self._loop).result(15)
            except Exception:
                log.exception("stopping the engine")
            self._thread.join(15)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the engine has stopped (e.g. by a Stop command); True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
