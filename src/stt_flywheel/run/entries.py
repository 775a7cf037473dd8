"""The run ledger's entries: one model per stage, what that stage wrote and what later stages, the
run summary, `status` and `runs` read back.

An entry is validated when it is written (a key renamed by its producer fails there, naming the
key) and read back with `model_validate_json`, so no reader looks a stage's outcome up by string.
The JSON on disk is what each stage always wrote: these models name it, they do not change it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stt_flywheel.evaluation.gates import StoredGate, StoredVerdict
from stt_flywheel.evaluation.metrics import HeldoutMetrics, Measured

__all__ = [
    "ENTRIES",
    "DatasetEntry",
    "DeployEntry",
    "LedgerEntry",
    "RegressionEntry",
    "ServingState",
    "SliceRow",
    "SuiteRow",
    "TrainEntry",
    "TrainProgress",
    "TriggerEntry",
    "ValidationEntry",
]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LedgerEntry(_Record):
    """One stage's entry: `<reports>/<run_id>/<STAGE>.json`."""

    STAGE: ClassVar[str]


class TriggerCheck(_Record):
    name: str
    passed: bool
    value: Measured
    threshold: Measured
    reason: str
    unit: str = ""


class TriggerStats(_Record):
    new_feedback: int
    new_error_cases: int
    new_corrected_cases: int
    recent_requests: int
    recent_errors: int
    latest_arrival: datetime | None
    traffic_of: str
    error_rate: Measured
    new_corrected_users: int = 0  # ledgers written before users were known lack these
    largest_user_share: float = 0.0


class TriggerEntry(LedgerEntry):
    STAGE: ClassVar[str] = "trigger"

    should_train: bool
    forced: bool
    summary: str
    checks: list[TriggerCheck]
    stats: TriggerStats
    previous_watermark: datetime | None
    watermark: datetime | None
    production_version: int | None
    checked_at: datetime
    blocked_by: str | None
    proposal: dict[str, Any] | None


class DatasetEntry(LedgerEntry):
    STAGE: ClassVar[str] = "dataset"

    version: str
    content_hash: str
    watermark: str | None
    created_at: str
    counts: dict[str, int]
    quarantine_reasons: dict[str, int]
    splits: dict[str, int]
    replay: dict[str, int]
    pseudo_labels: dict[str, Any] = Field(default_factory=dict)  # `data.dataset.pseudo`'s counts
    normalizer: str
    settings: dict[str, Any]
    profile: dict[str, dict[str, Any]]
    balanced: bool
    usable: bool
    usable_reason: str
    published_to: str


class DatasetRef(_Record):
    version: str
    content_hash: str


class CodeVersion(_Record):
    package: str
    commit: str | None


class TrainEntry(LedgerEntry):
    """What was trained, from what, on what, with which code: enough to train it again."""

    STAGE: ClassVar[str] = "train"

    train_loss: Measured
    steps: float
    train_runtime_s: Measured
    train_samples_per_second: Measured
    eval_loss: Measured | None = None  # the fine-tuned weights', before any WiSE-FT interpolation
    saved_eval_loss: Measured | None = None  # the saved weights' (after the interpolation)
    device: str
    bf16: bool
    processes: int
    started_from: str
    started_from_version: int | None
    model_dir: str
    model_digest: str | None = None  # `storage.files.tree_digest` of model_dir as training saved it
    resumed_from: str | None
    # the word-confidence temperature fitted on the held-out split, with its words and the expected
    # calibration error at T = 1 and at the fitted T (`models.confidence.calibrate`); None without
    calibration: dict[str, float] | None = None
    train_examples: int
    hyperparameters: dict[str, Any]
    seed: int
    dataset: DatasetRef
    code: CodeVersion


class TrainProgress(LedgerEntry):
    STAGE: ClassVar[str] = "train-progress"

    step: int
    max_steps: int
    loss: float | None


class SliceRow(_Record):
    """One slice of the held-out split (a metadata field's value, or a duration bucket)."""

    field: str
    value: str
    utterances: int
    candidate_wer: Measured
    gated: bool
    production_wer: Measured | None = None
    delta_wer: Measured | None = None
    low: Measured | None = None
    high: Measured | None = None


class EvaluationDetails(_Record):
    """What the validation report shows beside the metrics."""

    normalizer: str
    slice_margin: float | None
    interval: dict[str, Any]
    tests: dict[str, dict[str, Any]]
    signatures: dict[str, dict[str, float]]
    slices: list[SliceRow]
    churn: dict[str, Any]
    worst_regressions: list[dict[str, Any]]
    largest_improvements: list[dict[str, Any]]
    critical_terms: dict[str, Any] | None = None
    # the candidate's word-confidence calibration as the trainer fitted it (`calibration.json`)
    calibration: dict[str, Any] | None = None


class _VerdictEntry(LedgerEntry, StoredVerdict):
    """A stage's verdict (what the deployer re-checks) with the rest of its entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ValidationEntry(_VerdictEntry):
    STAGE: ClassVar[str] = "validation"

    metrics: HeldoutMetrics
    evaluation: EvaluationDetails


class SuiteRow(_Record):
    """One regression suite measured and judged."""

    name: str
    kind: str
    candidate_wer: Measured
    candidate_cer: Measured
    reference_wer: Measured
    allowed_wer: Measured
    must_pass_failures: list[str]
    gates: list[StoredGate]
    utterances: int
    delta_wer: Measured
    low: Measured
    high: Measured
    adjusted_high: Measured
    p_inferior: Measured
    p_holm: Measured
    newly_broken: int
    newly_fixed: int
    broken_examples: list[dict[str, Any]] = Field(default_factory=list)
    passed: bool


class RegressionEntry(_VerdictEntry):
    STAGE: ClassVar[str] = "regression"

    suites: list[SuiteRow]


class ServingState(_Record):
    """What served: the endpoint, its traffic split (version → percent) and the registry's aliases."""

    endpoint: str
    strategy: str
    traffic: dict[str, int]
    aliases: dict[str, int]


class DeployEntry(LedgerEntry):
    STAGE: ClassVar[str] = "deploy"

    action: str
    version: int | None
    replaced: int | None
    reasons: list[str]
    pruned: list[int] = Field(default_factory=list)
    before: ServingState | None = None  # None: the stage stopped before it looked
    after: ServingState | None = None

    @field_validator("before", "after", mode="before")
    @classmethod
    def _not_looked(cls, value: Any) -> Any:
        return None if value == {} else value


ENTRIES: tuple[type[LedgerEntry], ...] = (
    TriggerEntry,
    DatasetEntry,
    TrainEntry,
    ValidationEntry,
    RegressionEntry,
    DeployEntry,
)
