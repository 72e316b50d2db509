# SPDX-License-Identifier: Apache-2.0
"""Command palette (: or ctrl+p): the console's own actions, nothing that bypasses a confirmation."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from lbtui.model import DrainState
from lbtui.screens.operate import TRAFFIC_ACTIONS

if TYPE_CHECKING:
    from lbtui.app import LbtuiApp


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


def console_actions(app: LbtuiApp, read_only: bool = False) -> list[tuple[str, str, Callable[[], object]]]:
    """(title, help, callback) of every palette entry; read_only: none that changes traffic."""
    actions = _all_actions(app)
    if read_only:
        actions = [
            a for a in actions if getattr(a[2], "__name__", "").removeprefix("action_") not in TRAFFIC_ACTIONS
        ]
    return actions


def _all_actions(app: LbtuiApp) -> list[tuple[str, str, Callable[[], object]]]:
    b = app.selected_backend()
    target = f"{b.address} of {b.proxy}" if b else "the selected backend"
    drain = "Undrain" if b is not None and b.drain is not DrainState.ACTIVE else "Drain"
    proxy = b.proxy if b else "the selected backend's proxy"
    maint = "End the maintenance of" if b is not None and b.maintenance else "Maintenance of"
    return [
        (f"{drain} {target}", "drain: no new connections, existing ones continue (d)", app.action_drain),
        (
            f"{maint} {target}",
            "no new connections and no health checks until ended (m)",
            app.action_maintenance,
        ),
        (f"Health of {target}", "force it up or down, or back to its checks (h)", app.action_health),
        (f"Reweight {target}", "set the configured weight (w)", app.action_reweight),
        (f"Weight +1 of {target}", "one step up, at once (+)", app.action_weight_up),
        (f"Weight -1 of {target}", "one step down, at once (-)", app.action_weight_down),
        (f"Add a backend to {proxy}", "address, weight and group (a)", app.action_add_backend),
        (f"Remove {target}", "its connections finish, or are cut (x)", app.action_remove_backend),
        (
            f"Rate limits of {proxy}",
            "per source and per backend new conns/s (l)",
            app.action_rate_limits,
        ),
        (
            f"Circuit breaker of {target}",
            "hold it open, hold it closed, or reset it (c)",
            app.action_circuit,
        ),
        (f"Chart of {target}", "its history, events on the time axis (g)", app.action_chart),
        (
            "Latency window",
            "percentiles over 10 s, 1 min, 5 min or lifetime (t)",
            app.action_latency_window,
        ),
        ("Reload configuration", "re-read the configuration file (r)", app.action_reload),
        (
            "Withdraw or announce VIP",
            "BGP: the selected proxy's VIP out of rotation, or back (b)",
            app.action_announce,
        ),
        ("Filter this pane", "show only rows or lines containing a text (/)", app.action_filter),
        ("Export view", "SVG screenshot and the snapshot as JSON (e)", app.action_export),
        ("Sort flows", "conntrack: bytes, age, idle, backend (s)", app.action_sort),
        ("Help", "list every key (?)", app.action_help),
        ("Quit", "quit the console (q)", app.action_quit),
    ]
