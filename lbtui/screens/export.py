# SPDX-License-Identifier: Apache-2.0
"""`e`: the view on screen as an SVG screenshot, and the snapshot behind it as JSON, side by side.

The JSON is the control protocol's form of the snapshot (docs/control-protocol.md), so what the
operator saved reads like `lbtui ctl status --json`. Files are named by time and pane, never
overwritten, and written to the console's export directory (LbtuiApp(export_dir=...): the current
directory when lbtui starts the console).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from textual.app import App

from lbtui import wire
from lbtui.model import Snapshot


def export_view(app: App[Any], directory: str, pane: str) -> tuple[str, str | None]:
    """Write the files; (svg path, json path or None when no snapshot has come yet). OSError if not."""
    directory = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(directory, exist_ok=True)
    stem = f"lbtui-{time.strftime('%Y%m%d-%H%M%S')}-{pane}"
    n = 1
    base = stem
    while os.path.exists(os.path.join(directory, base + ".svg")):
        n += 1
        base = f"{stem}-{n}"
    svg = os.path.join(directory, base + ".svg")
    app.save_screenshot(filename=os.path.basename(svg), path=directory)
    snapshot: Snapshot | None = getattr(app, "snapshot", None)
    if snapshot is None:
        return svg, None
    data = os.path.join(directory, base + ".json")
    with open(data, "x", encoding="utf-8") as f:
        json.dump(wire.encode_snapshot(snapshot), f, indent=1, allow_nan=False)
        f.write("\n")
    return svg, data
