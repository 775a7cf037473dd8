"""The run ledger: each stage's outcome as `<reports>/<run_id>/<stage>.json`, and the run summary built from it."""

from __future__ import annotations

from typing import Any

import orjson

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.deployment.backends import open_registry
from stt_flywheel.storage.files import dump_json
from stt_flywheel.storage.objectstore import join_uri, open_store

__all__ = ["STAGES", "list_runs", "read_ledger", "read_run", "summarize_run", "write_ledger"]


def write_ledger(config: FlywheelConfig, run_id: str, stage: str, payload: dict[str, Any]) -> None:
    open_store(config.paths.reports).write(f"{run_id}/{stage}.json", dump_json(payload))


def read_ledger(config: FlywheelConfig, run_id: str, stage: str) -> dict[str, Any] | None:
    """One stage's entry in a run's ledger, or None when that stage did not run."""
    found = open_store(config.paths.reports).read(f"{run_id}/{stage}.json")
    return orjson.loads(found.data) if found else None


STAGES = ("trigger", "dataset", "train", "validation", "regression", "deploy")


def read_run(config: FlywheelConfig, run_id: str) -> dict[str, dict[str, Any] | None]:
    """Every stage's ledger entry of one run (None for a stage that did not run), in stage order."""
    return {stage: read_ledger(config, run_id, stage) for stage in STAGES}


def list_runs(config: FlywheelConfig) -> list[str]:
    """Ids of the runs that have a ledger (every run that got past its trigger check)."""
    keys = open_store(config.paths.reports).list()
    return sorted({k.split("/")[0] for k in keys if k.endswith("/trigger.json") and k.count("/") == 1})


def _evaluation_summary(
    validation: dict[str, Any] | None, regression: dict[str, Any] | None
) -> dict[str, Any]:
    """The interval, tests, churn, slices and suites a person reads first."""
    ev = (validation or {}).get("evaluation", {})
    m = (validation or {}).get("metrics", {})
    churn = ev.get("churn", {})
    return {
        "normalizer": ev.get("normalizer"),
        "delta_wer": m.get("delta_wer"),
        "interval": ev.get("interval"),
        "p_values": {k: t.get("p_value") for k, t in ev.get("tests", {}).items()},
        "newly_broken": churn.get("newly_broken"),
        "newly_fixed": churn.get("newly_fixed"),
        "critical_recall": {
            "production": m.get("production_critical_recall"),
            "candidate": m.get("critical_recall"),
        },
        "signatures": ev.get("signatures"),
        "slices": [
            {
                k: sl.get(k)
                for k in (
                    "field",
                    "value",
                    "utterances",
                    "production_wer",
                    "candidate_wer",
                    "low",
                    "high",
                    "gated",
                )
            }
            for sl in ev.get("slices", [])
        ],
        "suites": [
            {
                k: su.get(k)
                for k in (
                    "name",
                    "reference_wer",
                    "candidate_wer",
                    "delta_wer",
                    "low",
                    "high",
                    "adjusted_high",
                    "allowed_wer",
                    "p_holm",
                    "newly_broken",
                    "newly_fixed",
                    "passed",
                )
            }
            for su in (regression or {}).get("suites", [])
        ],
    }


def summarize_run(config: FlywheelConfig, run_id: str, new_domain: str | None = None) -> dict[str, Any]:
    """Collect one run's ledger and the registry state into a flat summary.

    With `new_domain`, the new-domain figures are that slice of the held-out split.
    """
    run_dir = join_uri(config.paths.reports, run_id)
    ledger = read_run(config, run_id)
    trigger = ledger["trigger"] or {}
    dataset, train, validation = ledger["dataset"], ledger["train"], ledger["validation"]
    regression, deploy = ledger["regression"], ledger["deploy"]
    registry = open_registry(config)
    default = registry.resolve("default")
    m = (validation or {}).get("metrics", {})
    suites = {s["name"]: s for s in (regression or {}).get("suites", [])}
    general = suites.get("general", {})
    prod_new = m.get(f"slice_{new_domain}_production_wer", m.get("production_wer"))
    cand_new = m.get(f"slice_{new_domain}_wer", m.get("wer"))
    return {
        "run_id": run_id,
        "run_dir": run_dir,
        "trigger": {
            "fired": bool(trigger.get("should_train")),
            "summary": trigger.get("summary"),
            "blocked_by": trigger.get("blocked_by"),
            "checks": trigger.get("checks", []),
        },
        "dataset": (
            {
                "version": dataset["version"],
                "usable": dataset["usable"],
                "usable_reason": dataset["usable_reason"],
                **dataset["counts"],
                "splits": dataset["splits"],
                "replay": dataset["replay"]["used"],
                "quarantine_reasons": dataset["quarantine_reasons"],
            }
            if dataset
            else None
        ),
        "training": train,
        "production": {
            "new_domain_wer": prod_new,
            "heldout_wer": m.get("production_wer"),
            "new_domain_cer": m.get("production_cer"),
            "general_wer": general.get("reference_wer"),
            "eval_wer": m.get("eval_production_wer"),
        },
        "candidate": {
            "new_domain_wer": cand_new,
            "heldout_wer": m.get("wer"),
            "new_domain_cer": m.get("cer"),
            "general_wer": general.get("candidate_wer"),
            "eval_wer": m.get("eval_wer"),
        },
        "p_value": m.get("p_value"),
        "evaluation": _evaluation_summary(validation, regression),
        "gates": {
            "validation": validation and {"passed": validation["passed"], "reasons": validation["reasons"]},
            "regression": regression and {"passed": regression["passed"], "reasons": regression["reasons"]},
        },
        "deploy": deploy,
        "deployed_version": default.version if default else None,
        "registry": {"aliases": registry.aliases(), "versions": [v.version for v in registry.versions()]},
    }
