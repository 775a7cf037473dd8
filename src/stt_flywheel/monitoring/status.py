"""One view of the whole system: the store, the trigger, the last runs, the registry with live
quality per version, and each version's trend by day. `stt-flywheel status` prints it."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.deployment.backends import open_deployment
from stt_flywheel.deployment.registry import AuditEntry
from stt_flywheel.monitoring.live import SELECTION_BIAS, daily_trend, live_quality, read_live, trend_start
from stt_flywheel.run.approval import list_proposals
from stt_flywheel.run.costs import MonthlyCost, monthly_cost
from stt_flywheel.run.entries import TriggerEntry
from stt_flywheel.run.ledger import RunLedger, list_runs, read_run
from stt_flywheel.run.summary import RunOutcome, run_outcome
from stt_flywheel.run.trigger import check_trigger
from stt_flywheel.storage.objectstore import open_store

__all__ = [
    "TREND_DAYS",
    "SystemStatus",
    "fraction_interval",
    "percent_interval",
    "shared_columns",
    "shared_figures",
    "system_status",
]

TREND_DAYS = 14


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LastMonitor(_Model):
    """The monitor's last recorded decision (a canary look, or a degraded default)."""

    at: str
    version: int | None
    kind: str | None
    action: str | None
    summary: str | None
    severity: str | None
    acted: bool | None
    report: str | None


class FeedbackCounts(_Model):
    read: int
    applied: int
    superseded: int
    duplicate: int
    pending: int
    quarantined: int
    rejected_at_ingest: int


class SinceWatermark(_Model):
    watermark: datetime | None
    feedback_events: int


class StoreStatus(_Model):
    root: str
    predictions: int
    users: int = 0  # distinct requesters; views written before users were known lack it
    feedback_events: FeedbackCounts
    labels: dict[str, int]
    records_rejected_at_ingest: int
    since_watermark: SinceWatermark


class VersionStatus(_Model):
    version: int
    aliases: list[str]
    traffic: int | None  # percent of the endpoint's traffic; None: not deployed
    created_at: str | None
    dataset_version: str | None
    offline: dict[str, float]  # the held-out figures it was registered with (its own run's split)
    # WER on the sets every version is measured on, comparable across versions: the fixed eval
    # set (`eval`) and each regression suite whose reference is production (`suite:<name>`)
    shared: dict[str, float] = {}
    live: dict[str, Any] | None  # `LiveQuality.as_dict()` of its recent traffic


class RegistryStatus(_Model):
    model: str
    location: str
    versions: list[VersionStatus]


class LiveStatus(_Model):
    window_hours: float
    label_window_hours: float
    selection_bias: str
    versions: dict[str, dict[str, Any]]


class SystemStatus(_Model):
    """The whole system in one view; what `status` prints, writes as JSON and renders as HTML."""

    checked_at: datetime
    monitor: LastMonitor | None
    proposals: list[dict[str, Any]]  # pending and approved ones, `Proposal.as_dict()`
    store: StoreStatus
    trigger: TriggerEntry  # what the next trigger check would decide (`would fire: …`), in the ledger's shape
    runs: list[RunOutcome]
    registry: RegistryStatus
    live: LiveStatus
    trend: list[dict[str, Any]]
    costs: MonthlyCost | None = None


def percent_interval(value: dict[str, Any] | None) -> str:
    """A rate and its interval (`RatioInterval.as_dict()`) as `12.3% [10.1%, 14.6%]`; – without one."""
    if not value or value["value"] is None or math.isnan(value["value"]):
        return "–"
    return f"{value['value']:.1%} [{value['low']:.1%}, {value['high']:.1%}]"


def shared_columns(versions: list[VersionStatus]) -> list[tuple[str, str]]:
    """The shared sets the versions were measured on, as (key in `VersionStatus.shared`, column
    header): the eval set first, then the suites by name."""
    keys = sorted({k for v in versions for k in v.shared}, key=lambda k: (k != "eval", k))
    return [(k, "eval set WER" if k == "eval" else f"{k.removeprefix('suite:')} suite WER") for k in keys]


def fraction_interval(value: dict[str, Any] | None) -> str:
    """An error rate (WER, CER) and its interval as a fraction, as offline WER is shown:
    `0.123 [0.101, 0.146]`; – without one."""
    if not value or value["value"] is None or math.isnan(value["value"]):
        return "–"
    return f"{value['value']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"


def shared_figures(config: FlywheelConfig, ledgers: dict[str, RunLedger]) -> dict[int, dict[str, float]]:
    """Each version's WER on the sets all versions share, from the runs that measured it: as a
    run's production (its trigger's version) or as the candidate its deploy stage registered.
    A later measurement of the same version on the same set wins (the sets are fixed)."""
    against_production = {s.name for s in config.regression if s.reference == "production"}
    figures: dict[int, dict[str, float]] = {}
    for ledger in ledgers.values():
        production = ledger.trigger.production_version if ledger.trigger else None
        candidate = ledger.deploy.version if ledger.deploy else None
        measured: list[tuple[int | None, str, float | None]] = []
        if ledger.validation is not None:
            m = ledger.validation.metrics
            measured += [(production, "eval", m.eval_production_wer), (candidate, "eval", m.eval_wer)]
        for suite in ledger.regression.suites if ledger.regression else []:
            if suite.name in against_production:
                measured.append((production, f"suite:{suite.name}", suite.reference_wer))
            measured.append((candidate, f"suite:{suite.name}", suite.candidate_wer))
        for version, key, value in measured:
            if version is not None and value is not None and math.isfinite(value):
                figures.setdefault(version, {})[key] = float(value)
    return figures


def _last_monitor(entry: AuditEntry) -> LastMonitor:
    """The monitor's last recorded decision (a canary look, or a degraded default)."""
    d = entry.detail
    return LastMonitor(
        at=entry.at.isoformat(),
        version=entry.version,
        **{k: d.get(k) for k in ("kind", "action", "summary", "severity", "acted", "report")},
    )


def system_status(config: FlywheelConfig, now: datetime | None = None, runs: int = 10) -> SystemStatus:
    now = now or datetime.now(UTC)
    store = open_error_store(config)
    registry, endpoint = open_deployment(config)
    production = registry.resolve("default")
    watermark = production.watermark if production else None
    decision = check_trigger(
        store,
        config.trigger,
        production_watermark=watermark,
        last_deployed_at=endpoint.last_deployed_at(),
        production_version=production.version if production else None,
        now=now,
    )
    start = now - timedelta(hours=config.trigger.recent_window_hours)
    # one read of the traffic for both the live-quality window and the trend's days
    rows = read_live(store, min(start, trend_start(now, TREND_DAYS)), now, now)
    live = live_quality(
        store,
        start=start,
        now=now,
        label_window=config.feedback.label_window,
        normalizer=config.validation.normalizer,
        slice_by=(),  # by version only: the monitor's reports and `live` break it down further
        resamples=config.validation.bootstrap_resamples,
        rows=rows,
        max_per_user=config.monitor.max_predictions_per_user,
    )
    traffic = endpoint.traffic()
    ledgers = {r: read_run(config, r) for r in list_runs(config)}  # each run's ledger read once
    shared = shared_figures(config, ledgers)
    versions = []
    for v in registry.versions():
        quality = live.get(str(v.version))
        versions.append(
            {
                "version": v.version,
                "aliases": list(v.aliases),
                "traffic": traffic.get(v.version),
                "created_at": v.created_at,
                "dataset_version": v.dataset_version,
                "offline": {
                    k: v.metrics.get(k) for k in ("wer", "cer", "delta_wer", "p_value") if k in v.metrics
                },
                "live": quality.as_dict() if quality else None,
                "shared": shared.get(v.version, {}),
            }
        )
    monitor = [e for e in registry.audit_log() if e.action.startswith("monitor_")]
    proposals = [p.as_dict(now) for p in list_proposals(open_store(config.paths.state))]
    view = {
        "checked_at": now,
        "monitor": _last_monitor(monitor[-1]) if monitor else None,
        "proposals": [p for p in proposals if p["state"] in ("pending", "approved")],
        "store": {"root": store.root, **store.stats(since=watermark, now=now)},
        "trigger": {**decision.as_dict(), "summary": decision.outlook},  # a check not yet run
        "runs": [run_outcome(config, r, ledgers[r]) for r in list(ledgers)[-runs:]][::-1],
        "registry": {"model": registry.model, "location": registry.location, "versions": versions},
        "live": {
            "window_hours": config.trigger.recent_window_hours,
            "label_window_hours": config.feedback.label_window_hours,
            "selection_bias": SELECTION_BIAS,
            "versions": {k: q.as_dict() for k, q in live.items()},
        },
        "trend": daily_trend(
            store,
            days=TREND_DAYS,
            now=now,
            label_window=config.feedback.label_window,
            normalizer=config.validation.normalizer,
            rows=rows,
            max_per_user=config.monitor.max_predictions_per_user,
        ),
        "costs": monthly_cost(config, now),
    }
    return SystemStatus.model_validate(view)
