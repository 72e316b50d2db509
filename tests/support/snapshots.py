# SPDX-License-Identifier: Apache-2.0
"""The smallest snapshot an engine could send: no proxies, no flows; `fields` set the rest."""

from __future__ import annotations

from typing import Any

from lbtui import model


def bare_snapshot(**fields: Any) -> model.Snapshot:
    values: dict[str, Any] = {
        "taken_at": 10.0,
        "started_at": 0.0,
        "config_path": "/etc/lbtui/lbtui.toml",
        "services": (),
        "conntrack": model.ConntrackSummary(),
        "flows": (),
    }
    return model.Snapshot(**(values | fields))
