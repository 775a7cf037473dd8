"""Promotion by hand: a registered version, or a run's candidate together with its evaluation.

A run's candidate and its verdicts are found through the run ledger, so `registry promote --run`
works for any run that trained, on either backend, including a rejected one (with `force`).
"""

from __future__ import annotations

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.deployment.backends import open_deployment
from stt_flywheel.deployment.registry import RegistryError
from stt_flywheel.deployment.strategies import DeployOutcome, manual_promotion
from stt_flywheel.run.entries import RegressionEntry, TrainEntry, ValidationEntry
from stt_flywheel.run.ledger import read_ledger

__all__ = ["promote_by_hand"]


def promote_by_hand(
    config: FlywheelConfig,
    *,
    reason: str,
    version: int | None = None,
    run: str | None = None,
    force: bool = False,
) -> DeployOutcome:
    """Make `version` (or the candidate `run` trained) the default with all endpoint traffic."""
    if (version is None) == (run is None):
        raise RegistryError("give exactly one of --version and --run")
    registry, endpoint = open_deployment(config)
    candidate_dir = evaluation = None
    if run is not None:
        train = read_ledger(config, run, TrainEntry)
        if train is None:
            raise RegistryError(
                f"run {run} trained no candidate (no train entry in its ledger under {config.paths.reports})"
            )
        candidate_dir = train.model_dir
        kinds: dict[str, type[ValidationEntry | RegressionEntry]] = {
            "validation": ValidationEntry,
            "regression": RegressionEntry,
        }
        evaluation = {
            stage: entry.model_dump(mode="json")
            for stage, kind in kinds.items()
            if (entry := read_ledger(config, run, kind)) is not None
        }
    return manual_promotion(
        registry,
        endpoint,
        reason=reason,
        version=version,
        candidate_dir=candidate_dir,
        evaluation=evaluation,
        run_id=run,
        force=force,
    )
