# SPDX-License-Identifier: Apache-2.0
"""The address families lbtui serves: IPv4 only, until the engine reads IPv6 conntrack (issue 13).

The configuration accepts IPv6 proxies (lbtui/config), everything above the data path handles IPv6
addresses, and the BPF programs carry IPv6 (docs/datapath.md#ipv6), but the engine does not yet read
the IPv6 conntrack tables (the sweep that expires flows, the flow table, drains and the in-memory
dataplane): IPv6 flows would never expire. So a configuration with an IPv6 proxy is refused, naming
each such proxy's key path: at start (`Engine.start`), at reload (the running configuration stays,
`Reloader.reload`) and by `lbtui --check` (cli.py). This module is the one place that knows; IPv6
conntrack in the engine deletes it and those three calls (grep refuse_unbuilt_families).
"""

from __future__ import annotations

from lbtui.addresses import IPV6, family
from lbtui.config import Config, ConfigError, ConfigIssue

UNBUILT = "IPv6 proxies are not served yet (the engine does not track IPv6 flows); use an IPv4 VIP for now"


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
