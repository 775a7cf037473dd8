"""One view of the whole system: the store, the trigger, the last runs, the registry with live
quality per version, and each version's trend by day. `stt-flywheel status` prints it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.deployment.backends import open_endpoint, open_registry
from stt_flywheel.monitoring.live import SELECTION_BIAS, daily_trend, live_quality
from stt_flywheel.run.ledger import list_runs, read_ledger
from stt_flywheel.run.trigger import check_trigger

__all__ = ["system_status"]


def _run_outcome(config: FlywheelConfig, run_id: str) -> dict[str, Any]:
    trigger = read_ledger(config, run_id, "trigger") or {}
    dataset = read_ledger(config, run_id, "dataset")
    train = read_ledger(config, run_id, "train")
    validation = read_ledger(config, run_id, "validation")
    regression = read_ledger(config, run_id, "regression")
    deploy = read_ledger(config, run_id, "deploy")
    return {
        "run_id": run_id,
        "checked_at": trigger.get("checked_at"),
        "stages": {
            "trigger": trigger.get("summary"),
            "dataset": (
                dataset["usable_reason"] if dataset["usable"] else f"unusable: {dataset['usable_reason']}"
            )
            if dataset
            else None,
            "train": "trained" if train else None,
            "validation": ("passed" if validation["passed"] else "rejected") if validation else None,
            "regression": ("passed" if regression["passed"] else "rejected") if regression else None,
            "deploy": f"{deploy['action']} (version {deploy.get('version')})" if deploy else None,
        },
    }


def system_status(config: FlywheelConfig, now: datetime | None = None, runs: int = 10) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    store = open_error_store(config)
    registry = open_registry(config)
    endpoint = open_endpoint(config, registry)
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
    window = timedelta(hours=config.trigger.recent_window_hours)
    live = live_quality(
        store,
        start=now - window,
        now=now,
        label_window=config.feedback.label_window,
        normalizer=config.validation.normalizer,
        slice_by=config.validation.slice_by,
        resamples=config.validation.bootstrap_resamples,
    )
    traffic = endpoint.traffic()
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
            }
        )
    return {
        "checked_at": now,
        "store": {"root": store.root, **store.stats(since=watermark, now=now)},
        "trigger": decision.as_dict(),
        "runs": [_run_outcome(config, r) for r in list_runs(config)[-runs:]][::-1],
        "registry": {"model": registry.model, "location": registry.location, "versions": versions},
        "live": {
            "window_hours": config.trigger.recent_window_hours,
            "label_window_hours": config.feedback.label_window_hours,
            "selection_bias": SELECTION_BIAS,
            "versions": {k: q.as_dict() for k, q in live.items()},
        },
        "trend": daily_trend(
            store,
            days=14,
            now=now,
            label_window=config.feedback.label_window,
            normalizer=config.validation.normalizer,
        ),
    }
