"""Live quality in the Cloud Monitoring console: the monitor's metric writes through the real client
library to a stand-in of the API, and the shipped dashboard and alert policies read as the API's
own types, over the metrics the monitor writes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes.monitoring import running_monitoring
from test_monitor import MONITOR, World

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.monitoring.cloud_metrics import METRIC_KINDS, METRIC_PREFIX

CLOUD = Path(__file__).resolve().parents[1] / "cloud" / "monitoring"
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _config(tmp_path: Path, endpoint: str, **monitor: Any) -> FlywheelConfig:
    return FlywheelConfig.model_validate(
        {
            "paths": {"root": str(tmp_path / "state")},
            "feedback": {"label_window_hours": 0.5},
            "monitor": {**MONITOR, "cloud_metrics": True, **monitor},
            "vertex": {"project": "my-project", "monitoring_api_endpoint": endpoint},
        }
    )


def test_every_look_writes_each_versions_live_quality(tmp_path: Path, model_dir: Path) -> None:
    with running_monitoring() as (fake, url):
        world = World("local", _config(tmp_path, url), model_dir)
        world.traffic(1, 300, 0.2, T0, T0 + timedelta(hours=1))
        world.monitor(T0 + timedelta(hours=2))
    assert fake.requests == 1
    assert {s["project"] for s in fake.series} == {"my-project"}
    assert {s["type"] for s in fake.series} == {METRIC_PREFIX + m for m in METRIC_KINDS}
    assert fake.latest("requests", "1") == 300
    assert fake.latest("traffic_share", "1") == 100.0
    assert 0.1 < (fake.latest("correction_rate", "1") or 0) < 0.3  # a fifth were wrong, each corrected
    # a wrong answer is one word in four; the scored ones are the corrected fifth and a tenth of the rest
    assert fake.latest("live_wer", "1") == pytest.approx(0.25 * 0.2 / (0.2 + 0.1 * 0.8), abs=0.05)
    assert {s["labels"]["endpoint"] for s in fake.series} == {world.config.deploy.endpoint_name}


def test_a_metric_write_that_fails_leaves_the_look_standing(tmp_path: Path, model_dir: Path) -> None:
    world = World("local", _config(tmp_path, "http://127.0.0.1:9"), model_dir)  # nothing listens there
    world.traffic(1, 50, 0.2, T0, T0 + timedelta(hours=1))
    decision, line = world.monitor(T0 + timedelta(hours=2))
    assert decision.kind == "default" and line["monitor"]["kind"] == "default"
    assert decision.seconds is not None and decision.seconds > 0  # what a scheduled look costs


def _metric_types(text: str) -> set[str]:
    return set(re.findall(r'metric\.type=\\?"([^"\\]+)', text))


def test_the_dashboard_and_alert_policies_are_the_apis_types_over_the_written_metrics() -> None:
    from google.cloud import monitoring_dashboard_v1, monitoring_v3

    written = {METRIC_PREFIX + m for m in METRIC_KINDS}
    dashboard = (CLOUD / "dashboard.json").read_text()
    parsed = monitoring_dashboard_v1.Dashboard.from_json(dashboard)  # unknown fields are an error
    assert len(parsed.mosaic_layout.tiles) == len(METRIC_KINDS)
    assert _metric_types(dashboard) == written
    policies = sorted(CLOUD.glob("alert-*.json"))
    assert len(policies) >= 3
    for path in policies:
        policy = monitoring_v3.AlertPolicy.from_json(path.read_text())
        assert policy.conditions and policy.documentation.content, path.name
        assert _metric_types(path.read_text()) <= written, path.name
