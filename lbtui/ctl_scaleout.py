# SPDX-License-Identifier: Apache-2.0
"""`lbtui ctl` text for scale-out (docs/scale-out.md): each VIP's BGP announcement with BIRD's
sessions, and the fingerprint of each selection table (compare them across hosts)."""

from __future__ import annotations

from lbtui import model


def announce_lines(snap: model.Snapshot) -> list[str]:
    """The announcement block of `ctl status`; nothing when announcement is off."""
    view = snap.announce
    if not view.enabled:
        return []
    lines = ["", f"announce (table {view.table}):"]
    for v in view.vips:
        state = "ANNOUNCED" if v.announced else "withdrawn"
        held = "  HELD by operator" if v.held else ""
        error = f"  error: {v.error}" if v.error else ""
        lines.append(f"  {v.vip:<16} {state:<9}  {', '.join(v.proxies) or '-'}: {v.reason}{held}{error}")
    if view.bird_error:
        lines.append(f"  BIRD: cannot read its sessions: {view.bird_error}")
    elif not view.bgp:
        lines.append("  BIRD: no BGP session configured")
    for s in view.bgp:
        peer = f"{s.neighbor or '?'} AS{s.neighbor_as if s.neighbor_as is not None else '?'}"
        error = f"  last error: {s.last_error}" if s.last_error else ""
        lines.append(f"  BGP {s.name:<12} {s.state:<11} {peer}  since {s.since or '-'}{error}")
    return lines


def format_fingerprints(snap: model.Snapshot) -> str:
    """`lbtui ctl fingerprint`: one line per selection table."""
    lines = [
        "{:<20} {:<20} {:<18} {:>6} {:>8}  {}".format(
            "PROXY", "GROUP", "ALGORITHM", "SLOTS", "BACKENDS", "FINGERPRINT"
        )
    ]
    for t in snap.tables:
        lines.append(
            f"{t.proxy:<20} {t.group:<20} {t.algorithm:<18} {t.slots:>6} {t.backends:>8}  {t.fingerprint}"
        )
    return "\n".join(lines) + "\n"
