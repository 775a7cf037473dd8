"""One entry point per pipeline stage: config + paths in, results and reports out.

Components call these and nothing else, so every stage runs (and is tested) without KFP. Each
stage also writes its outcome to the run ledger (`<reports>/<run_id>/<stage>.json`), from which
`summarize_run` builds the summary a person reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from pydantic import ValidationError

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.dataset import (
    DatasetManifest,
    build_dataset,
    load_split,
    protected_hashes,
    publish_dataset,
)
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.data.review import Screen
from stt_flywheel.deployment.backends import open_deployment, open_registry
from stt_flywheel.deployment.protocols import Endpoint, Registry
from stt_flywheel.deployment.registry import ModelVersion
from stt_flywheel.deployment.strategies import (
    Candidate,
    DeployOutcome,
    DeployPolicy,
    promote_candidate,
    replace_deployment,
    serving_state,
)
from stt_flywheel.errors import StateError
from stt_flywheel.evaluation.comparison import load_manifest_examples
from stt_flywheel.evaluation.gates import Verdict
from stt_flywheel.evaluation.regression import run_regression_suites
from stt_flywheel.evaluation.reports import regression_html, validation_html
from stt_flywheel.evaluation.summary import bare, utterances_jsonl, without_transcripts
from stt_flywheel.evaluation.validation import validate_candidate
from stt_flywheel.models import (
    SpeechModel,
    load_model,
    model_window_s,
    resolve_device,
    saved_model_dir,
    target_length_check,
)
from stt_flywheel.models.confidence import calibrate_saved, read_calibration
from stt_flywheel.models.distributed import train_in_processes
from stt_flywheel.models.training import TrainResult, TrainSettings, fine_tune
from stt_flywheel.run.costs import timed
from stt_flywheel.run.entries import (
    DatasetEntry,
    DeployEntry,
    RegressionEntry,
    TrainEntry,
    TrainProgress,
    TriggerEntry,
    ValidationEntry,
)
from stt_flywheel.run.experiments import record_in_experiment
from stt_flywheel.run.lease import RUN_LEASE, release_run_lease, releases_lease_on_failure, run_state
from stt_flywheel.run.ledger import keep_report, read_ledger, write_ledger
from stt_flywheel.run.proposed import approved_retraining, require_approval, start_version, take_retraining
from stt_flywheel.run.provenance import code_version
from stt_flywheel.run.stage_reports import loggable_metrics, report_context
from stt_flywheel.run.trigger import TriggerDecision, check_trigger
from stt_flywheel.storage.files import atomic_write_bytes, atomic_write_json, tree_digest
from stt_flywheel.storage.leases import LeaseHeld, acquire_lease
from stt_flywheel.storage.objectstore import is_remote
from stt_flywheel.storage.trees import fetch_tree

__all__ = [
    "EvaluationOutcome",
    "bootstrap_registry",
    "stage_build_dataset",
    "stage_check_trigger",
    "stage_deploy_model",
    "stage_run_regression_suites",
    "stage_train_model",
    "stage_validate_model",
]


P = ParamSpec("P")
R = TypeVar("R")

PROGRESS_EVERY_S = 3.0  # how often training writes its step to the run ledger


def bootstrap_registry(config: FlywheelConfig) -> ModelVersion:
    """Register the base model as version 1 (alias `default`) and deploy it, if the registry is empty."""
    registry, endpoint = open_deployment(config)
    current = registry.resolve("default")
    if current is not None:
        return current
    base = config.base_model
    local = fetch_tree(base, "config.json") if is_remote(base) else base
    version = registry.register(local, source_run="bootstrap", lineage={"base_model": str(base)})
    replace_deployment(registry, endpoint, version.version, "bootstrap with the base model")
    return registry.get(version.version)


def _production(config: FlywheelConfig) -> ModelVersion | None:
    return open_registry(config).resolve("default")


@timed("trigger")
def stage_check_trigger(
    config: FlywheelConfig,
    run_id: str,
    now: datetime | None = None,
    machine: dict[str, Any] | None = None,
) -> TriggerDecision:
    """Decide, and when training is due take the run lease, so that an overlapping run stops here.
    A canary still in flight stops the run too: it is decided before another candidate is made.
    With `trigger.require_approval`, a run trains only on a proposal a person approved; otherwise
    it records a proposal (the evidence, the dataset, `machine`) and ends without training. An
    approved retraining without forgotten people (`run.proposed`) trains whatever the evidence.

    The lease is released by the stage that ends the run (dataset unusable, a gate rejecting, the
    deployer); a run that dies keeps it until `trigger.lease_hours` pass.
    """
    registry, endpoint = open_deployment(config)
    production = registry.resolve("default")
    decision = check_trigger(
        open_error_store(config),
        config.trigger,
        production_watermark=production.watermark if production else None,
        last_deployed_at=endpoint.last_deployed_at(),
        production_version=production.version if production else None,
        now=now,
    )
    retraining = approved_retraining(config, now)
    if retraining is not None:
        decision.retrain(retraining.as_dict(now))
    canary = registry.resolve("candidate")
    share = endpoint.traffic().get(canary.version, 0) if canary is not None else 0
    if decision.should_train and canary is not None and share > 0:
        # a second canary beside the first would leave the monitor no clean comparison
        decision.block(
            f"canary v{canary.version} serves {share} % and is not decided yet "
            "(the monitor decides it; or `registry promote-canary` / `registry rollback`)"
        )
    if decision.should_train:
        try:
            acquire_lease(run_state(config), RUN_LEASE, run_id, config.trigger.lease_ttl, now=now)
        except LeaseHeld as exc:
            decision.block(f"another run holds the run lease ({exc})")
    if decision.should_train and retraining is not None:
        take_retraining(config, run_id, decision, retraining, now)
    elif decision.should_train and config.trigger.require_approval:
        require_approval(config, run_id, decision, machine or {}, now)
    write_ledger(config, run_id, TriggerEntry.model_validate(decision.as_dict()))
    return decision


@releases_lease_on_failure
@timed("dataset")
def stage_build_dataset(
    config: FlywheelConfig, watermark: str, out_dir: Path, run_id: str
) -> DatasetManifest:
    protected_sources = [s.data for s in config.regression] + list(config.dataset.protected_manifests)
    if config.validation.eval_manifest:
        protected_sources.append(config.validation.eval_manifest)
    start = _start_from(config, start_version(config, run_id))
    until = datetime.fromisoformat(watermark) if watermark else None
    manifest = build_dataset(
        open_error_store(config),
        out_dir,
        config.dataset,
        watermark=until,
        settled=until - config.feedback.label_window if until else None,
        protected=protected_hashes(protected_sources),
        model_window_s=model_window_s(start),
        target_check=target_length_check(start),
        screen=Screen.of(config),
    )
    published = publish_dataset(out_dir, config.paths.datasets)
    write_ledger(
        config, run_id, DatasetEntry.model_validate({**manifest.as_dict(), "published_to": published})
    )
    if not manifest.usable[0]:
        release_run_lease(config, run_id)
    return manifest


def _cuda_devices() -> int:
    import torch

    return max(1, torch.cuda.device_count())


def _start_from(config: FlywheelConfig, production: ModelVersion | None) -> str:
    """The model a run trains from (`start_version`), else the configured base model."""
    return production.uri if production else str(config.base_model)


@releases_lease_on_failure
@timed("train")
def stage_train_model(config: FlywheelConfig, dataset_dir: Path, out_dir: Path, run_id: str) -> TrainResult:
    production = start_version(config, run_id)  # the default, or a retraining's clean version
    start_from = _start_from(config, production)
    t = config.training
    settings = TrainSettings.from_dict(t.model_dump())
    last = [0.0]

    def progress(step: int, max_steps: int, loss: float | None) -> None:
        # for whoever watches the run (the local runner's progress, `runs show`): every few seconds
        if time.monotonic() - last[0] >= PROGRESS_EVERY_S or step >= max_steps:
            last[0] = time.monotonic()
            write_ledger(config, run_id, TrainProgress(step=step, max_steps=max_steps, loss=loss))

    processes = t.processes or (_cuda_devices() if resolve_device(t.accelerator) == "cuda" else 1)
    heldout = load_split(dataset_dir, "heldout")
    if processes > 1:  # each process loads the model and the dataset itself
        result = train_in_processes(start_from, dataset_dir, out_dir, settings, processes, progress=progress)
    else:
        model = load_model(start_from, device=t.accelerator)
        train = load_split(dataset_dir, "train")
        result = fine_tune(model, train, out_dir, settings, eval_examples=heldout or None, progress=progress)
    calibration = calibrate_saved(result.output_dir, heldout, config.validation.normalizer, t.accelerator)
    manifest = DatasetManifest.load(dataset_dir)
    entry = TrainEntry.model_validate(
        {
            **result.metrics(),
            "device": result.device,
            "bf16": result.bf16,
            "processes": result.processes,
            "started_from": start_from,
            "started_from_version": production.version if production else None,
            "model_dir": str(result.output_dir),
            "model_digest": tree_digest(result.output_dir),
            "resumed_from": result.resumed_from,
            "calibration": calibration,
            "train_examples": manifest.splits.get("train", 0),
            # enough to train the same model again: what, from what, on what, with which code
            "hyperparameters": t.model_dump(mode="json"),
            "seed": t.seed,
            "dataset": {"version": manifest.version, "content_hash": manifest.content_hash},
            "code": code_version(),
        },
    )
    write_ledger(config, run_id, entry)
    return result


@dataclass(frozen=True)
class EvaluationOutcome:
    """What stages 4 and 5 hand to their components: the verdict, loggable metrics and the HTML report."""

    verdict: Verdict
    metrics: dict[str, float]
    report_html: str

    @property
    def passed(self) -> bool:
        return self.verdict.passed


def _models(config: FlywheelConfig, model_artifact: Path) -> tuple[SpeechModel, SpeechModel | None]:
    production = _production(config)
    # "auto": a GPU where the stage has one (`compile --evaluate-on-gpu`), else the CPUs; both
    # models on the same device, so the paired comparison compares models, not arithmetic
    candidate = load_model(saved_model_dir(model_artifact), device="auto")
    return candidate, (load_model(production.uri, device="auto") if production else None)


@releases_lease_on_failure
@timed("validation")
def stage_validate_model(
    config: FlywheelConfig, model_artifact: Path, dataset_dir: Path, out_dir: Path, run_id: str
) -> EvaluationOutcome:
    """Stage 4. Writes the verdict and per-utterance rows under `out_dir`; returns the report to publish."""
    _check_trained(read_ledger(config, run_id, TrainEntry), run_id, model_artifact)
    candidate, production = _models(config, model_artifact)
    eval_examples = (
        load_manifest_examples(str(config.validation.eval_manifest))
        if config.validation.eval_manifest
        else []
    )
    result = validate_candidate(
        candidate, production, load_split(dataset_dir, "heldout"), config.validation, eval_examples
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = config.reports.include_transcripts
    details = {
        **(result.details if texts else without_transcripts(result.details)),
        "calibration": read_calibration(saved_model_dir(model_artifact)),  # the trainer's, on held-out
    }
    summary = {k: v for k, v in details.items() if k != "utterance_delta_wer"}
    metrics = result.metrics.flat()  # for KFP and the report; the ledger keeps the model's own shape
    entry = ValidationEntry.model_validate(
        {**result.verdict.as_dict(), "metrics": result.metrics, "evaluation": summary}
    )
    atomic_write_json(out_dir / "verdict.json", entry.model_dump())
    atomic_write_bytes(out_dir / "utterances.jsonl", utterances_jsonl(result.comparisons, texts))
    write_ledger(config, run_id, entry)
    if not result.verdict.passed:
        release_run_lease(config, run_id)
    context = report_context(config, run_id, dataset_dir)
    report = validation_html(metrics, result.verdict, result.comparisons, details, context)
    keep_report(config, run_id, "validation", report)
    record_in_experiment(config, run_id, loggable_metrics(metrics), artifacts=True)
    return EvaluationOutcome(result.verdict, loggable_metrics(metrics), report)


@releases_lease_on_failure
@timed("regression")
def stage_run_regression_suites(
    config: FlywheelConfig, model_artifact: Path, out_dir: Path, run_id: str
) -> EvaluationOutcome:
    """Stage 5. Writes the verdict with every suite under `out_dir`; returns the report to publish."""
    candidate, production = _models(config, model_artifact)
    results, verdict = run_regression_suites(
        candidate, production, config.regression, config.validation.batch_size, config.validation
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for r in results if not config.reports.include_transcripts else []:
        r.broken_examples = bare(r.broken_examples)
    entry = RegressionEntry.model_validate({**verdict.as_dict(), "suites": [r.as_dict() for r in results]})
    atomic_write_json(out_dir / "verdict.json", entry.model_dump())
    write_ledger(config, run_id, entry)
    if not verdict.passed:
        release_run_lease(config, run_id)
    metrics: dict[str, float] = {}
    for r in results:
        metrics |= {
            f"{r.name}_wer": r.candidate_wer,
            f"{r.name}_reference_wer": r.reference_wer,
            f"{r.name}_delta_wer": r.delta_wer,
            f"{r.name}_delta_wer_upper_bound": r.adjusted_high,
            f"{r.name}_p_holm": r.p_holm,
        }
    report = regression_html(results, verdict, report_context(config, run_id))
    keep_report(config, run_id, "regression", report)
    record_in_experiment(config, run_id, loggable_metrics(metrics), artifacts=False)
    return EvaluationOutcome(verdict, loggable_metrics(metrics), report)


@timed("deploy")
def stage_deploy_model(
    config: FlywheelConfig,
    model_artifact: Path,
    dataset_dir: Path,
    validation_dir: Path,
    regression_dir: Path,
    run_id: str,
) -> DeployOutcome:
    """Register and deploy, only while this run still holds the run lease; releases it at the end."""
    try:  # renewing proves no overlapping run took the lease over after it expired
        acquire_lease(run_state(config), RUN_LEASE, run_id, config.trigger.lease_ttl)
    except LeaseHeld as exc:
        outcome = DeployOutcome("rejected", None, None, [f"this run lost the run lease ({exc})"])
        write_ledger(config, run_id, DeployEntry.model_validate(outcome.as_dict()))
        return outcome
    registry, endpoint = open_deployment(config)
    before = serving_state(registry, endpoint, config.deploy.strategy)
    try:
        outcome = _deploy(
            config, registry, endpoint, model_artifact, dataset_dir, validation_dir, regression_dir, run_id
        )
    finally:
        release_run_lease(config, run_id)
    outcome.before, outcome.after = before, serving_state(registry, endpoint, config.deploy.strategy)
    write_ledger(config, run_id, DeployEntry.model_validate(outcome.as_dict()))
    if outcome.action == "failed":
        raise RuntimeError("; ".join(outcome.reasons))
    return outcome


def _check_trained(train: TrainEntry | None, run_id: str, model_artifact: Path) -> str | None:
    """The digest training recorded for this run's model (`train`, its ledger entry), after
    checking that the model here still has it (a model changed between the stages is an error,
    not a candidate)."""
    if train is None or train.model_digest is None:
        return None
    found = tree_digest(saved_model_dir(model_artifact))
    if found != train.model_digest:
        raise StateError(
            f"the model of run {run_id} is not what training saved (digest {found[:12]}…, trained "
            f"{train.model_digest[:12]}…): refusing to judge or deploy it"
        )
    return train.model_digest


def _deploy(
    config: FlywheelConfig,
    registry: Registry,
    endpoint: Endpoint,
    model_artifact: Path,
    dataset_dir: Path,
    validation_dir: Path,
    regression_dir: Path,
    run_id: str,
) -> DeployOutcome:
    validation = _verdict(validation_dir, ValidationEntry)
    regression = _verdict(regression_dir, RegressionEntry)
    manifest = DatasetManifest.load(dataset_dir)
    train = read_ledger(config, run_id, TrainEntry)
    training = train.model_dump(mode="json", include=set(_LINEAGE)) if train else dict.fromkeys(_LINEAGE)
    digest = _check_trained(train, run_id, model_artifact)
    candidate = Candidate(
        model_dir=str(saved_model_dir(model_artifact)),
        # a verdict that is missing or no longer reads as one is handed on as nothing: it rejects
        validation=validation.model_dump(mode="json") if validation else {},
        regression=regression.model_dump(mode="json") if regression else {},
        dataset_version=manifest.version,
        data_watermark=manifest.watermark,
        run_id=run_id,
        metrics=loggable_metrics(validation.metrics.flat()) if validation else {},
        lineage={
            "training": training,
            **({"model_digest": digest} if digest else {}),
            **({"parent_version": train.started_from_version} if train else {}),
        },
    )
    policy = DeployPolicy(
        auto_deploy=config.deploy.auto_deploy,
        keep_versions=config.deploy.keep_versions,
        strategy=config.deploy.strategy,
        canary_percent=(config.monitor.canary_steps or [config.deploy.canary_percent])[0],
    )
    return promote_candidate(registry, endpoint, candidate, policy)


# what a registered version keeps of how it was trained
_LINEAGE = ("started_from", "hyperparameters", "seed", "dataset", "code", "device", "steps")

V = TypeVar("V", ValidationEntry, RegressionEntry)


def _verdict(directory: Path, kind: type[V]) -> V | None:
    try:
        return kind.model_validate_json((directory / "verdict.json").read_bytes())
    except (FileNotFoundError, ValidationError):
        return None
