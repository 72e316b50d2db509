# SPDX-License-Identifier: Apache-2.0
"""What the operator console asks its engine, and its peers, for: each call blocks on an
`EngineHandle` (in-process runner or control-socket client), so the console makes them only from its
worker threads (lbtui/app.py) and a slow or vanished engine never blocks the screen.

Plain Python over the model (no Textual): the console's poll is one `poll()` (snapshot, events and
the sparklines' points), its peers bar one `peers()`, a command one `submit()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lbtui.model import (
    Command,
    CommandResult,
    EngineHandle,
    Event,
    FlowQuery,
    HistoryAnswer,
    HistoryQuery,
    Snapshot,
)


def error_text(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    return str(error) or type(error).__name__


@dataclass(frozen=True)
class PeerState:
    """Another instance shown beside this one (`--peer NAME=SOCKET`): its last snapshot, or why
    there is none."""

    name: str
    snapshot: Snapshot | None = None
    error: str | None = None


@dataclass(frozen=True)
class Poll:
    """One poll's answers: the snapshot, the events after the last one seen, the sparklines' points
    (None when the engine keeps no history or the query failed)."""

    snapshot: Snapshot
    events: list[Event]
    trends: HistoryAnswer | None


class ConsoleFetcher:
    """The console's calls to its engine and peers; `trend_s` is how far back the sparklines start."""

    def __init__(self, handle: EngineHandle, peers: Mapping[str, EngineHandle], trend_s: float) -> None:
        self.handle = handle
        self.peers = dict(peers)
        self.trend_s = trend_s
        self.history_error: str | None = None  # why the last sparkline query failed, None if it did not

    def poll(self, after_seq: int, flows: FlowQuery | None, trends_since: float | None) -> Poll:
        snapshot = self.handle.snapshot(flows)
        events = list(self.handle.events_since(after_seq))
        return Poll(snapshot, events, self.trends(snapshot, trends_since))

    def trends(self, snapshot: Snapshot, since: float | None) -> HistoryAnswer | None:
        """The new/s points since the last poll, for the sparklines; None if none are kept or on error."""
        if not snapshot.history_s:
            return None
        if since is None:
            since = snapshot.taken_at - self.trend_s
        try:
            answer = self.handle.history(HistoryQuery(since=since, series=("new_flows",)))
        except Exception as exc:  # sparklines are extra: a failure must not cost the snapshot
            self.history_error = error_text(exc)
            return None
        self.history_error = None
        return answer

    def peer_states(self) -> list[PeerState]:
        """Each peer's snapshot (no flows: the engine reads none for it), or why there is none."""
        states = []
        for name, handle in self.peers.items():
            try:
                states.append(PeerState(name, snapshot=handle.snapshot()))
            except Exception as exc:  # a peer that is gone is shown as such, never an error here
                states.append(PeerState(name, error=error_text(exc)))
        return states

    def submit(self, command: Command) -> CommandResult:
        try:
            return self.handle.submit(command)
        except Exception as exc:  # the engine's own errors come back as results; this is transport
            return CommandResult(False, error_text(exc))
