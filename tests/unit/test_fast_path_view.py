# SPDX-License-Identifier: Apache-2.0
"""How the fast path's counters reach an operator outside the metrics: `ctl status` (one line) and
the console's header (the share of packets that went fast)."""

from __future__ import annotations

from lbtui import ctl, model
from lbtui.dataplane.structs import GLOBAL_COUNTERS
from lbtui.engine.measurements import fast_path_view
from lbtui.widgets.summary import summary_text
from tests.support.snapshots import bare_snapshot


def snapshot(fast_path: model.FastPathView | None) -> model.Snapshot:
    return bare_snapshot(fast_path=fast_path)


def view(watch: model.NextHopWatchCounts | None = None, **counters: int) -> model.FastPathView:
    assert set(counters) <= set(GLOBAL_COUNTERS), counters
    return fast_path_view(counters, watch)


def test_the_share_counts_every_packet_it_decided_on() -> None:
    assert view().share() is None  # nothing yet
    v = view(fast_path_forwarded=600, fast_path_reply_forwarded=396, fast_path_no_neigh=3, fast_path_ttl=1)
    assert v.share() == 996 / 1000


def test_ctl_status_has_a_fast_path_line() -> None:
    watch = model.NextHopWatchCounts(messages=9, forgets=1, lost=1)
    v = view(watch, fast_path_forwarded=600, fast_path_reply_forwarded=396, fast_path_no_neigh=4)
    lines = ctl.format_status(snapshot(v)).splitlines()
    assert lines[2] == (
        "fast path: 99.6% fast (forward 600, reply 396); fell back: no_neigh 4; "
        "next hops forgotten 1 time (1 for lost announcements)"
    )
    assert ctl.format_status(snapshot(view())).splitlines()[2] == (
        "fast path: no packets yet (forward 0, reply 0); next hops forgotten 0 times"
    )
    assert ctl.format_status(snapshot(None)).splitlines()[2] == "fast path: off"


def test_the_console_header_shows_the_share_gone_fast() -> None:
    v = view(fast_path_forwarded=900, fast_path_no_neigh=100)
    header = summary_text(snapshot(v), "lbtui", False)
    assert "fast 90.0%" in header.plain
    low = summary_text(snapshot(view(fast_path_forwarded=10, fast_path_unmanaged=90)), "lbtui", False)
    assert "fast 10.0%" in low.plain
    styles = {low.plain[span.start : span.end]: str(span.style) for span in low.spans}
    assert "yellow" in styles["10.0%"]
    assert "fast" not in summary_text(snapshot(None), "lbtui", False).plain
    assert "fast" not in summary_text(snapshot(view()), "lbtui", False).plain
