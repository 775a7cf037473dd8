"""The run ledger: each stage's entry as `<reports>/<run_id>/<stage>.json` (see `entries`), read
back into its model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.run.entries import (
    DatasetEntry,
    DeployEntry,
    LedgerEntry,
    RegressionEntry,
    TrainEntry,
    TriggerEntry,
    ValidationEntry,
)
from stt_flywheel.storage.files import dump_json
from stt_flywheel.storage.objectstore import join_uri, open_store

__all__ = [
    "REPORT_TYPES",
    "STAGES",
    "RunLedger",
    "keep_report",
    "list_runs",
    "read_ledger",
    "read_run",
    "run_reports",
    "write_ledger",
]

E = TypeVar("E", bound=LedgerEntry)

STAGES = ("trigger", "dataset", "train", "validation", "regression", "deploy")


def write_ledger(config: FlywheelConfig, run_id: str, entry: LedgerEntry) -> None:
    open_store(config.paths.reports).write(f"{run_id}/{entry.STAGE}.json", dump_json(entry.model_dump()))


# What each stage's report is kept as beside its ledger (its KFP artifact has no extension).
REPORT_TYPES = {
    "trigger": "md",
    "dataset": "md",
    "train": "html",
    "validation": "html",
    "regression": "html",
    "deploy": "md",
}


def keep_report(config: FlywheelConfig, run_id: str, stage: str, text: str) -> None:
    """Keep a stage's report beside the run's ledger as `<stage>.<html|md>`: a file a browser (or
    `stt-flywheel ui`) opens as what it is, where the pipeline's artifact is named `report`."""
    open_store(config.paths.reports).write(f"{run_id}/{stage}.{REPORT_TYPES[stage]}", text.encode())


def run_reports(config: FlywheelConfig, run_id: str) -> dict[str, str]:
    """The reports kept for one run, stage → URI, in stage order."""
    store = open_store(config.paths.reports)
    kept = set(store.list(f"{run_id}/"))
    return {
        stage: join_uri(config.paths.reports, f"{run_id}/{stage}.{ext}")
        for stage, ext in REPORT_TYPES.items()
        if f"{run_id}/{stage}.{ext}" in kept
    }


def read_ledger(config: FlywheelConfig, run_id: str, kind: type[E]) -> E | None:
    """One stage's entry in a run's ledger, or None when that stage did not run."""
    found = open_store(config.paths.reports).read(f"{run_id}/{kind.STAGE}.json")
    return kind.model_validate_json(found.data) if found else None


@dataclass(frozen=True)
class RunLedger:
    """Every stage's entry of one run; None for a stage that did not run."""

    trigger: TriggerEntry | None
    dataset: DatasetEntry | None
    train: TrainEntry | None
    validation: ValidationEntry | None
    regression: RegressionEntry | None
    deploy: DeployEntry | None


def read_run(config: FlywheelConfig, run_id: str) -> RunLedger:
    return RunLedger(
        trigger=read_ledger(config, run_id, TriggerEntry),
        dataset=read_ledger(config, run_id, DatasetEntry),
        train=read_ledger(config, run_id, TrainEntry),
        validation=read_ledger(config, run_id, ValidationEntry),
        regression=read_ledger(config, run_id, RegressionEntry),
        deploy=read_ledger(config, run_id, DeployEntry),
    )


def list_runs(config: FlywheelConfig) -> list[str]:
    """Ids of the runs that have a ledger (every run that got past its trigger check)."""
    keys = open_store(config.paths.reports).list()
    return sorted({k.split("/")[0] for k in keys if k.endswith("/trigger.json") and k.count("/") == 1})
