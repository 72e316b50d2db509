# SPDX-License-Identifier: Apache-2.0
"""The console's operator actions: each asks (a dialog or a confirmation) before it changes traffic,
then submits one command through the app; the app shows the result.

Kept out of app.py so the app stays about layout and polling. `TrafficActions` holds the app's
actions that change traffic; `TRAFFIC_ACTIONS`, their names, are those a read-only console hides
(the read-only socket would refuse their commands anyway).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from lbtui.model import (
    AddBackend,
    AdjustWeight,
    Announce,
    CircuitCommand,
    ClearOverrides,
    Command,
    CommandResult,
    Drain,
    DrainState,
    ForceHealth,
    Maintenance,
    Ready,
    Reload,
    RemoveBackend,
    SetRateLimit,
    SetWeight,
    Stop,
    Undrain,
)
from lbtui.screens.add_backend import AddBackendScreen
from lbtui.screens.choice import Choice, ChoiceScreen
from lbtui.screens.circuit import CIRCUIT_ACTIONS, CircuitScreen
from lbtui.screens.confirm import ConfirmScreen
from lbtui.screens.ratelimit import RateLimitScreen
from lbtui.screens.weight import WeightScreen

if TYPE_CHECKING:
    from lbtui.app import LbtuiApp


class TrafficActions:
    """The console's actions that change traffic, inherited by LbtuiApp (its keys and palette name
    them `drain`, `reweight`...): each asks first, below, then submits one command."""

    @property
    def _console(self) -> LbtuiApp:
        return cast("LbtuiApp", self)  # the only class that inherits this one

    def action_drain(self) -> None:
        drain(self._console)

    def action_maintenance(self) -> None:
        maintenance(self._console)

    def action_health(self) -> None:
        health(self._console)

    def action_reweight(self) -> None:
        reweight(self._console)

    def action_weight_up(self) -> None:
        step_weight(self._console, +1)

    def action_weight_down(self) -> None:
        step_weight(self._console, -1)

    def action_rate_limits(self) -> None:
        rate_limits(self._console)

    def action_circuit(self) -> None:
        circuit(self._console)

    def action_add_backend(self) -> None:
        add_backend(self._console)

    def action_remove_backend(self) -> None:
        remove_backend(self._console)

    def action_reload(self) -> None:
        reload(self._console)

    def action_announce(self) -> None:
        announce(self._console)


TRAFFIC_ACTIONS = frozenset(
    name.removeprefix("action_") for name in vars(TrafficActions) if name.startswith("action_")
)

MAX_PLAN_LINES = 20  # changes listed in the reload question; the rest are counted

HEALTH_CHOICES = (
    Choice("up", "Force up", "u", "it gets new connections whatever its checks say"),
    Choice("down", "Force down", "d", "it gets no new connections whatever its checks say", danger=True),
    Choice("auto", "Auto", "a", "its health checks decide again"),
)
REMOVE_CHOICES = (
    Choice("remove", "Remove", "r", "no new connections; established ones finish", danger=True),
    Choice("cut", "Remove and cut", "c", "its established connections are cut too", danger=True),
)


def describe_command(command: Command) -> str:
    """Short operator-facing name of a command, used in notifications and the events pane."""
    match command:
        case Drain(proxy=proxy, backend=backend):
            return f"drain {proxy} {backend}"
        case Undrain(proxy=proxy, backend=backend):
            return f"undrain {proxy} {backend}"
        case SetWeight(proxy=proxy, backend=backend, weight=weight):
            return f"weight {proxy} {backend} = {weight:,}"
        case AdjustWeight(proxy=proxy, backend=backend, step=step, percent=percent):
            return f"weight {proxy} {backend} " + (f"{percent:g}%" if percent is not None else f"{step:+d}")
        case AddBackend(proxy=proxy, backend=backend):
            return f"add {proxy} {backend}"
        case RemoveBackend(proxy=proxy, backend=backend, cut=cut):
            return f"remove {proxy} {backend}" + (" (cut)" if cut else "")
        case Maintenance(proxy=proxy, backend=backend):
            return f"maintenance {proxy} {backend}"
        case Ready(proxy=proxy, backend=backend):
            return f"ready {proxy} {backend}"
        case ForceHealth(proxy=proxy, backend=backend, state=state):
            return f"health {proxy} {backend} {state}"
        case SetRateLimit(proxy=proxy):
            return f"rate limits {proxy}"
        case Reload(path=path):
            return f"reload {path}" if path else "reload"
        case CircuitCommand(proxy=proxy, backend=backend, action=action):
            return f"circuit {proxy} {backend} {action.replace('_', '-')}"
        case ClearOverrides(proxy=proxy, backend=backend):
            return " ".join(["clear overrides", *(x for x in (proxy, backend) if x)])
        case Stop():
            return "stop"
        case Announce(action=action, proxy=proxy):
            return " ".join([action, proxy or "every VIP"])
    return type(command).__name__


def confirm_then_submit(app: LbtuiApp, question: str, label: str, command: Command, *, danger: bool) -> None:
    def answered(yes: bool | None) -> None:
        if yes:
            app.submit_command(command)

    app.push_screen(ConfirmScreen(question, label, danger=danger), answered)


def drain(app: LbtuiApp) -> None:
    b = app.selection_or_warn()
    if b is None:
        return
    if b.maintenance:
        app.notify(f"{b.address} is in maintenance; `m` ends it", severity="warning")
    elif b.drain is DrainState.ACTIVE:
        question = f"Drain {b.address} of {b.proxy}? New connections stop; existing ones continue."
        confirm_then_submit(app, question, "Drain", Drain(b.proxy, b.address), danger=True)
    else:
        question = f"Undrain {b.address} of {b.proxy}? It takes new connections again."
        confirm_then_submit(app, question, "Undrain", Undrain(b.proxy, b.address), danger=False)


def maintenance(app: LbtuiApp) -> None:
    b = app.selection_or_warn()
    if b is None:
        return
    if b.maintenance:
        question = f"End the maintenance of {b.address} of {b.proxy}? It takes new connections again."
        confirm_then_submit(app, question, "Ready", Ready(b.proxy, b.address), danger=False)
    else:
        question = (
            f"Put {b.address} of {b.proxy} in maintenance? No new connections and no health checks "
            "until you end it; existing connections continue."
        )
        confirm_then_submit(app, question, "Maintenance", Maintenance(b.proxy, b.address), danger=True)


def health(app: LbtuiApp) -> None:
    b = app.selection_or_warn()
    if b is None:
        return
    now = f"{b.health.value} (forced)" if b.health_forced else b.health.value
    question = f"Health of {b.address} of {b.proxy}: {now}"

    def chosen(state: str | None) -> None:
        if state is not None:
            app.submit_command(ForceHealth(b.proxy, b.address, state))

    app.push_screen(ChoiceScreen("Health", question, HEALTH_CHOICES), chosen)


def reweight(app: LbtuiApp) -> None:
    b = app.selection_or_warn()
    if b is None:
        return

    def chosen(weight: int | None) -> None:
        if weight is not None:
            app.submit_command(SetWeight(b.proxy, b.address, weight))

    app.push_screen(WeightScreen(b.proxy, b.address, b.configured_weight), chosen)


def step_weight(app: LbtuiApp, step: int) -> None:
    """+ and -: one step at once, no dialog (the other key undoes it); the result is shown."""
    b = app.selection_or_warn()
    if b is not None:
        app.submit_command(AdjustWeight(b.proxy, b.address, step=step))


def rate_limits(app: LbtuiApp) -> None:
    b = app.selection_or_warn()
    service = None if b is None or app.snapshot is None else app.snapshot.service(b.proxy)
    if service is None:
        return

    def chosen(command: SetRateLimit | None) -> None:
        if command is not None:
            app.submit_command(command)

    app.push_screen(RateLimitScreen(service.name, service.rate_limit), chosen)


def circuit(app: LbtuiApp) -> None:
    b = app.selection_or_warn()
    if b is None:
        return
    if b.circuit is None:
        app.notify(f"{b.proxy} has no circuit breaker configured", severity="warning")
        return

    def chosen(action: str | None) -> None:
        if action is None:
            return
        command = CircuitCommand(b.proxy, b.address, action)
        if action == "reset":  # back to automatic: nothing to confirm
            app.submit_command(command)
            return
        held = "open" if action == "force_open" else "closed"
        effect = CIRCUIT_ACTIONS[action][1].split(", ", 1)[1]
        question = f"Hold the circuit of {b.address} of {b.proxy} {held}? Until a reset, {effect}."
        confirm_then_submit(app, question, f"Hold {held}", command, danger=True)

    app.push_screen(CircuitScreen(b.proxy, b.address, b.circuit.value), chosen)


def add_backend(app: LbtuiApp) -> None:
    b = app.selection_or_warn()
    service = None if b is None or app.snapshot is None else app.snapshot.service(b.proxy)
    if service is None:
        return
    groups = ("default", *(r.cidr for r in service.routes))

    def chosen(command: AddBackend | None) -> None:
        if command is not None:
            app.submit_command(command)

    app.push_screen(AddBackendScreen(service.name, groups), chosen)


def remove_backend(app: LbtuiApp) -> None:
    b = app.selection_or_warn()
    if b is None:
        return
    question = f"Remove {b.address} from {b.proxy} (from every group that has it)?"

    def chosen(how: str | None) -> None:
        if how is not None:
            app.submit_command(RemoveBackend(b.proxy, b.address, cut=how == "cut"))

    app.push_screen(ChoiceScreen("Remove a backend", question, REMOVE_CHOICES), chosen)


def reload(app: LbtuiApp) -> None:
    """`r`: first a dry run (reload_planned shows its change list), then the reload if confirmed."""
    app.submit_command(Reload(dry_run=True))


def reload_planned(app: LbtuiApp, plan: CommandResult) -> None:
    """The dry run's answer: the changes, and the question; or why the file cannot be loaded."""
    path = app.snapshot.config_path if app.snapshot and app.snapshot.config_path else "the configuration file"
    if not plan.ok:
        detail = "\n".join([plan.message, *plan.changes])
        app.notify(detail, title=f"reload of {path} would be refused", severity="error", timeout=15)
        return
    if not plan.changes:
        app.notify(f"{path} says what is running: nothing to reload", title="reload", timeout=4)
        return
    shown = [f"• {c}" for c in plan.changes[:MAX_PLAN_LINES]]
    if len(plan.changes) > MAX_PLAN_LINES:
        shown.append(f"… and {len(plan.changes) - MAX_PLAN_LINES} more (lbtui ctl reload --dry-run)")
    n = len(plan.changes)
    question = "\n".join([f"Reload {path}? {n} change{'' if n == 1 else 's'}:", *shown])
    danger = any("removed" in c or "dropped" in c for c in plan.changes)
    confirm_then_submit(app, question, "Reload", Reload(), danger=danger)


def announce(app: LbtuiApp) -> None:
    """`b`: take the selected proxy's VIP out of BGP rotation, or put it back (docs/scale-out.md)."""
    b = app.selection_or_warn()
    snap = app.snapshot
    service = None if b is None or snap is None else snap.service(b.proxy)
    if b is None or service is None or snap is None:
        return
    if not snap.announce.enabled:
        app.notify("VIP announcement is off (settings.announce.enabled)", severity="warning")
        return
    vip = snap.announce.vip(service.vip)
    if vip is not None and vip.held:
        question = f"Announce {service.vip} ({b.proxy}) again? Routers send it flows once backends allow."
        confirm_then_submit(app, question, "Announce", Announce("announce", b.proxy), danger=False)
    else:
        question = (
            f"Withdraw {service.vip} ({b.proxy}) from BGP? New flows go to other hosts; it keeps running."
        )
        confirm_then_submit(app, question, "Withdraw", Announce("withdraw", b.proxy), danger=True)
