# SPDX-License-Identifier: Apache-2.0
"""The kernel side of lbtui, behind one port (docs/architecture.md#layers).

- `port`: the `Dataplane` protocol the engine uses and the values it speaks (no bcc, no pyroute2);
- `kernel`: `KernelDataplane`, the BPF programs through BCC (loader.py, maps.py: the only bcc and
  pyroute2 importers; import it explicitly);
- `memory`: `MemoryDataplane`, the same semantics in plain Python, for engine and console tests;
- `structs` and `records`: the one mirror of bpf/lb.h and the one decoder of each record.

Importing this package imports neither bcc nor pyroute2.
"""

from __future__ import annotations

from lbtui.dataplane.loader import check_privileges
from lbtui.dataplane.port import (
    Dataplane,
    DataplaneError,
    DataplaneSpec,
    FlowEntry,
    LatencyCounts,
    RateLimits,
    RawFlowEvent,
    ServiceEntry,
)

__all__ = [
    "Dataplane",
    "DataplaneError",
    "DataplaneSpec",
    "FlowEntry",
    "LatencyCounts",
    "RateLimits",
    "RawFlowEvent",
    "ServiceEntry",
    "check_privileges",
]
