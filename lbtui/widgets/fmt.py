# SPDX-License-Identifier: Apache-2.0
"""Short, fixed-width text for the console's numbers; None (not measured yet) is always "—"."""

from __future__ import annotations

import math
import time

from rich.text import Text

from lbtui.addresses import search_terms

DASH = "—"


def count(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


def rate(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def millis(value: float | None) -> str:
    if value is None:
        return DASH
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def size(value: int | float | None) -> str:
    """Bytes with a binary unit: 512 B, 1.5 KiB, 20.0 MiB."""
    if value is None:
        return DASH
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float | None) -> str:
    """Compact age: 42s, 5m07s, 3h12m, 2d04h."""
    if seconds is None:
        return DASH
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def clock(ts: float) -> str:
    """Local wall-clock time of an event."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def right(text: str, style: str = "") -> Text:
    """A right-aligned cell, so columns of numbers line up."""
    return Text(text, style=style, justify="right")


def compact(value: int | None) -> str:
    """Counts for the one-line header: 1,234 then 12.3k, 2.0M."""
    if value is None:
        return DASH
    if value < 10_000:
        return f"{value:,}"
    if value < 100_000:
        return f"{value / 1000:.1f}k"
    if value < 1_000_000:
        return f"{value // 1000}k"
    return f"{value / 1_000_000:.1f}M"


def latency(ms: float) -> str:
    """A latency bound in the unit that reads best: 1µs, 512µs, 1.02ms, 250ms, 1.5s, 17.9min."""
    if math.isinf(ms):
        return "+Inf"
    if ms < 1:
        return f"{ms * 1000:.3g}µs"
    if ms < 1000:
        return f"{ms:.3g}ms"
    if ms < 60_000:
        return f"{ms / 1000:.3g}s"
    return f"{ms / 60_000:.3g}min"


def window(seconds: int | None) -> str:
    """The name of a latency window: 10s, 1m, 5m, or "life" for lifetime (None)."""
    if seconds is None:
        return "life"
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def matches(needle: str, *fields: str) -> bool:
    """Every whitespace-separated term of `needle` is part of one of `fields` (case-insensitive).

    The rule of the conntrack filter (model.FlowQuery), used by `/` in every pane."""
    lowered = [f.lower() for f in fields]
    return all(any(term in f for f in lowered) for term in search_terms(needle))
