# SPDX-License-Identifier: Apache-2.0
"""Run an Engine on a thread of its own: the in-process `EngineHandle` for front ends.

The engine's loop (counters, sweeps, health checks) never waits for the console's repaint and the
console never waits for a map read: they meet only through snapshots (immutable, replaced whole),
the bounded event list, and commands handed over with run_coroutine_threadsafe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Sequence

from lbtui import model
from lbtui.engine import Engine

log = logging.getLogger(__name__)


class EngineRunner:
    """Implements model.EngineHandle for an engine running in this process."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="lbtui-engine", daemon=True)
        self._started = concurrent.futures.Future[None]()
        self._closed = False

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def start(self) -> None:
        """Start the engine; raises what the engine raised if it could not start."""
        self._thread.start()
        self._started.result()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._engine.start())
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
