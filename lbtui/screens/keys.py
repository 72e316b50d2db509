# SPDX-License-Identifier: Apache-2.0
"""The console's keys, its stylesheet, and the help built from the keys so it cannot go stale."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.binding import Binding, BindingType

from lbtui.screens.operate import TRAFFIC_ACTIONS

if TYPE_CHECKING:
    from textual.app import App

PANES = (
    ("backends", "Backends"),
    ("conntrack", "Conntrack"),
    ("circuits", "Circuits"),
    ("latency", "Latency"),
    ("access", "Access log"),
    ("events", "Events"),
)


APP_CSS = """
#summary { height: 1; background: $panel; }
#peers { height: 1; background: $panel; }
#banner { display: none; height: auto; padding: 0 1; background: $error; color: $text; text-style: bold; }
#banner.stopped { background: $warning; }
TabbedContent { height: 1fr; }
TabPane { padding: 0; }
#ct-status { height: 1; padding: 0 1; }
#ct-filter { display: none; dock: bottom; }
.pane-filter { display: none; dock: bottom; }
.pane-note { display: none; height: auto; padding: 0 1; color: $text-muted; text-style: italic; }
#backends-table { height: 1fr; }
#proxies { height: auto; max-height: 50%; padding: 0 1; border-top: solid $primary-darken-2; }
#circuit-table { height: auto; max-height: 60%; }
#circuit-log { height: 1fr; min-height: 3; border-top: solid $primary-darken-2; }
LatencyPane { padding: 0 1; }
ModalScreen { align: center middle; }
.dialog {
    width: 66; max-width: 100%; height: auto; max-height: 100%;
    padding: 1 2 0 2; border: round $primary; background: $surface;
}
.dialog Label { width: 100%; }
.dialog Input { margin-top: 1; }
.dialog .buttons { height: auto; align-horizontal: right; margin: 1 0; }
.dialog .buttons Button { margin-left: 2; min-width: 12; }
.dialog .error { display: none; color: $error; text-style: bold; height: auto; margin-top: 1; }
#limits { grid-size: 2; grid-columns: 1fr 14; grid-rows: 1; grid-gutter: 1 0; height: auto; }
#limits { margin-top: 1; }
#limits Input { margin: 0; }
#help { width: 76; }
#help VerticalScroll { height: auto; max-height: 24; margin: 1 0; }
"""

BINDINGS: list[BindingType] = [
    Binding(
        "d",
        "drain",
        "Drain",
        id="drain",
        tooltip="drain the selected backend (no new connections), or undrain it",
    ),
    Binding(
        "m",
        "maintenance",
        "Maint",
        show=False,
        id="maintenance",
        tooltip="maintenance of the selected backend (no new connections, no health checks), or end it",
    ),
    Binding(
        "h",
        "health",
        "Health",
        show=False,
        id="health",
        tooltip="force the selected backend's health up or down, or back to its checks",
    ),
    Binding("w", "reweight", "Weight", id="reweight", tooltip="set the selected backend's weight"),
    Binding("plus", "weight_up", "Weight +1", show=False, id="weight_up", tooltip="weight +1 (at once)"),
    Binding("minus", "weight_down", "Weight -1", show=False, id="weight_down", tooltip="weight -1 (at once)"),
    Binding(
        "a",
        "add_backend",
        "Add",
        show=False,
        id="add_backend",
        tooltip="add a backend to the selected backend's proxy",
    ),
    Binding(
        "x",
        "remove_backend",
        "Remove",
        show=False,
        id="remove_backend",
        tooltip="remove the selected backend (its connections finish, or are cut)",
    ),
    Binding(
        "l",
        "rate_limits",
        "Limits",
        id="rate_limits",
        tooltip="rate limits of the selected backend's proxy",
    ),
    Binding(
        "c",
        "circuit",
        "Circuit",
        show=False,
        id="circuit",
        tooltip="circuit breaker of the selected backend: hold open, hold closed, reset",
    ),
    Binding("r", "reload", "Reload", id="reload", tooltip="reload the configuration file"),
    Binding(
        "b",
        "announce",
        "BGP",
        show=False,
        id="announce",
        tooltip="withdraw the selected backend's proxy VIP from BGP (out of rotation), or announce it again",
    ),
    Binding(
        "g",
        "chart",
        "Chart",
        id="chart",
        tooltip="chart of the selected backend's history (p: its proxy)",
    ),
    Binding(
        "t",
        "latency_window",
        "Window",
        id="latency_window",
        tooltip="latency window: 10 s, 1 min, 5 min, lifetime (shown beside lifetime)",
    ),
    Binding("slash", "filter", "Filter", id="filter", tooltip="filter the pane you are in"),
    Binding("s", "sort", "Sort", id="sort", tooltip="sort flows: bytes, age, idle, backend"),
    Binding(
        "e",
        "export",
        "Export",
        show=False,
        id="export",
        tooltip="export this view: an SVG screenshot and the snapshot as JSON (paths shown)",
    ),
    Binding("question_mark", "help", "Help", id="help", tooltip="this list of keys"),
    Binding(
        "colon",
        "command_palette",
        "Commands",
        id="command_palette",
        tooltip="command palette: every action by name, and Textual's (theme, keys, screenshot)",
    ),
    Binding(
        "ctrl+p",
        "command_palette",
        "Commands",
        show=False,
        id="command_palette_ctrl",
        priority=True,  # even from inside a text box
        tooltip="the command palette too",
    ),
    Binding("q", "quit", "Quit", id="quit", tooltip="quit (asks first)"),
    *(
        Binding(
            str(n),
            f"show_pane('{pane}')",
            title,
            show=False,
            id=f"pane_{pane}",
            tooltip=f"show the {title} pane",
        )
        for n, (pane, title) in enumerate(PANES, start=1)
    ),
]


def key_help(app: App[Any], read_only: bool = False) -> list[tuple[str, str]]:
    rows = []
    panes = []
    for binding in BINDINGS:
        assert isinstance(binding, Binding)
        if read_only and binding.action in TRAFFIC_ACTIONS:
            continue
        if binding.action.startswith("show_pane"):
            panes.append((binding.key, binding.description))
            continue
        keys = " ".join(app.get_key_display(Binding(key, "")) for key in binding.key.split(","))
        rows.append((keys, binding.tooltip or binding.description))
    rows += [
        (" ".join(key for key, _ in panes), "show a pane: " + ", ".join(title for _, title in panes)),
        ("ctrl+q", "quit (asks first)"),
        ("↑ ↓ pgup pgdn", "move the selection in a table"),
        ("tab shift+tab", "move between the tabs, the table and other widgets"),
        ("enter", "on a backend: its chart (like g)"),
        ("p z", "in the chart: the proxy as a whole or the backend; span 5 min, 15 min, 1 h"),
        ("escape", "close a dialog or the chart; in a filter: clear it"),
    ]
    return rows
