"""Ledger entries as a stage would write them, whole, with what a test cares about changed."""

from typing import Any

from stt_flywheel.run.entries import (
    DatasetEntry,
    DeployEntry,
    TrainEntry,
    TrainProgress,
    TriggerEntry,
    ValidationEntry,
)

GATE = {"name": "min_wer_improvement", "passed": True, "value": -0.1, "threshold": -0.02, "reason": "ok"}


def trigger_entry(**changes: Any) -> TriggerEntry:
    stats = {
        "new_feedback": 80,
        "new_error_cases": 80,
        "new_corrected_cases": 71,
        "recent_requests": 100,
        "recent_errors": 80,
        "latest_arrival": None,
        "traffic_of": "version 1",
        "error_rate": 0.8,
    }
    base = {
        "should_train": True,
        "forced": False,
        "summary": "fired: 80 new error cases (need 50)",
        "checks": [],
        "stats": stats,
        "previous_watermark": None,
        "watermark": None,
        "production_version": 1,
        "checked_at": "2026-11-27T10:00:00+00:00",
        "blocked_by": None,
        "proposal": None,
    }
    return TriggerEntry.model_validate(base | changes)


def dataset_entry(**changes: Any) -> DatasetEntry:
    base = {
        "version": "ds-1",
        "content_hash": "0" * 64,
        "watermark": None,
        "created_at": "2026-11-27T10:00:00+00:00",
        "counts": {
            "read": 66,
            "accepted": 61,
            "duplicates": 0,
            "quarantined": 5,
            "uncorrected_error_cases": 0,
        },
        "quarantine_reasons": {"audio_missing": 5},
        "splits": {"train": 160, "heldout": 20},
        "replay": {"available": 0, "used": 0, "excluded_protected": 0, "invalid": 0},
        "normalizer": "none/1",
        "settings": {},
        "profile": {},
        "balanced": True,
        "usable": True,
        "usable_reason": "160 training and 20 held-out examples",
        "published_to": "/datasets/ds-1",
    }
    return DatasetEntry.model_validate(base | changes)


def train_entry(**changes: Any) -> TrainEntry:
    base = {
        "train_loss": 0.5,
        "steps": 100.0,
        "train_runtime_s": 42.0,
        "train_samples_per_second": 10.0,
        "device": "cpu",
        "bf16": False,
        "processes": 1,
        "started_from": "/models/v1",
        "started_from_version": 1,
        "model_dir": "/runs/model",
        "resumed_from": None,
        "train_examples": 160,
        "hyperparameters": {},
        "seed": 0,
        "dataset": {"version": "ds-1", "content_hash": "0" * 64},
        "code": {"package": "0.1.0", "commit": None},
    }
    return TrainEntry.model_validate(base | changes)


def progress(step: int, max_steps: int = 100, loss: float | None = 0.5) -> TrainProgress:
    return TrainProgress(step=step, max_steps=max_steps, loss=loss)


def validation_entry(passed: bool = True, reasons: list[str] | None = None) -> ValidationEntry:
    details = {
        "normalizer": "whisper-en/1",
        "slice_margin": 0.05,
        "interval": {},
        "tests": {},
        "signatures": {},
        "slices": [],
        "churn": {},
        "worst_regressions": [],
        "largest_improvements": [],
    }
    return ValidationEntry.model_validate(
        {
            "stage": "validation",
            "passed": passed,
            "reasons": reasons or ["ok"],
            "gates": [GATE | {"passed": passed}],
            "metrics": {"heldout_utterances": 20.0},
            "evaluation": details,
        }
    )


def deploy_entry(action: str = "canary", version: int | None = 3) -> DeployEntry:
    return DeployEntry(action=action, version=version, replaced=None, reasons=[])
