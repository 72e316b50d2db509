# SPDX-License-Identifier: Apache-2.0
"""The one interface between the engine and its front ends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from lbtui.model.commands import Command, CommandResult
from lbtui.model.history import HistoryAnswer, HistoryQuery
from lbtui.model.views import Event, FlowQuery, Snapshot


class EngineHandle(Protocol):
    """What a front end (console, headless, control socket) needs from an engine.

    Two implementations: the in-process runner (engine on its own thread and event loop) and the
    control-socket client. All methods are safe to call from any thread.
    """

    def snapshot(self, flows: FlowQuery | None = None) -> Snapshot: ...

    def submit(self, command: Command, timeout: float = 10.0) -> CommandResult: ...

    def events_since(self, seq: int, limit: int = 1000) -> Sequence[Event]: ...

    def history(self, query: HistoryQuery) -> HistoryAnswer: ...

    def close(self) -> None: ...
