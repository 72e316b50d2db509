# SPDX-License-Identifier: Apache-2.0
"""The address families the data path carries: IPv4 only, until the IPv6 data path is built (issue 13).

The configuration accepts IPv6 proxies (lbtui/config), and everything above the data path handles
IPv6 addresses, but the BPF programs do not carry IPv6 yet. So a configuration with an IPv6 proxy is
refused, naming each such proxy's key path: at start (`Engine.start`), at reload (the running
configuration stays, `Reloader.reload`) and by `lbtui --check` (cli.py). This module is the one
place that knows; the IPv6 data path deletes it and those three calls (grep refuse_unbuilt_families).
"""

from __future__ import annotations

from lbtui.addresses import IPV6, family
from lbtui.config import Config, ConfigError, ConfigIssue

UNBUILT = "IPv6 proxies need the IPv6 data path, which is not built yet; use an IPv4 VIP for now"


def refuse_unbuilt_families(config: Config) -> None:
    """Raise ConfigError with one issue per proxy whose family the data path does not carry."""
    file = config.path or "<string>"
    issues = [
        ConfigIssue(file, f"proxy[{index}].vip", f"{UNBUILT} (proxy {proxy.name!r}, vip {proxy.vip})")
        for index, proxy in enumerate(config.proxies)
        if family(proxy.vip) == IPV6
    ]
    if issues:
        raise ConfigError(issues)
