# SPDX-License-Identifier: Apache-2.0
"""The text `lbtui ctl status` and `lbtui ctl flows` print: aligned tables of a snapshot (the JSON
forms are wire.py's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lbtui import model
from lbtui.addresses import format_endpoint
from lbtui.ctl_scaleout import announce_lines


def format_flows(snap: model.Snapshot, flows: Sequence[model.FlowView]) -> str:
    header = ("proto", "client", "vip", "backend", "state", "in", "out", "age")
    # as wide as the longest endpoint shown: 21 fits every IPv4 one, IPv6 ones need up to 47
    w = max([len("255.255.255.255:65535"), *(len(e) for f in flows for e in (f.client, f.vip, f.backend))])
    row = f"{{:5}} {{:{w}}} {{:{w}}} {{:{w}}} {{:11}} {{:>9}} {{:>9}} {{:>10}}"
    lines = [row.format(*header)]
    for f in flows:
        lines.append(
            row.format(
                f.protocol, f.client, f.vip, f.backend, f.state, f.bytes_in, f.bytes_out, _duration(f.age_s)
            )
        )
    query = snap.flow_query
    what = f"matching {query.text!r}" if query.text else "in conntrack"
    lines.append(f"{len(flows)} of {snap.flows_matched} flows {what}, by {query.sort}")
    return "\n".join(lines) + "\n"


def format_status(snap: model.Snapshot, instance: dict[str, Any] | None = None) -> str:
    """The `ctl status` text: the instance, then per proxy its backends."""
    info = instance or {}
    lines = [
        f"lbtui {snap.version or info.get('lbtui', '?')} pid {info.get('pid', '?')}, "
        f"{'running' if snap.running else 'stopping'}, up {_duration(snap.taken_at - snap.started_at)}, "
        f"config {snap.config_path or '-'}",
        f"conntrack: {snap.conntrack.flows} flows ({snap.conntrack.tcp} tcp, {snap.conntrack.udp} udp), "
        f"{snap.conntrack.entries}/{snap.conntrack.capacity} entries",
        _fast_path(snap.fast_path),
    ]
    header = (
        "BACKEND",
        "GROUP",
        "WEIGHT",
        "EFF",
        "HEALTH",
        "CIRCUIT",
        "STATE",
        "ACTIVE",
        "NEW/S",
        "PKT/S",  # in/out
        "BYTES/S",  # in/out
        "NOTE",
    )
    for svc in snap.services:
        lines.append("")
        title = (
            f"{svc.name}  {format_endpoint(svc.vip, svc.port)}/{svc.protocol}  {svc.algorithm}  "
            f"{svc.active_flows} active flows"
        )
        limits = _limits(svc.rate_limit)
        if limits:
            title += f"  rate limit {limits}"
        if svc.panic:
            title += "  PANIC (no backend had weight: spread over all)"
        lines.append(title)
        rows = [header] + [
            (
                b.address,
                b.group,
                str(b.configured_weight),
                str(b.effective_weight),
                b.health.value + ("(forced)" if b.health_forced else ""),
                (b.circuit.value if b.circuit is not None else "-") + ("(held)" if b.circuit_held else ""),
                "maint" if b.maintenance else b.drain.value,
                str(b.active_flows),
                "-" if b.new_flows_per_s is None else f"{b.new_flows_per_s:.1f}",
                f"{_si(b.packets_in_per_s)}/{_si(b.packets_out_per_s)}",
                f"{_si(b.bytes_in_per_s)}/{_si(b.bytes_out_per_s)}",
                b.last_change,
            )
            for b in svc.all_backends()
        ]
        lines += _table(rows, numeric={2, 3, 7, 8, 9, 10})
        lines += _latency(snap, svc)
    lines += announce_lines(snap)
    return "\n".join(lines) + "\n"


def _fast_path(view: model.FastPathView | None) -> str:
    """ "fast path: 99.8% fast (forward 1200, reply 1180); fell back: no_neigh 4; next hops forgotten
    3 times" """
    if view is None:
        return "fast path: off"
    share = view.share()
    line = "fast path: " + ("no packets yet" if share is None else f"{share:.1%} fast")
    line += " (" + ", ".join(f"{d} {n}" for d, n in sorted(view.forwarded.items())) + ")"
    fell_back = [f"{reason} {n}" for reason, n in sorted(view.fallbacks.items()) if n]
    if fell_back:
        line += "; fell back: " + ", ".join(fell_back)
    watch = view.watch
    line += f"; next hops forgotten {watch.forgets} time{'' if watch.forgets == 1 else 's'}"
    if watch.lost:
        line += f" ({watch.lost} for lost announcements)"
    return line


def _table(rows: Sequence[Sequence[str]], numeric: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  "
        + "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _latency(snap: model.Snapshot, svc: model.ServiceView) -> list[str]:
    """p99 per backend over the last 10 s, 1 min and 5 min beside lifetime (docs/control-protocol.md:
    the windows of latency[].windows), handshake and connection duration; UDP has no handshakes."""
    windows = model.LATENCY_WINDOWS_S
    names = [f"{s}S" if s < 60 else f"{s // 60}M" for s in windows] + ["LIFE"]
    kinds = ("duration",) if svc.protocol == "udp" else ("handshake", "duration")
    rows = [["BACKEND"] + [f"{LATENCY_KINDS[kind]}-{n}" for kind in kinds for n in names]]
    for address in dict.fromkeys(b.address for b in svc.all_backends()):
        view = snap.latency_of(svc.name, address)
        row = [address]
        for kind in kinds:
            lifetime = getattr(view, kind) if view else None
            for seconds in windows:
                window = view.window(seconds) if view else None
                row.append(_ms(getattr(getattr(window, kind, None), "p99_ms", None)))
            row.append(_ms(lifetime.p99_ms if lifetime else None))
        rows.append(row)
    title = "  p99 in ms of handshakes (HS) and connection durations (DUR): last 10 s, 1 min, 5 min, lifetime"
    return [title] + _table(rows, numeric=set(range(1, len(rows[0]))))


LATENCY_KINDS = {"handshake": "HS", "duration": "DUR"}


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _limits(r: model.RateLimitView) -> str:
    parts = []
    for name, rate, burst in (
        ("per-source", r.per_source_rate, r.per_source_burst),
        ("per-backend", r.per_backend_rate, r.per_backend_burst),
    ):
        if rate:
            parts.append(f"{name} {rate}/s" + (f" burst {burst}" if burst else ""))
    return ", ".join(parts)


def _si(value: float | None) -> str:
    """A rate in few characters: 950, 12k, 3.4M ("-" when not measured)."""
    if value is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            scaled = value / size
            return f"{scaled:.1f}{unit}" if scaled < 10 else f"{scaled:.0f}{unit}"
    return f"{value:.0f}"


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d" if d else "") + f"{h}h{m:02d}m{s:02d}s"
