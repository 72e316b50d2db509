# SPDX-License-Identifier: Apache-2.0
"""The one-line header: which instance, how long it has run, and the totals that matter at a glance;
and, under it, the other instances the console was given (`--peer`), one item each."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from lbtui.console_fetch import PeerState
from lbtui.model import Snapshot
from lbtui.widgets import fmt
from lbtui.widgets.backends import all_backends


def total_new_per_s(snapshot: Snapshot) -> float | None:
    rates = [b.new_flows_per_s for b in all_backends(snapshot) if b.new_flows_per_s is not None]
    return sum(rates) if rates else None


def summary_text(snapshot: Snapshot, title: str, attached: bool, read_only: bool = False) -> Text:
    instance = snapshot.config_path.rsplit("/", 1)[-1] if snapshot.config_path else "no config file"
    ct = snapshot.conntrack
    active = sum(s.active_flows for s in snapshot.services)
    sep = (" │ ", "dim")
    text = Text.assemble(
        (f" {title} ", "bold reverse"),
        " ",
        (instance, "bold"),
        (" (attached)" if attached and not read_only else "", "dim"),
        (" (read-only)" if read_only else "", "bold yellow"),
        sep,
        ("up ", "dim"),
        fmt.duration(snapshot.taken_at - snapshot.started_at),
        sep,
        ("flows ", "dim"),
        (fmt.compact(active), "bold"),
        sep,
        ("conntrack ", "dim"),
        (fmt.compact(ct.entries), "bold"),
        ("/", "dim"),
        fmt.compact(ct.capacity),
        sep,
        (fmt.rate(total_new_per_s(snapshot)), "bold"),
        (" new/s", "dim"),
    )
    share = snapshot.fast_path.share() if snapshot.fast_path is not None else None
    if share is not None:
        text.append(" │ ", style="dim")
        text.append("fast ", style="dim")
        # most packets go fast once neighbours are known: a low share is worth a look (ctl status)
        text.append(f"{share:.1%}", style="bold" if share >= 0.9 else "bold yellow")
    if snapshot.version:  # an older instance over the socket may not report it
        text.append(" │ ", style="dim")
        text.append(f"v{snapshot.version}", style="dim")
    if snapshot.announce.enabled:
        text.append_text(bgp_summary(snapshot))
    if not snapshot.running:
        text.append("  stopped", style="bold red")
    if snapshot.events_dropped:
        text.append(f"  {snapshot.events_dropped:,} events dropped", style="yellow")
    return text


def bgp_summary(snapshot: Snapshot) -> Text:
    """ " │ BGP 1/1 up, 2/2 VIPs announced": the sessions established and the VIPs announced."""
    text = Text(" │ ", style="dim")
    text.append_text(bgp_state(snapshot))
    return text


def bgp_state(snapshot: Snapshot) -> Text:
    """ "BGP 1/1 up, 2/2 VIPs announced" """
    view = snapshot.announce
    up = sum(s.state == "Established" for s in view.bgp)
    announced = sum(v.announced for v in view.vips)
    sessions = "BIRD unreachable" if view.bird_error else f"{up}/{len(view.bgp)} up"
    ok = not view.bird_error and up == len(view.bgp) > 0
    text = Text("BGP ", style="dim")
    text.append(sessions, style="bold" if ok else "bold red")
    text.append(", ", style="dim")
    all_vips = announced == len(view.vips)
    text.append(f"{announced}/{len(view.vips)}", style="bold" if all_vips else "bold yellow")
    text.append(" VIPs announced", style="dim")
    return text


def peers_text(peers: Sequence[PeerState]) -> Text:
    """ " peers │ h2: BGP 1/1 up, 1/1 VIPs announced, 12 flows, 9.8 new/s │ h3: unreachable (...)" """
    text = Text(" peers", style="bold")
    for peer in peers:
        text.append(" │ ", style="dim")
        text.append(peer.name, style="bold")
        text.append(": ", style="dim")
        snap = peer.snapshot
        if snap is None:
            text.append(f"unreachable ({peer.error or 'no answer yet'})", style="bold red")
            continue
        if not snap.running:
            text.append("stopped", style="bold red")
            continue
        if snap.announce.enabled:
            text.append_text(bgp_state(snap))
            text.append(", ", style="dim")
        text.append(fmt.compact(sum(s.active_flows for s in snap.services)), style="bold")
        text.append(" flows, ", style="dim")
        text.append(fmt.rate(total_new_per_s(snap)), style="bold")
        text.append(" new/s", style="dim")
    return text


class SummaryBar(Static):
    def show(self, snapshot: Snapshot, title: str, attached: bool, read_only: bool = False) -> None:
        self.update(summary_text(snapshot, title, attached, read_only))
