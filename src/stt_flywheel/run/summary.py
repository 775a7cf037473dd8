"""One run summed up for a person: what each stage decided, production against the candidate on
every set, the evidence, and what the run left serving. Built from the run's ledger alone (what
serves *now* is `status`'s business); kept beside the ledger as `summary.json` when the run ends."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.errors import InputError, InputNotFound
from stt_flywheel.evaluation.metrics import Measured
from stt_flywheel.run.costs import RunCost, run_cost
from stt_flywheel.run.entries import (
    DatasetEntry,
    DeployEntry,
    ServingState,
    SliceRow,
    SuiteRow,
    TrainEntry,
    TriggerCheck,
    ValidationEntry,
)
from stt_flywheel.run.ledger import RunLedger, list_runs, read_run, run_reports
from stt_flywheel.storage.files import dump_json
from stt_flywheel.storage.objectstore import join_uri, open_store

__all__ = [
    "RunOutcome",
    "RunSummary",
    "read_summary",
    "resolve_run",
    "run_outcome",
    "summarize_run",
    "write_summary",
]

SUMMARY = "summary.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TriggerSummary(_Model):
    fired: bool
    summary: str | None
    blocked_by: str | None
    checks: list[TriggerCheck]


class DatasetSummary(_Model):
    version: str
    usable: bool
    usable_reason: str
    read: int
    accepted: int
    duplicates: int
    quarantined: int
    uncorrected_error_cases: int
    splits: dict[str, int]
    replay: int  # replay examples in the train split
    quarantine_reasons: dict[str, int]

    @classmethod
    def of(cls, entry: DatasetEntry) -> DatasetSummary:
        counts = {k: entry.counts.get(k, 0) for k in ("read", "accepted", "duplicates", "quarantined")}
        return cls(
            version=entry.version,
            usable=entry.usable,
            usable_reason=entry.usable_reason,
            **counts,
            uncorrected_error_cases=entry.counts.get("uncorrected_error_cases", 0),
            splits=entry.splits,
            replay=entry.replay.get("used", 0),
            quarantine_reasons=entry.quarantine_reasons,
        )


class Figures(_Model):
    """One model's WER on every set the run measured it on (None: not measured)."""

    heldout_wer: Measured | None = None
    heldout_cer: Measured | None = None
    eval_wer: Measured | None = None
    domain_wer: dict[str, Measured | None] = {}  # held-out slices by the `domain` metadata
    suite_wer: dict[str, Measured] = {}  # regression suites by name (production: the suite's reference)

    def domain(self, name: str | None) -> float | None:
        """The held-out WER of one domain's slice; the whole split's without a name or that slice."""
        value = self.domain_wer.get(name) if name else None
        return value if value is not None else self.heldout_wer


class Recall(_Model):
    production: Measured | None
    candidate: Measured | None


class EvaluationSummary(_Model):
    """The interval, tests, churn, slices and suites a person reads first."""

    normalizer: str | None = None
    delta_wer: Measured | None = None
    interval: dict[str, Any] | None = None
    p_values: dict[str, Measured | None] = {}
    newly_broken: int | None = None
    newly_fixed: int | None = None
    critical_recall: Recall = Recall(production=None, candidate=None)
    signatures: dict[str, dict[str, float]] | None = None
    slices: list[SliceRow] = []
    suites: list[SuiteRow] = []


class GateSummary(_Model):
    passed: bool
    reasons: list[str]


class RegistrySummary(_Model):
    """The registry as this run left it: its aliases, and the versions serving traffic (for a run
    whose deploy stage did not run, only the production version it was judged against is known)."""

    aliases: dict[str, int]
    versions: list[int]
    traffic: dict[str, int] = {}  # version → percent, where the deploy stage looked


class RunOutcome(_Model):
    """One run in a line per stage: what each stage that ran decided (None: it did not run)."""

    run_id: str
    checked_at: datetime | None
    stages: dict[str, str | None]
    cost: float | None = None  # estimated, from its measured stages (`RunCost.total`)


class RunSummary(_Model):
    run_id: str
    run_dir: str
    pipeline_root: str  # where the tasks' artifacts (the HTML reports among them) are
    trigger: TriggerSummary
    dataset: DatasetSummary | None
    training: TrainEntry | None
    production: Figures
    candidate: Figures
    p_value: Measured | None
    evaluation: EvaluationSummary
    gates: dict[str, GateSummary | None]  # validation, regression
    deploy: DeployEntry | None
    deployed_version: int | None  # the default version the run left serving
    registry: RegistrySummary
    cost: RunCost | None = None  # summaries written before costs were measured have none
    reports: dict[str, str] = {}  # stage → its report kept beside the ledger (`ledger.keep_report`)

    def wer_rows(self, suites: list[str] | None = None) -> list[tuple[str, Measured | None, Measured | None]]:
        """(set, production WER, candidate WER) on each held-out domain, the whole held-out split,
        the `suites` (None: every one) and the standard eval set."""
        prod, cand = self.production, self.candidate
        domains = sorted(prod.domain_wer.keys() | cand.domain_wer.keys())
        rows = [(f"held-out, domain={n}", prod.domain_wer.get(n), cand.domain_wer.get(n)) for n in domains]
        rows.append(("held-out, all", prod.heldout_wer, cand.heldout_wer))
        for name in sorted(cand.suite_wer) if suites is None else suites:
            rows.append((f"{name} suite", prod.suite_wer.get(name), cand.suite_wer.get(name)))
        rows.append(("standard eval set", prod.eval_wer, cand.eval_wer))
        return rows

    def failed_gates(self) -> list[str]:
        return [name for name, gate in self.gates.items() if gate and not gate.passed]


def _figures(validation: ValidationEntry | None, suites: list[SuiteRow]) -> tuple[Figures, Figures]:
    """Production's and the candidate's figures: every suite, and the held-out sets where validated."""
    production: dict[str, Any] = {"suite_wer": {s.name: s.reference_wer for s in suites}}
    candidate: dict[str, Any] = {"suite_wer": {s.name: s.candidate_wer for s in suites}}
    if validation is not None:
        m = validation.metrics
        production |= {
            "heldout_wer": m.production_wer,
            "heldout_cer": m.production_cer,
            "eval_wer": m.eval_production_wer,
            "domain_wer": {v: sl.production_wer for v, sl in m.slices.items()},
        }
        candidate |= {
            "heldout_wer": m.wer,
            "heldout_cer": m.cer,
            "eval_wer": m.eval_wer,
            "domain_wer": {v: sl.wer for v, sl in m.slices.items()},
        }
    return Figures(**production), Figures(**candidate)


def _evaluation(validation: ValidationEntry | None, suites: list[SuiteRow]) -> EvaluationSummary:
    if validation is None:
        return EvaluationSummary(suites=suites)
    ev, m = validation.evaluation, validation.metrics
    return EvaluationSummary(
        normalizer=ev.normalizer,
        delta_wer=m.delta_wer,
        interval=ev.interval,
        p_values={name: t.get("p_value") for name, t in ev.tests.items()},
        newly_broken=ev.churn.get("newly_broken"),
        newly_fixed=ev.churn.get("newly_fixed"),
        critical_recall=Recall(production=m.production_critical_recall, candidate=m.critical_recall),
        signatures=ev.signatures,
        slices=ev.slices,
        suites=suites,
    )


def _left_serving(ledger: RunLedger) -> RegistrySummary:
    """What the run left serving: the deploy stage's after-state where it looked, else the
    production version the trigger judged against (the run changed nothing)."""
    state: ServingState | None = None
    if ledger.deploy is not None:
        state = ledger.deploy.after or ledger.deploy.before
    if state is not None:
        traffic = {v: p for v, p in state.traffic.items() if p}
        return RegistrySummary(
            aliases=state.aliases, versions=sorted(int(v) for v in traffic), traffic=traffic
        )
    version = ledger.trigger.production_version if ledger.trigger else None
    return RegistrySummary(
        aliases={} if version is None else {"default": version},
        versions=[] if version is None else [version],
    )


def resolve_run(config: FlywheelConfig, ref: str) -> str:
    """A run id from what a person typed: the id, `latest`, or a prefix that names one run."""
    runs = list_runs(config)
    if ref == "latest":
        if not runs:
            raise InputNotFound(f"no runs under {config.paths.reports} yet")
        return runs[-1]
    if ref in runs:
        return ref
    matches = [r for r in runs if r.startswith(ref)] if ref else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(matches[:5]) + (" …" if len(matches) > 5 else "")
        raise InputError(f"{ref!r} names {len(matches)} runs ({shown}): give more of the id")
    raise InputNotFound(f"no run {ref!r} under {config.paths.reports} (`runs list` shows the runs)")


def summarize_run(config: FlywheelConfig, run_id: str) -> RunSummary:
    """Collect one run's ledger into its summary."""
    ledger = read_run(config, run_id)
    trigger, validation, regression = ledger.trigger, ledger.validation, ledger.regression
    suites = regression.suites if regression else []
    production, candidate = _figures(validation, suites)
    left = _left_serving(ledger)
    return RunSummary(
        run_id=run_id,
        run_dir=join_uri(config.paths.reports, run_id),
        pipeline_root=config.paths.pipeline_root,
        trigger=TriggerSummary(
            fired=bool(trigger and trigger.should_train),
            summary=trigger.summary if trigger else None,
            blocked_by=trigger.blocked_by if trigger else None,
            checks=trigger.checks if trigger else [],
        ),
        dataset=DatasetSummary.of(ledger.dataset) if ledger.dataset else None,
        training=ledger.train,
        production=production,
        candidate=candidate,
        p_value=validation.metrics.p_value if validation else None,
        evaluation=_evaluation(validation, suites),
        gates={
            "validation": GateSummary(passed=validation.passed, reasons=validation.reasons)
            if validation
            else None,
            "regression": GateSummary(passed=regression.passed, reasons=regression.reasons)
            if regression
            else None,
        },
        deploy=ledger.deploy,
        deployed_version=left.aliases.get("default"),
        registry=left,
        cost=run_cost(config, run_id),
        reports=run_reports(config, run_id),
    )


def write_summary(config: FlywheelConfig, summary: RunSummary) -> None:
    open_store(config.paths.reports).write(
        f"{summary.run_id}/{SUMMARY}", dump_json(summary.model_dump(mode="json"))
    )


def read_summary(config: FlywheelConfig, run_id: str) -> RunSummary | None:
    """The summary kept when the run ended, or None for a run that has none."""
    found = open_store(config.paths.reports).read(f"{run_id}/{SUMMARY}")
    return RunSummary.model_validate_json(found.data) if found else None


def run_outcome(config: FlywheelConfig, run_id: str, ledger: RunLedger | None = None) -> RunOutcome:
    """One run in a line per stage: what each stage that ran decided (from `ledger` when it was
    read already)."""
    ledger = ledger or read_run(config, run_id)
    cost = run_cost(config, run_id)
    trigger, dataset, deploy = ledger.trigger, ledger.dataset, ledger.deploy
    validation, regression = ledger.validation, ledger.regression
    return RunOutcome.model_validate(
        {
            "run_id": run_id,
            "checked_at": trigger.checked_at if trigger else None,
            "stages": {
                "trigger": trigger.summary if trigger else None,
                "dataset": (dataset.usable_reason if dataset.usable else f"unusable: {dataset.usable_reason}")
                if dataset
                else None,
                "train": "trained" if ledger.train else None,
                "validation": ("passed" if validation.passed else "rejected") if validation else None,
                "regression": ("passed" if regression.passed else "rejected") if regression else None,
                "deploy": f"{deploy.action} (version {deploy.version})" if deploy else None,
            },
            "cost": cost.total if cost else None,
        }
    )
