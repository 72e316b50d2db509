# SPDX-License-Identifier: Apache-2.0
"""Wires the observability parts to an engine: flow events in, snapshot fields and endpoints out.

The engine calls `observe(ev)` for every flow event (it never blocks: the access log queues) and
`decorate(snap)` for every snapshot it publishes; `configure` follows settings changes on reload
(metrics listener, access log). Latency histograms come from the data path with the snapshot.
"""

from __future__ import annotations

import dataclasses
import logging

from lbtui import model
from lbtui.config import AccessLogConfig, MetricsConfig, Settings
from lbtui.observe.accesslog import AccessLog
from lbtui.observe.metrics import Metrics

log = logging.getLogger(__name__)

TAIL_LINES = 200


class ObservabilityHub:
    def __init__(self, get_snapshot: object, allow_stdout: bool = True):
        self.metrics = Metrics(get_snapshot)  # type: ignore[arg-type]
        self.access_log: AccessLog | None = None
        self._allow_stdout = allow_stdout
        self._metrics_cfg: MetricsConfig | None = None
        self._access_cfg: AccessLogConfig | None = None

    def configure(self, settings: Settings) -> None:
        """Start, restart or stop the metrics endpoint and the access log to match settings."""
        if settings.metrics != self._metrics_cfg:
            self.metrics.stop()
            if settings.metrics.enabled:
                self.metrics.start(settings.metrics.listen, settings.metrics.path)
                log.info("metrics on http://%s%s", settings.metrics.listen, settings.metrics.path)
            self._metrics_cfg = settings.metrics
        access = settings.access_log
        if not self._allow_stdout and access.stdout:
            access = dataclasses.replace(access, stdout=False)  # the console owns the terminal
        if access != self._access_cfg:
            if self.access_log is not None:
                self.access_log.stop()  # flushes what is queued
                self.access_log = None
            if access.stdout or access.file or access.syslog:
                self.access_log = AccessLog(access, tail_size=TAIL_LINES)
                self.access_log.start()
            self._access_cfg = access

    def observe(self, ev: model.FlowEvent) -> None:
        if self.access_log is not None:
            self.access_log.log(ev)

    def observe_health_check(self, proxy: str, backend: str, seconds: float) -> None:
        self.metrics.observe_health_check(proxy, backend, seconds)

    def decorate(self, snap: model.Snapshot) -> model.Snapshot:
        """The access-log tail and its drops into the snapshot; note counters for the metrics (only
        while they are served: with nobody scraping, no series is kept)."""
        dropped = snap.events_dropped + (self.access_log.dropped if self.access_log else 0)
        out = dataclasses.replace(
            snap,
            access_log_tail=self.access_log.tail(TAIL_LINES) if self.access_log else (),
            access_log_target=self._access_target(),
            events_dropped=dropped,
        )
        if self._metrics_cfg is not None and self._metrics_cfg.enabled:
            self.metrics.track(out)
        return out

    def _access_target(self) -> str | None:
        """Where the access log goes, for the console ("no access log configured" when None)."""
        cfg = self._access_cfg
        if self.access_log is None or cfg is None:
            return None
        targets = [t for t in (cfg.file, "stdout" if cfg.stdout else None) if t]
        return ", ".join(targets) or "configured"

    def close(self) -> None:
        self.metrics.stop()
        if self.access_log is not None:
            self.access_log.stop()
            self.access_log = None
