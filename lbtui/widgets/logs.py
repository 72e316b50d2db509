# SPDX-License-Identifier: Apache-2.0
"""Append-only panes: the access log tail and the events log (engine events and command results)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, TypeVar

from rich.text import Text
from textual.widgets import RichLog

from lbtui.model import CommandResult, Event, Level
from lbtui.widgets import fmt

T = TypeVar("T")

LEVEL_STYLE = {Level.INFO: "cyan", Level.WARNING: "yellow", Level.ERROR: "bold red"}


def new_tail_items(old: Sequence[T], new: Sequence[T]) -> list[T]:
    """Items of the tail `new` that were not in the previous tail `old`.

    Both are the last lines of the same growing log, so the longest end of `old` that starts `new`
    is what both have seen; the rest of `new` is new. No overlap means everything is new.
    """
    old = list(old)
    new = list(new)
    for overlap in range(min(len(old), len(new)), 0, -1):
        if old[-overlap:] == new[:overlap]:
            return new[overlap:]
    return new


class FilteredLog(RichLog):
    """A RichLog that keeps its lines (bounded), so `/` can show only those matching a filter."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.needle = ""
        self.shown = 0  # lines written under the current filter
        self._kept: deque[Text] = deque(maxlen=self.max_lines)

    @property
    def total(self) -> int:
        return len(self._kept)

    def add(self, line: Text) -> None:
        self._kept.append(line)
        if fmt.matches(self.needle, line.plain):
            self.shown += 1
            self.write(line)

    def set_filter(self, needle: str) -> None:
        if needle == self.needle:
            return
        self.needle = needle
        self.clear()
        self.shown = 0
        for line in self._kept:
            if fmt.matches(needle, line.plain):
                self.shown += 1
                self.write(line)


class AccessLog(FilteredLog):
    """Tail of the access log: only lines not shown yet are written."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_lines", 2000)
        super().__init__(wrap=False, markup=False, highlight=False, **kwargs)
        self._tail: tuple[str, ...] = ()

    def show(self, tail: tuple[str, ...]) -> None:
        for line in new_tail_items(self._tail, tail):
            self.add(Text(line))
        self._tail = tail


class EventLog(FilteredLog):
    """Engine events, oldest first, and the result of every command the console submitted."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_lines", 5000)
        super().__init__(wrap=True, markup=False, highlight=False, **kwargs)

    def add_events(self, events: Sequence[Event]) -> None:
        for event in events:
            line = Text.assemble(
                (fmt.clock(event.ts), "dim"),
                " ",
                (f"{event.level:<7}", LEVEL_STYLE[event.level]),
                " ",
                (f"{event.kind:<8}", "bold"),
                " ",
                event.message,
            )
            self.add(line)

    def add_result(self, ts: float, what: str, result: CommandResult) -> None:
        status = ("ok     ", "green") if result.ok else ("failed ", "bold red")
        line = Text.assemble(
            (fmt.clock(ts), "dim"),
            " ",
            status,
            " ",
            ("console ", "bold"),
            " ",
            f"{what}: {result.message}",
        )
        self.add(line)

    def add_note(self, ts: float, message: str, level: Level = Level.INFO) -> None:
        self.add(
            Text.assemble((fmt.clock(ts), "dim"), " ", (f"{level:<7}", LEVEL_STYLE[level]), " ", message)
        )
