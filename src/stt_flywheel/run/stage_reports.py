"""What the stages hand to KFP for people: reports headed by the run they belong to, and metrics
as KFP `Metrics` takes them."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.dataset import DatasetManifest
from stt_flywheel.deployment.backends import open_registry
from stt_flywheel.deployment.strategies import DeployOutcome
from stt_flywheel.evaluation.reports import ReportContext, loss_curve_html
from stt_flywheel.models.training import TrainResult
from stt_flywheel.run.entries import TrainEntry
from stt_flywheel.run.ledger import keep_report, read_ledger
from stt_flywheel.run.trigger import TriggerDecision

__all__ = ["loggable_metrics", "markdown_report", "report_context", "training_report"]


def report_context(
    config: FlywheelConfig, run_id: str, dataset_dir: Path | None = None, candidate: str | None = None
) -> ReportContext:
    """What a report of this run names: the run, the production version now, the candidate (this
    run's, trained from the version it started from), the dataset version and the normaliser."""
    production = open_registry(config).resolve("default")
    if candidate is None:
        train = read_ledger(config, run_id, TrainEntry)
        started = train.started_from_version if train else None
        candidate = (
            f"trained by this run from v{started}"
            if started is not None
            else ("trained by this run" if train else "none yet")
        )
    return ReportContext(
        run_id=run_id,
        production=f"v{production.version}" if production else "none",
        candidate=candidate,
        dataset=DatasetManifest.load(dataset_dir).version if dataset_dir is not None else None,
        normalizer=config.validation.normalizer,
    )


def markdown_report(
    config: FlywheelConfig,
    run_id: str,
    outcome: TriggerDecision | DatasetManifest | DeployOutcome,
    dataset_dir: Path | None = None,
) -> str:
    """A stage's Markdown report (trigger, dataset, deploy) headed by what it belongs to; a copy is
    kept beside the run's ledger."""
    candidate = f"v{outcome.version}" if isinstance(outcome, DeployOutcome) and outcome.version else None
    if isinstance(outcome, DeployOutcome) and outcome.before.get("aliases", {}).get("default"):
        production = outcome.before["aliases"]["default"]  # the production model it was judged against
        context = replace(report_context(config, run_id, dataset_dir, candidate), production=f"v{production}")
    else:
        context = report_context(config, run_id, dataset_dir, candidate)
    text = outcome.to_markdown(context.markdown())
    stage = {TriggerDecision: "trigger", DatasetManifest: "dataset"}.get(type(outcome), "deploy")
    keep_report(config, run_id, stage, text)
    return text


def training_report(config: FlywheelConfig, run_id: str, result: TrainResult, dataset_dir: Path) -> str:
    """The train stage's HTML report: the loss curve (a copy kept beside the run's ledger)."""
    text = loss_curve_html(
        result.log_history,
        report_context(config, run_id, dataset_dir),
        saved_eval_loss=result.saved_eval_loss,
        wise_ft_alpha=result.wise_ft_alpha,
    )
    keep_report(config, run_id, "train", text)
    return text


def loggable_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a metrics dict, as floats (KFP `Metrics` takes nothing else)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
