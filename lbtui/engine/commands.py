# SPDX-License-Identifier: Apache-2.0
"""Operator commands: checked, turned into runtime overrides (or handed to their owner), answered.

Every command returns a CommandResult whose message is what the operator reads (console
notification, `lbtui ctl` output); a refused command changes nothing. Weights, backends, rate
limits, maintenance, forced health and circuit holds become runtime overrides (so they survive a
restart through the state file); drains go to `Drains`, reloads to the `Reloader`, Stop to the engine.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable

from lbtui import model
from lbtui.addresses import family, family_name, format_endpoint, parse_endpoint
from lbtui.control.supervisor import BackendKey, BackendSupervisor, circuit_result
from lbtui.dataplane.port import RateLimits
from lbtui.engine.desired import split_address
from lbtui.engine.drains import Drains
from lbtui.engine.events import EventLog
from lbtui.engine.ids import DEFAULT_GROUP
from lbtui.engine.overrides import Intent, describe, limits_text
from lbtui.engine.topology import Topology

log = logging.getLogger(__name__)

MAX_WEIGHT = 2**31 - 1
MAX_PERCENT = 100_000  # AdjustWeight: up to 1000 times the configured weight
CIRCUIT_HOLDS = {"force_open": model.Circuit.OPEN, "force_close": model.Circuit.CLOSED, "reset": None}
HEALTH_HOLDS = {"up": model.Health.UP, "down": model.Health.DOWN, "auto": None}


def valid_weight(w: object) -> bool:
    return isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= MAX_WEIGHT


def _weight_problem(w: object) -> model.CommandResult:
    return model.CommandResult(False, f"weight must be an integer 1..{MAX_WEIGHT}, got {w!r}")


def canonical_backend(cmd: model.Command) -> model.Command:
    """The command with its backend written as the engine names it: "[FD00:0::1]:80" becomes
    "[fd00::1]:80" (lbtui/addresses.py); a host name or a malformed backend is left as it is."""
    with_backend = (
        model.SetWeight
        | model.AdjustWeight
        | model.AddBackend
        | model.RemoveBackend
        | model.Drain
        | model.Undrain
        | model.Maintenance
        | model.Ready
        | model.ForceHealth
        | model.ClearOverrides
        | model.CircuitCommand
    )
    if not isinstance(cmd, with_backend) or cmd.backend is None:
        return cmd
    try:
        canonical = format_endpoint(*parse_endpoint(cmd.backend))
    except ValueError:
        return cmd
    return cmd if canonical == cmd.backend else dataclasses.replace(cmd, backend=canonical)


class Commands:
    def __init__(
        self,
        intent: Intent,
        topology: Topology,
        drains: Drains,
        events: EventLog,
        supervisor: Callable[[], BackendSupervisor | None],
        reload: Callable[[str | None, bool], Awaitable[model.CommandResult]],
        stop: Callable[[], None],
    ):
        self._intent = intent
        self._topology = topology
        self._drains = drains
        self._events = events
        self._supervisor = supervisor
        self._reload = reload
        self._stop = stop

    async def execute(self, cmd: model.Command) -> model.CommandResult:
        """Run one command; a refusal is an ERROR event too (a success shows as its own event).

        Only a reload waits (its file is read off the loop); every other command is done at once."""
        try:
            if isinstance(cmd, model.Reload):
                result = await self._reload(cmd.path, cmd.dry_run)
            else:
                result = self._execute(canonical_backend(cmd))
        except Exception as exc:  # a command never takes the engine down
            log.exception("command %s", cmd)
            result = model.CommandResult(False, f"internal error: {exc}")
        if not result.ok and not (isinstance(cmd, model.Reload) and cmd.dry_run):  # a dry run says, no more
            self._events.emit(
                "command",
                f"{type(cmd).__name__} refused: {result.message}",
                level=model.Level.ERROR,
                proxy=getattr(cmd, "proxy", None),
                backend=getattr(cmd, "backend", None),
            )
        return result

    def _execute(self, cmd: model.Command) -> model.CommandResult:
        try:
            match cmd:
                case model.SetWeight():
                    return self._set_weight(cmd.proxy, cmd.backend, cmd.weight)
                case model.AdjustWeight():
                    return self._adjust_weight(cmd)
                case model.Drain():
                    return self._drains.drain(cmd)
                case model.Undrain():
                    return self._drains.undrain(cmd)
                case model.Maintenance():
                    return self._maintenance(cmd.proxy, cmd.backend)
                case model.Ready():
                    return self._ready(cmd.proxy, cmd.backend)
                case model.ForceHealth():
                    return self._force_health(cmd)
                case model.AddBackend():
                    return self._add_backend(cmd)
                case model.RemoveBackend():
                    return self._remove_backend(cmd)
                case model.SetRateLimit():
                    return self._set_rate_limit(cmd)
                case model.CircuitCommand():
                    return self._circuit(cmd)
                case model.ClearOverrides():
                    return self._clear(cmd)
                case model.Stop():
                    self._stop()
                    return model.CommandResult(True, "stopping")
                case _:
                    return model.CommandResult(False, f"unknown command {type(cmd).__name__}")
        except (LookupError, ValueError) as exc:
            return model.CommandResult(False, str(exc))

    # ---- weights --------------------------------------------------------------------------------

    def _set_weight(self, proxy: str, backend: str, weight: object, was: str = "") -> model.CommandResult:
        if not valid_weight(weight):
            return _weight_problem(weight)
        assert isinstance(weight, int)
        self._topology.find(proxy, backend)
        overrides = self._intent.overrides.with_weight((proxy, backend), weight)
        self._intent.change(overrides, f"weight set to {weight}")
        return model.CommandResult(True, f"{backend} weight {was}{weight}")

    def _adjust_weight(self, cmd: model.AdjustWeight) -> model.CommandResult:
        """+N / -N from the weight in use, or P% of the configured weight (at least 1)."""
        _, members = self._topology.find(cmd.proxy, cmd.backend)
        m = members[0]
        if cmd.percent is not None:
            if cmd.step:
                return model.CommandResult(False, "give a step or a percentage, not both")
            if not 0 < cmd.percent <= MAX_PERCENT:
                return model.CommandResult(False, f"percentage must be above 0 and at most {MAX_PERCENT}")
            weight = max(1, round(m.configured * cmd.percent / 100))
        elif cmd.step:
            weight = m.weight + cmd.step
            if weight < 1:
                return model.CommandResult(
                    False,
                    f"{cmd.backend} weight {m.weight} {cmd.step:+d} would be {weight}; a weight is at "
                    "least 1 (drain or maintenance takes a backend out)",
                )
        else:
            return model.CommandResult(False, "give a step (+1, -1) or a percentage of the configured weight")
        return self._set_weight(cmd.proxy, cmd.backend, weight, was=f"{m.weight} -> ")

    # ---- administrative state: maintenance, forced health, circuit holds ------------------------

    def _maintenance(self, proxy: str, backend: str) -> model.CommandResult:
        _, members = self._topology.find(proxy, backend)
        ref = (proxy, backend)
        overrides = self._intent.overrides
        if ref in overrides.maintenance:
            return model.CommandResult(True, f"{backend} is already in maintenance")
        self._intent.change(overrides.with_drain(ref, None).with_maintenance(ref, True), "maintenance")
        msg = (
            f"{backend} in maintenance: no new connections, health checks paused, "
            f"{sum(m.active_flows for m in members)} flows continue"
        )
        self._events.emit("maintenance", msg, proxy=proxy, backend=backend)
        return model.CommandResult(True, msg)

    def _ready(self, proxy: str, backend: str) -> model.CommandResult:
        self._topology.find(proxy, backend)
        ref = (proxy, backend)
        overrides = self._intent.overrides
        if ref not in overrides.maintenance and ref not in overrides.drains:
            return model.CommandResult(True, f"{backend} is already ready")
        self._intent.change(overrides.with_maintenance(ref, False).with_drain(ref, None), "ready")
        msg = f"{backend} ready: back in rotation, health checks running"
        self._events.emit("maintenance", msg, proxy=proxy, backend=backend)
        return model.CommandResult(True, msg)

    def _force_health(self, cmd: model.ForceHealth) -> model.CommandResult:
        if cmd.state not in HEALTH_HOLDS:
            wanted = ", ".join(HEALTH_HOLDS)
            return model.CommandResult(False, f"unknown health state {cmd.state!r} (expected {wanted})")
        self._topology.find(cmd.proxy, cmd.backend)
        hold = HEALTH_HOLDS[cmd.state]
        overrides = self._intent.overrides.with_health((cmd.proxy, cmd.backend), hold)
        cause = f"health forced {cmd.state}" if hold else "health checks decide again"
        self._intent.change(overrides, cause)
        if hold is None:
            msg = f"{cmd.backend} health follows its checks again"
        else:
            msg = f"{cmd.backend} health forced {hold.value} until `health ... auto`"
        self._events.emit("health", msg, proxy=cmd.proxy, backend=cmd.backend)
        return model.CommandResult(True, msg)

    def _circuit(self, cmd: model.CircuitCommand) -> model.CommandResult:
        self._topology.find(cmd.proxy, cmd.backend)
        supervisor = self._supervisor()
        if supervisor is None:
            return model.CommandResult(False, "the engine is not running")
        if cmd.action not in CIRCUIT_HOLDS:
            wanted = ", ".join(CIRCUIT_HOLDS)
            return model.CommandResult(False, f"unknown circuit action {cmd.action!r} (expected {wanted})")
        key = BackendKey(cmd.proxy, cmd.backend)
        if not supervisor.has_breaker(key):
            return model.CommandResult(False, f"{cmd.backend} has no circuit breaker configured")
        before = supervisor.factors(key).circuit_state
        overrides = self._intent.overrides.with_circuit((cmd.proxy, cmd.backend), CIRCUIT_HOLDS[cmd.action])
        self._intent.change(overrides, "circuit")
        if cmd.action == "reset":
            supervisor.reset_circuit(key)
        after = supervisor.factors(key).circuit_state
        assert after is not None
        return circuit_result(cmd.backend, cmd.action, after, after is not before)

    # ---- membership -----------------------------------------------------------------------------

    def _add_backend(self, cmd: model.AddBackend) -> model.CommandResult:
        p, a, w = cmd.proxy, cmd.backend, cmd.weight
        label = cmd.group or DEFAULT_GROUP
        proxy = self._topology.proxy(p)
        ip, _ = split_address(a)
        if family(ip) != family(proxy.cfg.vip):
            return model.CommandResult(
                False,
                f"{p} has the {family_name(proxy.cfg.vip)} VIP {proxy.cfg.vip}; backend {a} is "
                f"{family_name(ip)}: a proxy's VIP and backends are one address family",
            )
        if not valid_weight(w):
            return _weight_problem(w)
        group = proxy.groups.get(label)
        if group is None:
            have = ", ".join(proxy.groups)
            return model.CommandResult(False, f"{p} has no group {label} (have: {have})")
        if a in group.members:
            where = "" if label == DEFAULT_GROUP else f" in route {label}"
            return model.CommandResult(False, f"{p} already has backend {a}{where}")
        self._intent.change(self._intent.overrides.with_backend((p, label, a), w), "configuration")
        where = "" if label == DEFAULT_GROUP else f" (route {label})"
        msg = f"added {a} weight {w} to {p}{where}"
        self._events.emit("backend", msg, proxy=p, backend=a)
        return model.CommandResult(True, msg)

    def _remove_backend(self, cmd: model.RemoveBackend) -> model.CommandResult:
        p, a = cmd.proxy, cmd.backend
        proxy = self._topology.proxy(p)
        groups = [label for label, g in proxy.groups.items() if a in g.members]
        if not groups:
            return model.CommandResult(False, f"{p} has no backend {a}")
        ids = [proxy.groups[label].members[a].id for label in groups]
        self._intent.change(self._intent.overrides.without_backend(p, a, groups), "configuration")
        if cmd.cut:  # after the tables no longer point at it: no new flow can reach it meanwhile
            cut = sum(self._drains.cut_flows(bid) for bid in ids)
            msg = f"removed {a} from {p}; {cut} flows cut (conntrack entries removed)"
        else:
            msg = f"removed {a} from {p}; its established flows continue"
        self._events.emit("backend", msg, proxy=p, backend=a)
        return model.CommandResult(True, msg)

    # ---- rate limits ----------------------------------------------------------------------------

    def _set_rate_limit(self, cmd: model.SetRateLimit) -> model.CommandResult:
        proxy = self._topology.proxy(cmd.proxy)
        values = (cmd.per_source_rate, cmd.per_source_burst, cmd.per_backend_rate, cmd.per_backend_burst)
        for v in values:
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_WEIGHT):
                return model.CommandResult(
                    False, f"rates and bursts must be integers 0..{MAX_WEIGHT}, got {v!r}"
                )
        old = proxy.limits
        src_rate = old.src_rate if cmd.per_source_rate is None else cmd.per_source_rate
        src_burst = old.src_burst if cmd.per_source_burst is None else cmd.per_source_burst
        be_rate = old.be_rate if cmd.per_backend_rate is None else cmd.per_backend_rate
        be_burst = old.be_burst if cmd.per_backend_burst is None else cmd.per_backend_burst
        # a rate without a burst gets one second's worth; a rate of 0 removes the limit
        src_burst = 0 if src_rate == 0 else (src_burst or src_rate)
        be_burst = 0 if be_rate == 0 else (be_burst or be_rate)
        limits = RateLimits(src_rate, src_burst, be_rate, be_burst, old.src_prefix6)
        self._intent.change(self._intent.overrides.with_limits(cmd.proxy, limits), "rate limits")
        msg = f"{cmd.proxy} rate limits: {limits_text(limits)}"
        self._events.emit("ratelimit", msg, proxy=cmd.proxy)
        return model.CommandResult(True, msg)

    # ---- back to the configuration --------------------------------------------------------------

    def _clear(self, cmd: model.ClearOverrides) -> model.CommandResult:
        if cmd.backend is not None and cmd.proxy is None:
            return model.CommandResult(False, "a backend needs its proxy")
        if cmd.proxy is not None:
            self._topology.proxy(cmd.proxy)
        before = self._intent.overrides
        after = before.cleared(cmd.proxy, cmd.backend)
        gone = [describe(e) for e in before.entries() if e not in after.entries()]
        where = " ".join(x for x in (cmd.proxy, cmd.backend) if x) or "the instance"
        if not gone:
            return model.CommandResult(True, f"no runtime overrides of {where}")
        self._intent.change(after, "overrides cleared")
        msg = f"cleared {len(gone)} runtime override{'s' if len(gone) != 1 else ''} of {where}: " + "; ".join(
            gone
        )
        self._events.emit("override", msg, proxy=cmd.proxy, backend=cmd.backend)
        return model.CommandResult(True, msg)
