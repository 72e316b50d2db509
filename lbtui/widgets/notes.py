# SPDX-License-Identifier: Apache-2.0
"""Why a pane shows nothing: not configured, nothing happened yet, or the filter matches nothing.

One line above the pane's rows; None when the pane has something to show.
"""

from __future__ import annotations

from lbtui.model import Snapshot
from lbtui.widgets.conntrack import ConntrackPane
from lbtui.widgets.filter import Filterable as Filtered


def _count(widget: Filtered) -> int:
    return int(getattr(widget, "shown", 1))


def pane_notes(
    snapshot: Snapshot, filtered: dict[str, Filtered], conntrack: ConntrackPane
) -> dict[str, str | None]:
    notes: dict[str, str | None] = {}

    def unmatched(pane: str) -> str | None:
        widget = filtered[pane]
        if widget.needle and _count(widget) == 0:
            return f"nothing matches the filter {widget.needle!r} (escape in the filter clears it)"
        return None

    backends = [b for s in snapshot.services for b in s.all_backends()]
    if not snapshot.services:
        notes["backends"] = "no proxy configured: add a [[proxy]] with backends to the configuration"
    elif not backends:
        notes["backends"] = "no backend configured (or none resolved yet for a DNS backend)"
    else:
        notes["backends"] = unmatched("backends")

    if snapshot.conntrack.flows == 0:
        notes["conntrack"] = "no flow in conntrack: no connection goes through the load balancer right now"
    elif conntrack.needle and snapshot.flow_query.text == conntrack.needle and snapshot.flows_matched == 0:
        notes["conntrack"] = f"no flow matches {conntrack.needle!r} among {snapshot.conntrack.flows:,} flows"
    else:
        notes["conntrack"] = None

    if backends and all(b.circuit is None for b in backends):
        notes["circuits"] = "no circuit breaker configured: add [proxy.circuit_breaker] to a proxy"
    else:
        notes["circuits"] = unmatched("circuits")

    notes["latency"] = unmatched("latency")  # the pane itself says "no latency data yet"

    if snapshot.access_log_target is None:
        notes["access"] = (
            'no access log configured: set settings.access_log (file = "...", or stdout headless) '
            "to see a line per closed connection here"
        )
    elif not snapshot.access_log_tail:
        notes["access"] = f"access log {snapshot.access_log_target}: no connection has closed yet"
    else:
        notes["access"] = unmatched("access")

    events = filtered["events"]
    if getattr(events, "total", 1) == 0:
        notes["events"] = "no events yet"
    else:
        notes["events"] = unmatched("events")
    return notes
