# SPDX-License-Identifier: Apache-2.0
"""The metric reference, the example alert rules and the Grafana dashboard agree with the code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lbtui.observe.metrics import METRICS

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "packaging" / "prometheus" / "lbtui-alerts.yml"
RULE_TESTS = ROOT / "packaging" / "prometheus" / "lbtui-alerts.test.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "lbtui.json"


def _known_series() -> set[str]:
    names = set()
    for m in METRICS:
        names.add(m.name)
        if m.type == "histogram":
            names.update(f"{m.name}_{part}" for part in ("bucket", "sum", "count"))
    return names


def _used_names(text: str) -> set[str]:
    return set(re.findall(r"\blbtui_[a-z_]+\b", text))


def test_the_metric_reference_is_generated_from_the_code() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "metrics-doc"), "--check"], capture_output=True
    )
    assert r.returncode == 0, r.stderr.decode()


@pytest.mark.requires("promtool")
def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    for args in (["check", "rules", RULES.name], ["test", "rules", RULE_TESTS.name]):
        r = subprocess.run(["promtool", *args], cwd=RULES.parent, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr


def test_rules_and_dashboard_use_only_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = _used_names("\n".join(exprs)) | _used_names(RULES.read_text())
    # label_values() and annotation text name metrics too; all must exist
    unknown = used - _known_series()
    assert not unknown, f"not lbtui metrics: {sorted(unknown)}"
    assert len(exprs) >= 10 and all("lbtui_" in e for e in exprs)
