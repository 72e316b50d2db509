# SPDX-License-Identifier: Apache-2.0
"""The Textual operator console: shows the engine's snapshots and submits the operator's commands.

It talks to the engine only through an `EngineHandle` (in-process runner or control-socket client),
and only from worker threads, so a slow or vanished engine never blocks the screen. Polls never
overlap: the next one is scheduled when the previous one has finished.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.timer import Timer
from textual.widgets import Footer, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from lbtui.model import (
    BackendView,
    CircuitCommand,
    Command,
    CommandResult,
    Drain,
    DrainState,
    EngineHandle,
    Event,
    FlowQuery,
    Level,
    Reload,
    SetRateLimit,
    SetWeight,
    Snapshot,
    Stop,
    Undrain,
)
from lbtui.screens.circuit import CIRCUIT_ACTIONS, CircuitScreen
from lbtui.screens.commands import ConsoleCommands
from lbtui.screens.confirm import ConfirmScreen
from lbtui.screens.help import HelpScreen
from lbtui.screens.ratelimit import RateLimitScreen
from lbtui.screens.weight import WeightScreen
from lbtui.widgets.backends import BackendsTable, ProxiesSummary, find_backend
from lbtui.widgets.circuits import CircuitsPane, CircuitTable
from lbtui.widgets.conntrack import ConntrackPane
from lbtui.widgets.latency import LatencyPane
from lbtui.widgets.logs import AccessLog, EventLog
from lbtui.widgets.summary import SummaryBar

log = logging.getLogger(__name__)

PANES = (
    ("backends", "Backends"),
    ("conntrack", "Conntrack"),
    ("circuits", "Circuits"),
    ("latency", "Latency"),
    ("access", "Access log"),
    ("events", "Events"),
)

QUIT_EMBEDDED = "Quit lbtui? This stops the load balancer and detaches its programs."
QUIT_ATTACHED = "Quit the console? The load balancer keeps running."


def describe_command(command: Command) -> str:
    """Short operator-facing name of a command, used in notifications and the events pane."""
    match command:
        case Drain(proxy=proxy, backend=backend):
            return f"drain {proxy} {backend}"
        case Undrain(proxy=proxy, backend=backend):
            return f"undrain {proxy} {backend}"
        case SetWeight(proxy=proxy, backend=backend, weight=weight):
            return f"weight {proxy} {backend} = {weight:,}"
        case SetRateLimit(proxy=proxy):
            return f"rate limits {proxy}"
        case Reload(path=path):
            return f"reload {path}" if path else "reload"
        case CircuitCommand(proxy=proxy, backend=backend, action=action):
            return f"circuit {proxy} {backend} {action.replace('_', '-')}"
        case Stop():
            return "stop"
    return type(command).__name__


def error_text(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    return str(error) or type(error).__name__


class LbtuiApp(App[CommandResult | None]):
    """Operator console. `run()` returns the result of the Stop command when quitting stopped the engine."""

    CSS = """
    #summary { height: 1; background: $panel; }
    #banner { display: none; height: auto; padding: 0 1; background: $error; color: $text; text-style: bold; }
    #banner.stopped { background: $warning; }
    TabbedContent { height: 1fr; }
    TabPane { padding: 0; }
    #ct-status { height: 1; padding: 0 1; }
    #ct-filter { display: none; dock: bottom; }
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

    COMMANDS = {ConsoleCommands}

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "d",
            "drain",
            "Drain",
            id="drain",
            tooltip="drain the selected backend (no new connections), or undrain it",
        ),
        Binding("w", "reweight", "Weight", id="reweight", tooltip="set the selected backend's weight"),
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
        Binding("slash", "filter", "Filter", id="filter", tooltip="filter the conntrack flows"),
        Binding("s", "sort", "Sort", id="sort", tooltip="sort flows: bytes, age, idle, backend"),
        Binding("question_mark", "help", "Help", id="help", tooltip="this list of keys"),
        Binding(
            "ctrl+p",
            "command_palette",
            "Commands",
            id="command_palette",
            priority=True,
            tooltip="command palette: every action by name",
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

    def __init__(
        self, handle: EngineHandle, *, refresh_s: float = 1.0, title: str = "lbtui", attached: bool = False
    ) -> None:
        super().__init__()
        self.handle = handle
        self.refresh_s = refresh_s
        self.title = title
        self.attached = attached
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
        yield Static(id="banner")
        with TabbedContent(id="tabs", initial="backends"):
            with TabPane("Backends", id="backends"):
                yield BackendsTable(id="backends-table")
                yield ProxiesSummary(id="proxies")
            with TabPane("Conntrack", id="conntrack"):
                yield ConntrackPane(id="conntrack-pane")
            with TabPane("Circuits", id="circuits"):
                yield CircuitsPane(id="circuits-pane")
            with TabPane("Latency", id="latency"):
                yield LatencyPane(id="latency-pane")
            with TabPane("Access log", id="access"):
                yield AccessLog(id="access-log")
            with TabPane("Events", id="events"):
                yield EventLog(id="event-log")
        yield Footer(show_command_palette=False, compact=True)

    def on_mount(self) -> None:
        # Keep references: while a modal or the palette is on top, app.query_one looks at that screen.
        self.tabs = self.query_one(TabbedContent)
        self.summary = self.query_one(SummaryBar)
        self.banner = self.query_one("#banner", Static)
        self.backends_table = self.query_one(BackendsTable)
        self.proxies = self.query_one(ProxiesSummary)
        self.conntrack = self.query_one(ConntrackPane)
        self.circuits = self.query_one(CircuitsPane)
        self.latency = self.query_one(LatencyPane)
        self.access_log = self.query_one(AccessLog)
        self.event_log = self.query_one(EventLog)
        self.backends_table.focus()
        self._start_poll()

    # ---- polling ----------------------------------------------------------------------------

    def _start_poll(self) -> None:
        self._poll_timer = None
        self._polling = True
        self._fetch(self._event_seq, self.conntrack.flow_query)

    @work(thread=True, name="poll", group="poll", exit_on_error=False)
    def _fetch(self, after_seq: int, flows: FlowQuery) -> tuple[Snapshot, list[Event]]:
        snapshot = self.handle.snapshot(flows)
        events = list(self.handle.events_since(after_seq))
        return snapshot, events

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
                snapshot, events = worker.result
                self._apply(snapshot, events)
            elif event.state is WorkerState.ERROR:
                self._lost(worker.error)
            else:
                return
            self._poll_finished()
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
            self.summary.show(snapshot, self.title, self.attached)
            self._show_banner(None if snapshot.running else "the load balancer has stopped", stopped=True)
            self.backends_table.show(snapshot)
            self.proxies.show(snapshot)
            self.conntrack.show(snapshot)
            self.circuits.show(snapshot)
            self.latency.show(snapshot)
            self.access_log.show(snapshot.access_log_tail)
            self.event_log.add_events(events)
        if events:
            self._event_seq = events[-1].seq
        self.refreshes += 1

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

    def submit_command(self, command: Command) -> None:
        """Submit on a worker thread; the result is notified and logged in the events pane."""
        self._submit(command)

    @work(thread=True, name="command", group="commands", exit_on_error=False)
    def _submit(self, command: Command) -> tuple[Command, CommandResult]:
        try:
            result = self.handle.submit(command)
        except Exception as exc:  # the engine's own errors come back as results; this is transport
            result = CommandResult(False, error_text(exc))
        return command, result

    def _command_done(self, command: Command, result: CommandResult) -> None:
        what = describe_command(command)
        log.info("%s: %s %s", what, "ok" if result.ok else "failed", result.message)
        self.event_log.add_result(time.time(), what, result)
        self.notify(
            result.message,
            title=f"{what}: {'done' if result.ok else 'failed'}",
            severity="information" if result.ok else "error",
            timeout=4 if result.ok else 10,
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

    def _selection_or_warn(self) -> BackendView | None:
        backend = self.selected_backend()
        if backend is None:
            self.notify("select a backend in the Backends pane first", severity="warning")
        return backend

    def _confirm_then_submit(self, question: str, label: str, command: Command, *, danger: bool) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.submit_command(command)

        self.push_screen(ConfirmScreen(question, label, danger=danger), answered)

    # ---- actions (keys and palette) ---------------------------------------------------------

    def action_drain(self) -> None:
        b = self._selection_or_warn()
        if b is None:
            return
        if b.drain is DrainState.ACTIVE:
            question = f"Drain {b.address} of {b.proxy}? New connections stop; existing ones continue."
            self._confirm_then_submit(question, "Drain", Drain(b.proxy, b.address), danger=True)
        else:
            question = f"Undrain {b.address} of {b.proxy}? It takes new connections again."
            self._confirm_then_submit(question, "Undrain", Undrain(b.proxy, b.address), danger=False)

    def action_reweight(self) -> None:
        b = self._selection_or_warn()
        if b is None:
            return

        def chosen(weight: int | None) -> None:
            if weight is not None:
                self.submit_command(SetWeight(b.proxy, b.address, weight))

        self.push_screen(WeightScreen(b.proxy, b.address, b.configured_weight), chosen)

    def action_rate_limits(self) -> None:
        b = self._selection_or_warn()
        service = None if b is None or self.snapshot is None else self.snapshot.service(b.proxy)
        if service is None:
            return

        def chosen(command: SetRateLimit | None) -> None:
            if command is not None:
                self.submit_command(command)

        self.push_screen(RateLimitScreen(service.name, service.rate_limit), chosen)

    def action_circuit(self) -> None:
        b = self._selection_or_warn()
        if b is None:
            return
        if b.circuit is None:
            self.notify(f"{b.proxy} has no circuit breaker configured", severity="warning")
            return

        def chosen(action: str | None) -> None:
            if action is None:
                return
            command = CircuitCommand(b.proxy, b.address, action)
            if action == "reset":  # back to automatic: nothing to confirm
                self.submit_command(command)
                return
            held = "open" if action == "force_open" else "closed"
            effect = CIRCUIT_ACTIONS[action][1].split(", ", 1)[1]
            question = f"Hold the circuit of {b.address} of {b.proxy} {held}? Until a reset, {effect}."
            self._confirm_then_submit(question, f"Hold {held}", command, danger=True)

        self.push_screen(CircuitScreen(b.proxy, b.address, b.circuit.value), chosen)

    def action_reload(self) -> None:
        path = self.snapshot.config_path if self.snapshot else None
        source = path or "the configuration file"
        question = f"Reload {source}? Proxies, backends, weights and limits will follow the file."
        self._confirm_then_submit(question, "Reload", Reload(), danger=False)

    def action_filter(self) -> None:
        self.action_show_pane("conntrack")
        self.conntrack.open_filter()

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
        rows = []
        panes = []
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            if binding.action.startswith("show_pane"):
                panes.append((binding.key, binding.description))
                continue
            keys = " ".join(self.get_key_display(Binding(key, "")) for key in binding.key.split(","))
            rows.append((keys, binding.tooltip or binding.description))
        rows += [
            (" ".join(key for key, _ in panes), "show a pane: " + ", ".join(title for _, title in panes)),
            ("ctrl+q", "quit (asks first)"),
            ("↑ ↓ pgup pgdn", "move the selection in a table"),
            ("tab shift+tab", "move between the tabs, the table and other widgets"),
            ("escape", "close a dialog; in the conntrack filter: clear it"),
        ]
        return rows

    def palette_actions(self) -> list[tuple[str, str, Callable[[], object]]]:
        b = self.selected_backend()
        target = f"{b.address} of {b.proxy}" if b else "the selected backend"
        drain = "Undrain" if b is not None and b.drain is not DrainState.ACTIVE else "Drain"
        proxy = b.proxy if b else "the selected backend's proxy"
        return [
            (f"{drain} {target}", "drain: no new connections, existing ones continue (d)", self.action_drain),
            (f"Reweight {target}", "set the configured weight (w)", self.action_reweight),
            (
                f"Rate limits of {proxy}",
                "per source and per backend new conns/s (l)",
                self.action_rate_limits,
            ),
            (
                f"Circuit breaker of {target}",
                "hold it open, hold it closed, or reset it (c)",
                self.action_circuit,
            ),
            ("Reload configuration", "re-read the configuration file (r)", self.action_reload),
            ("Filter flows", "conntrack: show flows containing a text (/)", self.action_filter),
            ("Sort flows", "conntrack: bytes, age, idle, backend (s)", self.action_sort),
            ("Help", "list every key (?)", self.action_help),
            ("Quit", "quit the console (q)", self.action_quit),
        ]
