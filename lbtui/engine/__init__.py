# SPDX-License-Identifier: Apache-2.0
"""The control plane: `Engine`, the one facade front ends use, and its parts (docs/architecture.md).

facade.py       Engine: life cycle, wiring, the loops, the one place desired state is composed
desired.py      configuration + DNS answers + runtime overrides -> what the maps should hold
overrides.py    runtime overrides (weights, drains, maintenance, holds, backends added/removed, limits)
statefile.py    the state file that keeps them across restarts;  persist.py: restoring and keeping
topology.py     proxies, groups and members as the maps hold them; the one selection writer
group.py        a group's members and selection table (plans the slot delta, never writes)
ids.py          service, group and backend ids; adoption of an earlier run's pinned ids
commands.py     operator commands;  drains.py: drains and their timeouts
reload.py       reload with rollback, and the file watch
sweep.py        the conntrack sweep and its consequences
flows.py        flow events (ring buffer, idle closes);  flowquery.py: front ends' flow queries
measurements.py counters, rates, latency, least-connections
snapshots.py    snapshot building;  events.py: the event log;  clock.py: injectable clocks
history.py      one point per second of every proxy's and backend's series; latency windows
instance.py     instance naming, pinned state, the BPF data path for a configuration
"""

from lbtui.engine.commands import MAX_WEIGHT
from lbtui.engine.desired import config_limits, split_address
from lbtui.engine.facade import Engine
from lbtui.engine.ids import DEFAULT_GROUP
from lbtui.engine.instance import (
    PIN_ROOT,
    dataplane_spec,
    default_state_file,
    instance_name,
    kernel_dataplane,
)

__all__ = [
    "DEFAULT_GROUP",
    "MAX_WEIGHT",
    "PIN_ROOT",
    "Engine",
    "config_limits",
    "dataplane_spec",
    "default_state_file",
    "instance_name",
    "kernel_dataplane",
    "split_address",
]
