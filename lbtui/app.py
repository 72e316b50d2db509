# SPDX-License-Identifier: Apache-2.0
"""The Textual operator console: shows the engine's snapshots and submits the operator's commands.

It talks to the engine only through an `EngineHandle` (in-process runner or control-socket client),
and only from worker threads, so a slow or vanished engine never blocks the screen. Polls never
overlap: the next one is scheduled when the previous one has finished.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import ClassVar

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import BindingType
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from lbtui.console_fetch import ConsoleFetcher, PeerState, Poll, error_text
from lbtui.model import (
    BackendView,
    Command,
    CommandResult,
    EngineHandle,
    Event,
    FlowQuery,
    Level,
    Reload,
    Snapshot,
    Stop,
)
from lbtui.screens import operate
from lbtui.screens.chart import ChartScreen
from lbtui.screens.commands import ConsoleCommands, console_actions
from lbtui.screens.confirm import ConfirmScreen
from lbtui.screens.export import export_view
from lbtui.screens.help import HelpScreen
from lbtui.screens.keys import APP_CSS, BINDINGS, PANES, key_help
from lbtui.screens.operate import TRAFFIC_ACTIONS, TrafficActions, describe_command
from lbtui.widgets import fmt
from lbtui.widgets.backends import TREND_S, BackendsTable, ProxiesSummary, find_backend
from lbtui.widgets.circuits import CircuitsPane, CircuitTable
from lbtui.widgets.conntrack import ConntrackPane
from lbtui.widgets.filter import Filterable, PaneFilter
from lbtui.widgets.history_cache import SeriesCache
from lbtui.widgets.latency import LatencyPane
from lbtui.widgets.logs import AccessLog, EventLog
from lbtui.widgets.notes import pane_notes
from lbtui.widgets.summary import SummaryBar, peers_text

log = logging.getLogger(__name__)

LATENCY_WINDOWS: tuple[int | None, ...] = (10, 60, 300, None)  # t cycles; None: lifetime
FILTERED = {
    "backends": "backends",
    "circuits": "backends",
    "latency": "backends",
    "access": "lines",
    "events": "events",
}

QUIT_EMBEDDED = "Quit lbtui? This stops the load balancer and detaches its programs."
QUIT_ATTACHED = "Quit the console? The load balancer keeps running."


class LbtuiApp(TrafficActions, App[CommandResult | None]):
    """Operator console. `run()` returns the result of the Stop command when quitting stopped the engine."""

    CSS = APP_CSS

    COMMANDS = App.COMMANDS | {ConsoleCommands}  # Textual's own commands (theme, keys, screenshot) too

    BINDINGS: ClassVar[list[BindingType]] = BINDINGS

    def __init__(
        self,
        handle: EngineHandle,
        *,
        refresh_s: float = 1.0,
        title: str = "lbtui",
        attached: bool = False,
        read_only: bool = False,
        export_dir: str = ".",
        peers: Mapping[str, EngineHandle] | None = None,
    ) -> None:
        super().__init__()
        self.handle = handle
        # other instances shown under the header (`--peer`): polled on a worker of their own, so a
        # peer that hangs never holds up this instance's screen
        self.peers = dict(peers or {})
        self.fetcher = ConsoleFetcher(handle, self.peers, trend_s=TREND_S)  # called on workers only
        self._polling_peers = False
        self.export_dir = export_dir
        self.window_s: int | None = LATENCY_WINDOWS[0]
        self.trends = SeriesCache(keep=TREND_S)  # new/s of every target, for the backends sparklines
        self._note_texts: dict[str, str | None] = {}
        self.refresh_s = refresh_s
        self.title = title
        self.attached = attached
        self.read_only = read_only  # the keys that change traffic are hidden and refused
        self.snapshot: Snapshot | None = None  # the last one received
        self.connection_error: str | None = None  # set while snapshot() fails
        self.refreshes = 0  # snapshots applied, for tests and the curious
        self._event_seq = 0
        self._polling = False
        self._poll_again = False
        self._poll_timer: Timer | None = None
        self._stopping = False
        self._asking_quit = False

    # ---- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield SummaryBar(f" {self.title}  connecting…", id="summary")
        yield Static(peers_text([PeerState(name) for name in self.peers]), id="peers")
        yield Static(id="banner")
        with TabbedContent(id="tabs", initial="backends"):
            with TabPane("Backends", id="backends"):
                yield Static(id="backends-note", classes="pane-note", markup=False)
                yield BackendsTable(id="backends-table")
                yield ProxiesSummary(id="proxies")
                yield PaneFilter("backends", FILTERED["backends"])
            with TabPane("Conntrack", id="conntrack"):
                yield Static(id="conntrack-note", classes="pane-note", markup=False)
                yield ConntrackPane(id="conntrack-pane")
            with TabPane("Circuits", id="circuits"):
                yield Static(id="circuits-note", classes="pane-note", markup=False)
                yield CircuitsPane(id="circuits-pane")
                yield PaneFilter("circuits", FILTERED["circuits"])
            with TabPane("Latency", id="latency"):
                yield Static(id="latency-note", classes="pane-note", markup=False)
                yield LatencyPane(id="latency-pane")
                yield PaneFilter("latency", FILTERED["latency"])
            with TabPane("Access log", id="access"):
                yield Static(id="access-note", classes="pane-note", markup=False)
                yield AccessLog(id="access-log")
                yield PaneFilter("access", FILTERED["access"])
            with TabPane("Events", id="events"):
                yield Static(id="events-note", classes="pane-note", markup=False)
                yield EventLog(id="event-log")
                yield PaneFilter("events", FILTERED["events"])
        yield Footer(show_command_palette=False, compact=True)

    def on_mount(self) -> None:
        # Keep references: while a modal or the palette is on top, app.query_one looks at that screen.
        self.tabs = self.query_one(TabbedContent)
        self.summary = self.query_one(SummaryBar)
        self.banner = self.query_one("#banner", Static)
        self.peers_bar = self.query_one("#peers", Static)
        self.peers_bar.display = bool(self.peers)
        self.backends_table = self.query_one(BackendsTable)
        self.proxies = self.query_one(ProxiesSummary)
        self.conntrack = self.query_one(ConntrackPane)
        self.circuits = self.query_one(CircuitsPane)
        self.latency = self.query_one(LatencyPane)
        self.access_log = self.query_one(AccessLog)
        self.event_log = self.query_one(EventLog)
        self.filtered: dict[str, Filterable] = {
            "backends": self.backends_table,
            "circuits": self.circuits.query_one(CircuitTable),
            "latency": self.latency,
            "access": self.access_log,
            "events": self.event_log,
        }
        self.notes = {pane: self.query_one(f"#{pane}-note", Static) for pane, _ in PANES}
        self.backends_table.focus()
        self._start_poll()

    # ---- polling ----------------------------------------------------------------------------

    def _start_poll(self) -> None:
        self._poll_timer = None
        self._polling = True
        self._fetch(self._event_seq, self.flow_query(), self.trends.since)
        if self.peers and not self._polling_peers:
            self._polling_peers = True
            self._fetch_peers()

    def flow_query(self) -> FlowQuery | None:
        """The conntrack pane's query while that pane is shown, else None: the engine reads every
        flow in conntrack only while a front end asks for flows (lbtui/engine/flowquery.py), which
        with a million flows costs a tenth of a core and hundreds of MB."""
        return self.conntrack.flow_query if self.tabs.active == "conntrack" else None

    @work(thread=True, name="poll", group="poll", exit_on_error=False)
    def _fetch(self, after_seq: int, flows: FlowQuery | None, trends_since: float | None) -> Poll:
        return self.fetcher.poll(after_seq, flows, trends_since)

    @work(thread=True, name="peers", group="peers", exit_on_error=False)
    def _fetch_peers(self) -> list[PeerState]:
        return self.fetcher.peer_states()

    @property
    def history_error(self) -> str | None:
        """Why the last sparkline query failed (None: it did not)."""
        return self.fetcher.history_error

    def refresh_now(self) -> None:
        """Poll as soon as possible, without overlapping a poll in flight."""
        if self._polling:
            self._poll_again = True
            return
        if self._poll_timer is not None:
            self._poll_timer.stop()
        self._start_poll()

    def on_conntrack_pane_query_changed(self, _: ConntrackPane.QueryChanged) -> None:
        self.refresh_now()

    @on(TabbedContent.TabActivated, "#tabs")
    def _pane_shown(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "conntrack":
            self.refresh_now()  # its flows now, not at the next refresh

    def _poll_finished(self) -> None:
        self._polling = False
        if self._stopping:
            return
        if self._poll_again:
            self._poll_again = False
            self.call_later(self._start_poll)
        else:
            self._poll_timer = self.set_timer(self.refresh_s, self._start_poll)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.node is not self or not self.is_running:
            return  # not ours, or the app is shutting down and its widgets are going away
        if worker.name == "poll":
            if event.state is WorkerState.SUCCESS and worker.result is not None:
                poll: Poll = worker.result
                if poll.trends is not None:
                    self.trends.merge(poll.trends)
                self._apply(poll.snapshot, poll.events)
            elif event.state is WorkerState.ERROR:
                self._lost(worker.error)
            else:
                return
            self._poll_finished()
        elif worker.name == "peers" and event.state in (WorkerState.SUCCESS, WorkerState.ERROR):
            self._polling_peers = False
            if event.state is WorkerState.SUCCESS and worker.result is not None:
                self.peers_bar.update(peers_text(worker.result))
        elif worker.name == "command" and event.state is WorkerState.SUCCESS and worker.result is not None:
            command, result = worker.result
            self._command_done(command, result)

    def _apply(self, snapshot: Snapshot, events: Sequence[Event]) -> None:
        with self.batch_update():
            if self.connection_error is not None:
                self.connection_error = None
                self.event_log.add_note(time.time(), "connection to the instance is back")
                self.notify("connection to the instance is back", title="reconnected")
            self.snapshot = snapshot
            self.summary.show(snapshot, self.title, self.attached, self.read_only)
            self._show_banner(None if snapshot.running else "the load balancer has stopped", stopped=True)
            self.backends_table.show(snapshot, self._trend_points(snapshot))
            self.proxies.show(snapshot)
            self.conntrack.show(snapshot)
            self.circuits.show(snapshot)
            self.latency.show(snapshot)
            self.access_log.show(snapshot.access_log_tail)
            self.event_log.add_events(events)
            self.show_notes()
        if events:
            self._event_seq = events[-1].seq
        self.refreshes += 1

    def _trend_points(self, snapshot: Snapshot) -> dict[tuple[str, str], Sequence[float | None]]:
        return {
            (b.proxy, b.address): self.trends.values((b.proxy, b.address), "new_flows")
            for s in snapshot.services
            for b in s.all_backends()
        }

    def show_notes(self) -> None:
        """Say why a pane shows nothing (nothing configured, nothing yet, or nothing matches)."""
        if self.snapshot is None:
            return
        for pane, text in pane_notes(self.snapshot, self.filtered, self.conntrack).items():
            if self._note_texts.get(pane) == text:  # notes start hidden and empty (None)
                continue  # unchanged: no relayout
            self._note_texts[pane] = text
            note = self.notes[pane]
            note.update(text or "")
            note.display = text is not None

    def _lost(self, error: BaseException | None) -> None:
        message = f"lost connection to the instance: {error_text(error)}"
        if self.connection_error is None:
            log.warning("%s", message)
            self.event_log.add_note(time.time(), message, Level.ERROR)
        self.connection_error = error_text(error)
        self._show_banner(f"{message} — retrying every {self.refresh_s:g}s")

    def _show_banner(self, text: str | None, *, stopped: bool = False) -> None:
        if text is None:
            if self.connection_error is None:
                self.banner.display = False
            return
        self.banner.set_class(stopped, "stopped")
        self.banner.update(text)
        self.banner.display = True

    # ---- commands ---------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Textual asks before a key runs an action: a read-only console has no traffic actions."""
        return not (self.read_only and action in TRAFFIC_ACTIONS)

    def submit_command(self, command: Command) -> None:
        """Submit on a worker thread; the result is notified and logged in the events pane."""
        if self.read_only and not isinstance(command, Stop):
            self.notify(
                "read-only console: commands that change traffic need the operator socket", severity="warning"
            )
            return
        self._submit(command)

    @work(thread=True, name="command", group="commands", exit_on_error=False)
    def _submit(self, command: Command) -> tuple[Command, CommandResult]:
        return command, self.fetcher.submit(command)

    def _command_done(self, command: Command, result: CommandResult) -> None:
        if isinstance(command, Reload) and command.dry_run:  # `r`: show what would change, then ask
            operate.reload_planned(self, result)
            return
        what = describe_command(command)
        log.info("%s: %s %s", what, "ok" if result.ok else "failed", result.message)
        self.event_log.add_result(time.time(), what, result)
        self.notify(
            result.message,
            title=f"{what}: {'done' if result.ok else 'failed'}",
            severity="information" if result.ok else "error",
            timeout=4 if result.ok else 10,
            markup=False,  # it names backends: "[fd00::1]:80" is no markup tag
        )
        if isinstance(command, Stop):
            self.exit(result)
            return
        self.refresh_now()

    def selected_backend(self) -> BackendView | None:
        table = (
            self.circuits.query_one(CircuitTable) if self.tabs.active == "circuits" else self.backends_table
        )
        return find_backend(self.snapshot, table.selected_key())

    def selection_or_warn(self) -> BackendView | None:
        backend = self.selected_backend()
        if backend is None:
            self.notify("select a backend in the Backends pane first", severity="warning")
        return backend

    # ---- actions (keys and palette); those that change traffic: operate.TrafficActions ----------

    def action_filter(self) -> None:
        """`/`: filter the pane on screen (conntrack's filter is answered by the engine)."""
        pane = str(self.tabs.active)
        if pane == "conntrack":
            self.conntrack.open_filter()
        else:
            self.query_one(f"#{pane}-filter", PaneFilter).open()

    @on(Input.Changed, ".pane-filter")
    def _pane_filter_changed(self, event: Input.Changed) -> None:
        box = event.input
        assert isinstance(box, PaneFilter)
        self.filtered[box.pane].set_filter(box.needle)
        self.show_notes()

    @on(Input.Submitted, ".pane-filter")
    def _pane_filter_submitted(self, event: Input.Submitted) -> None:
        box = event.input
        assert isinstance(box, PaneFilter)
        box.display = bool(box.needle)  # a filter in force stays in sight
        self.action_show_pane(box.pane)

    def action_latency_window(self) -> None:
        index = LATENCY_WINDOWS.index(self.window_s)
        self.window_s = LATENCY_WINDOWS[(index + 1) % len(LATENCY_WINDOWS)]
        self.backends_table.set_window(self.window_s)
        self.latency.set_window(self.window_s)
        name = "lifetime" if self.window_s is None else f"the last {fmt.window(self.window_s)}"
        self.notify(
            f"latency percentiles over {name} (lifetime beside them)", title="latency window", timeout=3
        )

    def action_chart(self) -> None:
        b = self.selection_or_warn()
        if b is None:
            return
        now = self.snapshot.taken_at if self.snapshot else time.time()
        self.push_screen(
            ChartScreen(self.handle.history, b.proxy, b.address, now=now, refresh_s=self.refresh_s)
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table is self.backends_table:  # enter on a backend: its chart
            self.action_chart()

    def action_export(self) -> None:
        try:
            view = "chart" if isinstance(self.screen, ChartScreen) else str(self.tabs.active)
            svg, data = export_view(self, self.export_dir, view)
        except OSError as exc:
            self.notify(
                f"cannot export to {self.export_dir}: {error_text(exc)}", severity="error", timeout=10
            )
            return
        message = f"screenshot {svg}" + (f", snapshot {data}" if data else " (no snapshot received yet)")
        self.event_log.add_note(time.time(), f"exported {message}")
        self.notify(message, title="exported", timeout=10)

    def action_sort(self) -> None:
        self.action_show_pane("conntrack")
        self.conntrack.cycle_sort()

    def action_show_pane(self, pane: str) -> None:
        self.tabs.active = pane
        focus_target = {
            "backends": self.backends_table,
            "conntrack": self.conntrack.query_one("#ct-table"),
            "circuits": self.circuits.query_one(CircuitTable),
            "latency": self.latency,
            "access": self.access_log,
            "events": self.event_log,
        }[pane]
        focus_target.focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.key_help()))

    async def action_quit(self) -> None:
        if self._asking_quit or self._stopping:
            return
        self._asking_quit = True

        def answered(yes: bool | None) -> None:
            self._asking_quit = False
            if not yes:
                return
            if self.attached:
                self.exit(None)
                return
            self._stopping = True
            if self._poll_timer is not None:
                self._poll_timer.stop()
            self.notify("stopping the load balancer…", title="quit")
            self.submit_command(Stop())

        question = QUIT_ATTACHED if self.attached else QUIT_EMBEDDED
        self.push_screen(ConfirmScreen(question, "Quit", danger=not self.attached), answered)

    # ---- help and palette -------------------------------------------------------------------

    def key_help(self) -> list[tuple[str, str]]:
        return key_help(self, self.read_only)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's commands (theme, keys, screenshot...) but not its quit: ours asks first."""
        for command in super().get_system_commands(screen):
            if command.title != "Quit":
                yield command

    def palette_actions(self) -> list[tuple[str, str, Callable[[], object]]]:
        """The console's commands for the palette, titles naming the current selection."""
        return console_actions(self, self.read_only)
