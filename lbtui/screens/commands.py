# SPDX-License-Identifier: Apache-2.0
"""Command palette (ctrl+p): the console's own actions, nothing that bypasses a confirmation."""

from __future__ import annotations

from collections.abc import Callable

from textual.command import DiscoveryHit, Hit, Hits, Provider


class ConsoleCommands(Provider):
    """Asks the app for `palette_actions()`: (title, help, callback), titles naming the current selection."""

    def _actions(self) -> list[tuple[str, str, Callable[[], object]]]:
        app = self.app
        if not hasattr(app, "palette_actions"):
            return []
        actions: list[tuple[str, str, Callable[[], object]]] = app.palette_actions()
        return actions

    async def discover(self) -> Hits:
        for title, help_text, callback in self._actions():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._actions():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, text=title, help=help_text)
