# SPDX-License-Identifier: Apache-2.0
"""Operator commands: checked, turned into runtime overrides (or handed to their owner), answered.

Every command returns a CommandResult whose message is what the operator reads (console
notification, `lbtui ctl` output); a refused command changes nothing. Weights, backends and rate
limits become runtime overrides; drains go to `Drains`, circuit actions to the supervisor, reloads
to the `Reloader`, Stop to the engine.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from lbtui import model
from lbtui.addresses import family, family_name, format_endpoint, parse_endpoint
from lbtui.control.supervisor import BackendKey, BackendSupervisor
from lbtui.dataplane.port import RateLimits
from lbtui.engine.desired import split_address
from lbtui.engine.drains import Drains
from lbtui.engine.events import EventLog
from lbtui.engine.ids import DEFAULT_GROUP
from lbtui.engine.overrides import Intent
from lbtui.engine.topology import Topology

log = logging.getLogger(__name__)

MAX_WEIGHT = 2**31 - 1


def valid_weight(w: object) -> bool:
    return isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= MAX_WEIGHT


def _weight_problem(w: object) -> model.CommandResult:
    return model.CommandResult(False, f"weight must be an integer 1..{MAX_WEIGHT}, got {w!r}")


def canonical_backend(cmd: model.Command) -> model.Command:
    """The command with its backend written as the engine names it: "[FD00:0::1]:80" becomes
    "[fd00::1]:80" (lbtui/addresses.py); a host name or a malformed backend is left as it is."""
    with_backend = model.SetWeight | model.AddBackend | model.RemoveBackend | model.Drain | model.Undrain
    if not isinstance(cmd, with_backend | model.CircuitCommand):
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
        reload: Callable[[str | None], model.CommandResult],
        stop: Callable[[], None],
    ):
        self._intent = intent
        self._topology = topology
        self._drains = drains
        self._events = events
        self._supervisor = supervisor
        self._reload = reload
        self._stop = stop

    def execute(self, cmd: model.Command) -> model.CommandResult:
        """Run one command; a refusal is an ERROR event too (a success shows as its own event)."""
        try:
            result = self._execute(canonical_backend(cmd))
        except Exception as exc:  # a command never takes the engine down
            log.exception("command %s", cmd)
            result = model.CommandResult(False, f"internal error: {exc}")
        if not result.ok:
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
                    return self._set_weight(cmd)
                case model.Drain():
                    return self._drains.drain(cmd)
                case model.Undrain():
                    return self._drains.undrain(cmd)
                case model.AddBackend():
                    return self._add_backend(cmd)
                case model.RemoveBackend():
                    return self._remove_backend(cmd)
                case model.SetRateLimit():
                    return self._set_rate_limit(cmd)
                case model.CircuitCommand(proxy=p, backend=a, action=action):
                    self._topology.find(p, a)
                    supervisor = self._supervisor()
                    if supervisor is None:
                        return model.CommandResult(False, "the engine is not running")
                    return supervisor.circuit_command(BackendKey(p, a), action)
                case model.Reload(path=path):
                    return self._reload(path)
                case model.Stop():
                    self._stop()
                    return model.CommandResult(True, "stopping")
                case _:
                    return model.CommandResult(False, f"unknown command {type(cmd).__name__}")
        except (LookupError, ValueError) as exc:
            return model.CommandResult(False, str(exc))

    def _set_weight(self, cmd: model.SetWeight) -> model.CommandResult:
        if not valid_weight(cmd.weight):
            return _weight_problem(cmd.weight)
        self._topology.find(cmd.proxy, cmd.backend)
        overrides = self._intent.overrides.with_weight((cmd.proxy, cmd.backend), cmd.weight)
        self._intent.change(overrides, f"weight set to {cmd.weight}")
        return model.CommandResult(True, f"{cmd.backend} weight {cmd.weight}")

    def _add_backend(self, cmd: model.AddBackend) -> model.CommandResult:
        p, a, w = cmd.proxy, cmd.backend, cmd.weight
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
        if a in proxy.groups[DEFAULT_GROUP].members:
            return model.CommandResult(False, f"{p} already has backend {a}")
        self._intent.change(self._intent.overrides.with_backend(p, a, w), "configuration")
        return model.CommandResult(True, f"added {a} weight {w} to {p}")

    def _remove_backend(self, cmd: model.RemoveBackend) -> model.CommandResult:
        p, a = cmd.proxy, cmd.backend
        proxy = self._topology.proxy(p)
        if a not in proxy.groups[DEFAULT_GROUP].members:
            return model.CommandResult(False, f"{p} has no backend {a} in its default group")
        self._intent.change(self._intent.overrides.without_backend(p, a), "configuration")
        return model.CommandResult(True, f"removed {a} from {p}; its established flows continue")

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
        limits = RateLimits(src_rate, src_burst, be_rate, be_burst)
        self._intent.change(self._intent.overrides.with_limits(cmd.proxy, limits), "rate limits")

        def show(rate: int, burst: int) -> str:
            return f"{rate}/s burst {burst}" if rate else "off"

        msg = (
            f"{cmd.proxy} rate limits: per source {show(src_rate, src_burst)}, "
            f"per backend {show(be_rate, be_burst)}"
        )
        self._events.emit("ratelimit", msg, proxy=cmd.proxy)
        return model.CommandResult(True, msg)
