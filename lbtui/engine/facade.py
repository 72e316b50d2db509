# SPDX-License-Identifier: Apache-2.0
"""`Engine`: the one facade front ends use. It runs the load balancer for one configuration over an
injected dataplane, without any UI (docs/architecture.md#parts).

The engine wires its parts together and runs them on one asyncio loop: the configuration and the
runtime overrides are composed into the desired state in one place (engine.intended), the topology
makes the maps match it, the control tick reads counters and feeds the circuit breakers, slow start and
least-connections, the sweep expires flows and ends drains, and snapshots and events go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from lbtui import model
from lbtui.config import Config
from lbtui.control.dns import AnswerRefused, ResolveFn
from lbtui.control.health import CheckFn, run_check
from lbtui.control.supervisor import BackendKey, Factors
from lbtui.dataplane.port import Dataplane
from lbtui.deadline import within
from lbtui.engine.announce import RoutesFactory, ScaleOut, kernel_routes
from lbtui.engine.clock import SYSTEM_CLOCK, Clock
from lbtui.engine.commands import Commands
from lbtui.engine.desired import CapacityError, Desired
from lbtui.engine.drains import Drains
from lbtui.engine.events import MAX_EVENTS, EventLog
from lbtui.engine.flowquery import FlowQueries
from lbtui.engine.flows import FlowEvents
from lbtui.engine.history import HistoryRecorder
from lbtui.engine.ids import DEFAULT_GROUP, Ids
from lbtui.engine.intended import Intended
from lbtui.engine.measurements import LeastConnections, Measurements
from lbtui.engine.overrides import Dropped, Overrides
from lbtui.engine.persist import StateKeeper
from lbtui.engine.reload import WATCH_START_TIMEOUT_S, Reloader
from lbtui.engine.snapshots import Status, build_snapshot, empty_snapshot
from lbtui.engine.supervision import Supervision
from lbtui.engine.sweep import Sweeper, conntrack_capacity
from lbtui.engine.topology import Topology
from lbtui.observe.hub import ObservabilityHub

log = logging.getLogger("lbtui.engine")

CONTROL_TICK_S = 0.25
SNAPSHOT_EVERY_TICKS = 4


class Engine:
    def __init__(
        self,
        config: Config,
        dataplane: Dataplane,
        *,
        allow_stdout: bool = True,
        keep_dataplane: bool = False,
        clock: Clock = SYSTEM_CLOCK,
        resolve: ResolveFn | None = None,
        health_check: CheckFn = run_check,
        loops: bool = True,
        state_file: str | None = None,
        announce_routes: RoutesFactory = kernel_routes,
    ):
        """resolve, health_check, announce_routes: stand-ins for DNS, checks and VIP routes (tests);
        loops=False runs no background task (tests step `tick()` and `sweep()`); state_file: where the
        runtime overrides are kept when settings.state_file says nothing (None: nowhere)."""
        self.keep_dataplane = keep_dataplane
        self._dp = dataplane
        self._clock = clock
        self._allow_stdout = allow_stdout
        self._loops = loops
        self.heartbeat = clock.monotonic()  # the control loop's last tick (headless feeds systemd's watchdog)
        self.observability: ObservabilityHub | None = None
        self.events = EventLog(clock)
        self.state = StateKeeper(self.events, clock, state_file)
        self.ids = Ids(dataplane.spec)
        self.measurements = Measurements()
        self.topology = topology = Topology(
            dataplane, self.ids, self.events, self._factors_of, self.measurements.forget
        )
        self.supervision = Supervision(clock, self.events, topology, health_check, resolve)
        self.intended = Intended(config, dataplane.spec, topology, self.supervision, self.state, self.events)
        self.flows = FlowEvents(clock, topology.proxy_name)
        self.queries = FlowQueries(clock)
        self.sweeper = Sweeper(
            dataplane,
            clock,
            topology,
            self.measurements,
            self.flows,
            self.queries,
            capacity=conntrack_capacity(config.settings),
        )
        self.drains = Drains(
            self.intended,
            topology,
            self.events,
            dataplane,
            clock,
            lambda: self.config.settings.drain_timeout_s,
        )
        self.reloader = Reloader(self, topology, self.events)
        self.commands = Commands(
            self.intended,
            topology,
            self.drains,
            self.events,
            lambda: self.supervision.supervisor,
            self.reload,
            self._request_stop,
        )
        self.least_connections = LeastConnections()
        self.recorder = HistoryRecorder(clock, config.settings.history_s, lambda: self.sweeper.syn_failures)
        self.scale_out = ScaleOut(self.events, clock, topology, self.intended, announce_routes)
        self.snapshot_decorators: list[Callable[[model.Snapshot], model.Snapshot]] = [self.scale_out.decorate]
        self._snapshot: model.Snapshot | None = None
        self._started_at = clock.time()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._stopped = asyncio.Event()
        self._stopping = False

    # ---- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the programs, fill the maps from the configuration, attach, start the loops.

        A cancellation (a stop during start-up) lands at the next `sleep(0)` and undoes it all:
        nothing stays attached or pinned unless keep_dataplane (docs/architecture.md#stopping)."""
        self._loop = self.flows.loop = asyncio.get_running_loop()
        self.observability = hub = ObservabilityHub(self.snapshot, allow_stdout=self._allow_stdout)
        self.flows.observers.append(hub.observe)
        self.snapshot_decorators.append(hub.decorate)
        self.supervision.start(self.config, hub, self.scale_out.set_factors, self._on_dns_change)
        try:
            await self.supervision.resolve_first(self.config)
            await asyncio.sleep(0)
            self._dp.load()  # the BCC compile: seconds, not interruptible; the next step is
            await asyncio.sleep(0)
            if self._dp.adopted:
                self._adopt()
            self.intended.restore()
            self.intended.apply("configuration", first=True)
            await self.state.flush()
            if self._dp.adopted:
                self.ids.release_unclaimed(self._dp, set(self.topology.backends))
            await asyncio.sleep(0)
            self._dp.set_interfaces(wanted_interfaces(self.config))
            await asyncio.sleep(0)
            self._dp.start_event_reader(self.flows.on_raw_events)
            hub.configure(self.config.settings)
            self._running = True
            self.scale_out.start(self.config.settings.announce, watch_bird=self._loops)
            self.measurements.refresh(self._dp, self.topology, self._clock.monotonic())
            self.publish()
            if self._loops:
                for coro in (self._control_loop(), self._sweep_loop(), self.reloader.watch()):
                    self._tasks.append(asyncio.create_task(coro))
                if self.config.path and self.config.settings.watch_config:
                    with contextlib.suppress(TimeoutError):
                        await within(WATCH_START_TIMEOUT_S, self.reloader.watching.wait())
        except BaseException as exc:
            await self._undo_start(cancelled=isinstance(exc, asyncio.CancelledError))
            raise
        ifaces = ", ".join(self._dp.interfaces)
        self.events.emit(
            "started", f"load balancer running on {ifaces} with {len(self.topology.proxies)} proxies"
        )

    async def _undo_start(self, cancelled: bool) -> None:
        """A failed or cancelled start: the data path first (no await can interrupt it), then the
        tasks. A cancelled start is a stop: keep_dataplane keeps the data path, else even an adopted
        earlier run's is detached (replaced, then detached)."""
        self._running = False
        keep = cancelled and self.keep_dataplane
        try:
            await self.scale_out.stop(grace=False)
            if cancelled and not keep and self._dp.adopted and not self._dp.interfaces:
                self._dp.set_interfaces(wanted_interfaces(self.config))
        except Exception:
            log.exception("replacing the adopted programs to detach them")
        finally:
            self._dp.close(keep=keep)
            await self._end_tasks()
            if self.observability is not None:
                self.observability.close()
            self._stopped.set()

    async def stop(self) -> None:
        if self._stopping:  # a second stop waits for the first (its withdraw grace, then the detach)
            await self._stopped.wait()
            return
        self._stopping = True
        if not self._running:
            self._dp.close()
            self._stopped.set()
            return
        self._running = False
        await self.scale_out.stop()  # withdrawn, serving while the routers converge; then detached
        await self._end_tasks()
        await self.state.flush()
        self._dp.close(keep=self.keep_dataplane)
        await asyncio.sleep(0)  # the reader's last hand-overs run on the loop before the logs close
        if self.observability is not None:
            self.observability.close()  # after the data path: the last events are flushed too
        kept = "programs left attached and maps pinned (--keep-dataplane)"
        how = kept if self.keep_dataplane else "programs detached and unpinned"
        self.events.emit("stopped", f"load balancer stopped; {how}")
        self.publish()
        self._stopped.set()

    async def _end_tasks(self) -> None:
        """The engine's loops and the supervision's checks and DNS tasks, cancelled and awaited."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.supervision.close()

    def _request_stop(self) -> None:
        assert self._loop is not None
        self._loop.create_task(self.stop())

    @property
    def running(self) -> bool:
        return self._running

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def _adopt(self) -> None:
        pinned = self.ids.adopt(self._dp)
        self.events.emit(
            "adopted",
            f"took over the data path of an earlier run: {len(pinned.services)} services, "
            f"{pinned.backend_count} backends, about {pinned.flows} flows in conntrack",
        )

    # ---- desired state: configuration + runtime overrides -> maps -------------------------------

    @property
    def config(self) -> Config:
        return self.intended.config

    @config.setter
    def config(self, config: Config) -> None:  # tests
        self.intended.config = config

    @property
    def overrides(self) -> Overrides:
        return self.intended.overrides

    def from_config(self, config: Config) -> Desired:
        return self.intended.from_config(config)

    def install(self, config: Config, overrides: Overrides) -> list[str]:
        """A new configuration with its overrides (reload, rollback)."""
        return self.intended.install(config, overrides)

    def report_dropped(self, gone: Dropped) -> None:
        self.intended.report_dropped(gone)

    def apply_settings(self, config: Config) -> None:
        self._dp.set_interfaces(wanted_interfaces(config))
        self.recorder.resize(config.settings.history_s)
        self.scale_out.announcer.configure(config.settings.announce)
        if self.observability is not None:
            self.observability.configure(config.settings)

    def _factors_of(self, key: BackendKey) -> Factors:
        return self.supervision.factors(key)

    def _on_dns_change(self, proxy: str, host: str, old: tuple[str, ...], new: tuple[str, ...]) -> None:
        was = ", ".join(old) or "nothing"
        try:  # the members of the name's groups change; every runtime override stays
            if self._running:
                self.intended.apply("configuration")
        except CapacityError as exc:
            msg = f"{proxy}: {host}: new answer not applied, keeping {was}: {exc}"
            self.events.emit("dns", msg, level=model.Level.WARNING, proxy=proxy)
            raise AnswerRefused(str(exc)) from None
        now = ", ".join(new) or "nothing"
        self.events.emit("dns", f"{proxy}: {host} now resolves to {now} (was {was})", proxy=proxy)
        if self._running:  # after the event: a front end that sees the new members finds it too
            self.publish()

    # ---- commands -------------------------------------------------------------------------------

    async def execute(self, cmd: model.Command) -> model.CommandResult:
        result = await self.scale_out.execute(cmd, self.commands.execute)
        await self.state.flush()  # what a command changed survives a crash once it is answered
        self.publish()
        return result

    async def reload(self, path: str | None = None, dry_run: bool = False) -> model.CommandResult:
        """Reload the configuration file (or `path`); a failure rolls everything back. dry_run:
        only say what would change."""
        return await self.reloader.reload(path, dry_run)

    # ---- periodic work --------------------------------------------------------------------------

    def tick(self) -> None:
        """One control tick: counters, circuit breakers and slow start, least-connections."""
        now = self._clock.monotonic()
        self.measurements.refresh(self._dp, self.topology, now)
        self.supervision.feed(self.measurements, self.sweeper.syn_failures)
        self.least_connections.update(self.topology, self.measurements, now)
        self.scale_out.decide()

    async def sweep(self) -> None:
        """One conntrack sweep and what follows from it (drains included)."""
        await self.sweeper.sweep(self.config.settings)
        self.drains.check()

    async def _control_loop(self) -> None:
        """Every 250 ms a tick; a snapshot each second, at the first tick of each wall-clock second
        so the history gets one point every second (else every 4 ticks: the clock stands still)."""
        n = last = 0
        while True:
            await asyncio.sleep(CONTROL_TICK_S)
            n += 1
            self.heartbeat = self._clock.monotonic()
            try:
                self.tick()
                if self.recorder.due() or n - last >= SNAPSHOT_EVERY_TICKS:
                    last = n
                    self.publish()
            except Exception:
                log.exception("control tick")

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.settings.sweep_interval_s)
            try:
                await self.sweep()
            except Exception:
                log.exception("conntrack sweep")

    # ---- snapshots and events -------------------------------------------------------------------

    def _status(self) -> Status:
        return Status(
            taken_at=self._clock.time(),
            started_at=self._started_at,
            config_path=self.config.path,
            running=self._running,
            dns=self.supervision.dns_status(),
            circuit_log=self.supervision.transitions(),
            events_dropped=self.flows.dropped,
            overrides=self.intended.overrides.entries(self._clock.monotonic()),
            state_file=self.state.path(self.config),
        )

    def publish(self) -> None:
        """Build the snapshot front ends read (on the loop; replaced whole)."""
        if self._running:
            self.measurements.read_latency(self._dp, self.topology.backends)
            self.measurements.read_fast_path(self._dp)
        snap = build_snapshot(self._status(), self.topology, self.measurements, self.sweeper.view)
        snap = self.recorder.observe(snap)  # the first snapshot of a second is history's point
        for decorate in self.snapshot_decorators:
            try:
                snap = decorate(snap)
            except Exception:
                log.exception("snapshot decorator")
        self._snapshot = snap

    def snapshot(self, flows: model.FlowQuery | None = None) -> model.Snapshot:
        """The latest snapshot; its flow view answers `flows` (default: the biggest flows by bytes).

        Conntrack is read whole only while front ends ask for flows (`flows` given, the default
        query too; engine.flowquery): after a pause, the first request gets the view of the last
        read or none (its flow_query says which query it answers) and the answer comes from the
        next sweep on. Raises ValueError for a query the engine refuses. Safe from any thread.
        """
        snap = self._snapshot
        if flows is not None:
            self.queries.ask()  # a front end looks at flows: the sweeps read them while it does
        if snap is None:
            return empty_snapshot(self._status(), self.sweeper.view)
        return snap if flows is None else self.queries.view(snap, flows)

    def events_since(self, seq: int, limit: int = 1000) -> list[model.Event]:
        return self.events.since(seq, limit)

    def history(self, query: model.HistoryQuery) -> model.HistoryAnswer:
        """Per-second series of proxies and backends, with the events to mark on their time axis
        (lbtui/engine/history.py). Raises ValueError for a query the engine refuses. Safe from any
        thread."""
        return self.recorder.answer(query, self.events.since(0, MAX_EVENTS))

    @property
    def flow_observers(self) -> list[Callable[[model.FlowEvent], None]]:
        return self.flows.observers

    # ---- for tests and tools --------------------------------------------------------------------

    @property
    def dataplane(self) -> Dataplane:
        return self._dp

    def group_table(self, proxy: str, label: str = DEFAULT_GROUP) -> Sequence[int]:
        return tuple(int(x) for x in self.topology.proxies[proxy].groups[label].table.tolist())

    def group_id(self, proxy: str, label: str = DEFAULT_GROUP) -> int:
        return self.topology.proxies[proxy].groups[label].id

    def backend_id(self, proxy: str, address: str, label: str = DEFAULT_GROUP) -> int:
        return self.topology.proxies[proxy].groups[label].members[address].id


def wanted_interfaces(config: Config) -> list[str]:
    return list(dict.fromkeys(i for p in config.proxies for i in p.interfaces))
