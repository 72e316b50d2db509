# SPDX-License-Identifier: Apache-2.0
"""The state file: the runtime overrides, kept across restarts (README.md#runtime-state).

One JSON object (`StateFile`, its records declared once here and encoded by lbtui.wire's converter),
written after every change of the overrides: to a temporary file in the same directory, fsync'd,
renamed over the old one, and the directory fsync'd, so a crash at any point leaves the old file
or the new one, never a mix. The writing happens on a thread of its own (the engine's loop never
waits for a disk); commands wait for it (`flush`) before they answer, so a command that said "done"
survives a kill -9. Drain deadlines are kept as wall-clock times (monotonic time starts again at
boot); runtime weights and rate limits are kept with the configured value they override, so a
restart with a file that changed that value lets the file win, as a reload would.

Reading takes only a regular file of bounded size. A file that cannot be read or understood is
moved aside (`<file>.unreadable`) with an error event, and the instance starts without overrides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lbtui import model, wire
from lbtui.dataplane.port import RateLimits
from lbtui.engine.clock import Clock
from lbtui.engine.commands import MAX_WEIGHT, valid_weight
from lbtui.engine.desired import split_address
from lbtui.engine.overrides import BackendRef, DrainOverride, Overrides

STATE_VERSION = 1
MAX_STATE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class WeightRecord:
    proxy: str
    backend: str
    weight: int
    configured: tuple[int, ...]  # the configured weight(s) it overrides, one per group that has it


@dataclass(frozen=True)
class DrainRecord:
    proxy: str
    backend: str
    state: model.DrainState
    deadline: float | None = None  # unix time
    cut: bool = False


@dataclass(frozen=True)
class BackendRecord:
    """A backend in maintenance."""

    proxy: str
    backend: str


@dataclass(frozen=True)
class HealthRecord:
    proxy: str
    backend: str
    state: model.Health  # forced UP or DOWN


@dataclass(frozen=True)
class CircuitRecord:
    proxy: str
    backend: str
    state: model.Circuit  # held OPEN or CLOSED


@dataclass(frozen=True)
class MemberRecord:
    """A backend added to a group at run time (with its weight), or removed from it (weight None)."""

    proxy: str
    group: str
    backend: str
    weight: int | None = None


@dataclass(frozen=True)
class Limits:
    per_source_rate: int = 0
    per_source_burst: int = 0
    per_backend_rate: int = 0
    per_backend_burst: int = 0


@dataclass(frozen=True)
class LimitsRecord:
    proxy: str
    limits: Limits
    configured: Limits  # the configured limits they override


@dataclass(frozen=True)
class StateFile:
    version: int
    saved_at: float  # unix time
    weights: tuple[WeightRecord, ...] = ()
    drains: tuple[DrainRecord, ...] = ()
    maintenance: tuple[BackendRecord, ...] = ()
    health: tuple[HealthRecord, ...] = ()
    circuits: tuple[CircuitRecord, ...] = ()
    added: tuple[MemberRecord, ...] = ()
    removed: tuple[MemberRecord, ...] = ()
    limits: tuple[LimitsRecord, ...] = ()
    withdrawn: tuple[str, ...] = ()  # proxies whose VIP the operator withdrew from BGP


@dataclass(frozen=True)
class Saved:
    """What a state file gives back: the overrides, and the configured values they were made over."""

    overrides: Overrides
    weights: Mapping[BackendRef, tuple[int, ...]]
    limits: Mapping[str, RateLimits]


class StateError(Exception):
    """The state file cannot be read or understood."""


# ---- the value <-> its file ----------------------------------------------------------------------


def to_file(saved: Saved, clock: Clock) -> StateFile:
    o = saved.overrides
    now, mono = clock.time(), clock.monotonic()
    return StateFile(
        version=STATE_VERSION,
        saved_at=now,
        weights=tuple(
            WeightRecord(p, a, w, saved.weights.get((p, a), ())) for (p, a), w in sorted(o.weights.items())
        ),
        drains=tuple(
            DrainRecord(p, a, d.state, None if d.deadline is None else now + (d.deadline - mono), d.cut)
            for (p, a), d in sorted(o.drains.items())
        ),
        maintenance=tuple(BackendRecord(p, a) for p, a in sorted(o.maintenance)),
        health=tuple(HealthRecord(p, a, h) for (p, a), h in sorted(o.health.items())),
        circuits=tuple(CircuitRecord(p, a, c) for (p, a), c in sorted(o.circuits.items())),
        added=tuple(MemberRecord(p, g, a, w) for (p, g, a), w in sorted(o.added.items())),
        removed=tuple(MemberRecord(p, g, a) for p, g, a in sorted(o.removed)),
        limits=tuple(
            LimitsRecord(p, _limits(lim), _limits(saved.limits.get(p, RateLimits())))
            for p, lim in sorted(o.limits.items())
        ),
        withdrawn=tuple(sorted(o.withdrawn)),
    )


def from_file(f: StateFile, clock: Clock) -> Saved:
    now, mono = clock.time(), clock.monotonic()
    overrides = Overrides(
        weights={(r.proxy, r.backend): r.weight for r in f.weights},
        drains={
            (r.proxy, r.backend): DrainOverride(
                r.state, None if r.deadline is None else mono + (r.deadline - now), r.cut
            )
            for r in f.drains
        },
        maintenance=frozenset((r.proxy, r.backend) for r in f.maintenance),
        health={(r.proxy, r.backend): r.state for r in f.health},
        circuits={(r.proxy, r.backend): r.state for r in f.circuits},
        added={(r.proxy, r.group, r.backend): r.weight for r in f.added if r.weight is not None},
        removed=frozenset((r.proxy, r.group, r.backend) for r in f.removed),
        limits={r.proxy: _rate_limits(r.limits) for r in f.limits},
        withdrawn=frozenset(f.withdrawn),
    )
    return Saved(
        overrides,
        weights={(r.proxy, r.backend): r.configured for r in f.weights},
        limits={r.proxy: _rate_limits(r.configured) for r in f.limits},
    )


def _limits(lim: RateLimits) -> Limits:
    return Limits(lim.src_rate, lim.src_burst, lim.be_rate, lim.be_burst)


def _rate_limits(lim: Limits) -> RateLimits:
    return RateLimits(lim.per_source_rate, lim.per_source_burst, lim.per_backend_rate, lim.per_backend_burst)


def encode(f: StateFile) -> bytes:
    return (json.dumps(wire.encode_value(f), indent=1) + "\n").encode()


def decode(data: bytes) -> StateFile:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise StateError(f"not JSON: {str(exc)[:200]}") from None
    version = document.get("version") if isinstance(document, dict) else None
    if version != STATE_VERSION:
        raise StateError(f"version {version!r}; this lbtui reads version {STATE_VERSION}")
    try:
        f = wire.decode_dataclass(StateFile, document, "state", strict=True)
    except wire.WireError as exc:
        raise StateError(str(exc)) from None
    _check(f)
    return f


def _check(f: StateFile) -> None:
    """Values a command would have refused are refused here too."""
    groups: tuple[
        tuple[WeightRecord | DrainRecord | BackendRecord | HealthRecord | CircuitRecord | MemberRecord, ...],
        ...,
    ] = (
        f.weights,
        f.drains,
        f.maintenance,
        f.health,
        f.circuits,
        f.added,
        f.removed,
    )
    try:
        for records in groups:
            for r in records:
                split_address(r.backend)
    except ValueError as exc:
        raise StateError(str(exc)) from None
    for w in [r.weight for r in f.weights] + [r.weight for r in f.added]:
        if not valid_weight(w):
            raise StateError(f"a weight must be an integer 1..{MAX_WEIGHT}, got {w!r}")
    if any(r.weight is not None for r in f.removed):
        raise StateError("a removed backend has no weight")
    if any(r.state is model.DrainState.ACTIVE for r in f.drains):
        raise StateError('a drain is "draining" or "drained"')
    if any(r.state is model.Health.UNKNOWN for r in f.health):
        raise StateError('forced health is "up" or "down"')
    if any(r.state is model.Circuit.HALF_OPEN for r in f.circuits):
        raise StateError('a circuit is held "open" or "closed"')
    if not all(f.withdrawn):
        raise StateError("a withdrawn VIP names its proxy")


# ---- reading and writing -------------------------------------------------------------------------


def read(path: str) -> bytes | None:
    """The file's bytes; None when there is none. StateError when it is not a regular file of at
    most MAX_STATE_BYTES or cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read it: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise StateError("not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if st.st_size > MAX_STATE_BYTES:
            raise StateError(f"{st.st_size} bytes, more than a state file may have ({MAX_STATE_BYTES})")
        try:
            return handle.read(MAX_STATE_BYTES + 1)
        except OSError as exc:
            raise StateError(f"cannot read it: {exc.strerror}") from None


def write_atomically(path: str, data: bytes) -> None:
    """Replace `path` by `data` so that a crash leaves either the old file or the new one (mode 0600;
    the directory is made, 0700, if missing)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lbtui-state-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StateWriter:
    """Writes the newest state on a thread, one write at a time; a burst of changes is one write.

    on_error("path: reason") after a write failed (the next change tries again)."""

    def __init__(self, on_error: Callable[[str], None]) -> None:
        self._on_error = on_error
        self._pending: tuple[str, bytes] | None = None
        self._task: asyncio.Task[None] | None = None

    def submit(self, path: str, data: bytes) -> None:
        """On the engine's loop: write `data` to `path` soon (after any write in progress)."""
        self._pending = (path, data)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def flush(self) -> None:
        """Until everything submitted so far is written (or failed)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _drain(self) -> None:
        while self._pending is not None:
            path, data = self._pending
            self._pending = None
            try:
                await asyncio.to_thread(write_atomically, path, data)
            except OSError as exc:
                self._on_error(f"{path}: {exc.strerror or exc}")
