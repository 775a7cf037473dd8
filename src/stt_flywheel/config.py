"""The one configuration file: YAML validated by pydantic.

Every field has a default that serves the embedded (local) mode, unknown keys are an error, and
relative paths resolve against the directory of the config file. Paths left unset derive from
`root`, so a config can be as short as `root: /some/dir`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stt_flywheel.errors import InputError
from stt_flywheel.storage.objectstore import is_remote, join_uri, read_uri

__all__ = [
    "CaptureSettings",
    "ConfigError",
    "DatasetSettings",
    "DeploySettings",
    "FeedbackSettings",
    "FlywheelConfig",
    "MonitorSettings",
    "PathSettings",
    "RegressionSuite",
    "TrainingSettings",
    "TriggerPolicy",
    "ValidationPolicy",
    "VertexSettings",
    "load_config",
    "load_run_config",
]

DEFAULT_BASE_MODEL = Path(__file__).parent / "assets" / "base_model"


class ConfigError(InputError):
    """The config file is missing, unreadable or invalid; the message says where."""


class _Strict(BaseModel):
    # NaN and infinities are refused in every number: a gate must never be switched off by one
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class PathSettings(_Strict):
    """Where state lives. `root` and `registry_db` are local; every other location may be a local
    directory or a `gs://bucket/prefix` (written through google-cloud-storage with generation
    preconditions). A local `pipeline_root` is for the local runner, a `gs://` one for Vertex."""

    root: Path = Field(Path(".flywheel"), description="Root directory for all embedded state.")
    error_store: str | None = Field(None, description="Error store root; default ROOT/error-store.")
    datasets: str | None = Field(None, description="Versioned datasets; default ROOT/datasets.")
    models: str | None = Field(None, description="Registered model files; default ROOT/models.")
    reports: str | None = Field(None, description="Stage reports and run ledgers; default ROOT/runs.")
    state: str | None = Field(None, description="Shared run state (the run lease); default ROOT/state.")
    registry_db: Path | None = Field(None, description="SQLite model registry; default ROOT/registry.sqlite.")
    pipeline_root: str | None = Field(None, description="KFP pipeline root; default ROOT/pipeline-root.")

    @model_validator(mode="after")
    def _derive(self) -> PathSettings:
        defaults = {
            "error_store": "error-store",
            "datasets": "datasets",
            "models": "models",
            "reports": "runs",
            "state": "state",
            "pipeline_root": "pipeline-root",
        }
        for name, sub in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, str(self.root / sub))
        if self.registry_db is None:
            object.__setattr__(self, "registry_db", self.root / "registry.sqlite")
        return self

    def resolve_locations(self, base: str | Path) -> None:
        """Make relative locations absolute against `base` (a directory, or the `gs://` prefix a
        config was read from); absolute paths and `gs://` URIs stay as they are."""
        for name in ("error_store", "datasets", "models", "reports", "state", "pipeline_root"):
            value = getattr(self, name)
            if value and not value.startswith("gs://") and not Path(value).is_absolute():
                resolved = join_uri(base, value) if is_remote(base) else str((Path(base) / value).resolve())
                object.__setattr__(self, name, resolved)


class TriggerPolicy(_Strict):
    min_error_cases: int = Field(50, ge=0, description="New error cases since the watermark needed to train.")
    min_corrected_cases: int = Field(
        30, ge=0, description="New error cases that carry a corrected transcript."
    )
    error_rate_threshold: float = Field(
        0.05, ge=0.0, le=1.0, description="Minimum share of recent traffic that was wrong."
    )
    recent_window_hours: float = Field(168.0, gt=0, description="Traffic window for the error rate.")
    cooldown_hours: float = Field(0.0, ge=0, description="Minimum time since the last deployment.")
    force: bool = Field(
        False, description="Train regardless of the thresholds (the reasons are still recorded)."
    )
    lease_hours: float = Field(
        12.0,
        gt=0,
        description="How long a run holds the run lease (taken when the trigger fires) before an overlapping run may take it over; set above the longest run.",
    )
    require_approval: bool = Field(
        False,
        description="A fired trigger records a proposal and ends the run; a run trains only on a proposal a person approved (`stt-flywheel approve`).",
    )
    approval_expiry_hours: float = Field(
        72.0, gt=0, description="A proposal, approved or not, lapses this long after it was made."
    )

    @property
    def cooldown(self) -> timedelta:
        return timedelta(hours=self.cooldown_hours)

    @property
    def lease_ttl(self) -> timedelta:
        return timedelta(hours=self.lease_hours)


class DatasetSettings(_Strict):
    replay_manifest: Path | None = Field(
        None, description="General-domain manifest mixed in against forgetting."
    )
    replay_share: float = Field(
        0.3, ge=0.0, lt=1.0, description="Share of the training split that is replay."
    )
    holdout_fraction: float = Field(
        0.25, gt=0.0, lt=1.0, description="Share of error cases held out for validation."
    )
    protected_manifests: list[Path] = Field(
        default_factory=list, description="Extra manifests whose audio may never be trained on."
    )
    sample_rate: int = Field(16_000, gt=0, le=384_000, description="Required sample rate of training audio.")
    min_duration_s: float = Field(0.3, gt=0, description="Shorter audio is quarantined (`too_short`).")
    max_duration_s: float = Field(
        30.0,
        gt=0,
        description="Longer audio is quarantined (`too_long`), judged by the file's header before a sample is "
        "decoded. Audio longer than the window of the model being trained (a Whisper hears 30 s at once) is "
        "quarantined as `too_long_for_model`: one transcript without word timings cannot be cut with it.",
    )
    seed: int = Field(0, description="Seed of the replay sampling and the splits.")
    audio_roots: list[str] = Field(
        default_factory=list,
        description="Where a record's audio may be read from (local directories, gs:// prefixes) besides the error store's own captured audio; anything else is quarantined unopened.",
    )
    max_audio_bytes: int = Field(
        50_000_000, gt=0, description="A record's audio file larger than this is quarantined unread."
    )
    audio_read_timeout_s: float = Field(
        30.0, gt=0, description="Time limit of each request that reads a record's audio from gs://."
    )

    @model_validator(mode="after")
    def _durations_in_order(self) -> DatasetSettings:
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError(
                f"min_duration_s ({self.min_duration_s}) must be below max_duration_s ({self.max_duration_s})"
            )
        return self


class TrainingSettings(_Strict):
    max_steps: int = Field(300, gt=0, description="Optimiser steps.")
    learning_rate: float = Field(5e-4, gt=0, description="Peak learning rate (linear warm-up and decay).")
    batch_size: int = Field(16, gt=0, description="Examples per optimiser step.")
    warmup_steps: int = Field(30, ge=0, description="Warm-up steps.")
    save_steps: int = Field(
        100, gt=0, description="Checkpoint interval: a retried task resumes from the last one."
    )
    seed: int = Field(0, description="Seed of initialisation order, shuffling and augmentation.")
    speed_perturbation: list[float] = Field(
        default_factory=list,
        description="Speed factors applied at random to training audio, e.g. [0.9, 1.0, 1.1].",
    )
    wise_ft_alpha: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Interpolate the fine-tuned weights with the starting ones (1.0 = off).",
    )
    accelerator: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the trainer runs.")
    bf16: Literal["auto", "on", "off"] = Field("auto", description="`auto`: on when the GPU supports it.")
    method: Literal["full", "lora"] = Field(
        "full",
        description="`full` trains every weight; `lora` trains low-rank adapters, merged into the "
        "weights before the version is registered.",
    )
    lora_rank: int = Field(16, gt=0, description="LoRA rank r (with `method: lora`).")
    lora_alpha: int = Field(32, gt=0, description="LoRA scaling alpha (the update is scaled by alpha / r).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA branch.")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj", "o_proj"],
        min_length=1,
        description="Names of the linear layers that get adapters; names the model lacks are skipped.",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, about a third slower."
    )
    spec_augment: bool = Field(
        False, description="Mask random time spans and mel bands of each training batch (SpecAugment)."
    )
    language: str = Field(
        "en",
        description="Multilingual models (Whisper): the language they are trained and asked to "
        "transcribe, a code or a name; a record's `language` metadata overrides it for that record.",
    )
    task: Literal["transcribe", "translate"] = Field(
        "transcribe", description="Whisper's task: transcribe, or translate into English."
    )
    processes: int = Field(
        0,
        ge=0,
        description="Data-parallel training processes (torchrun, DDP); 0 is one per visible GPU, "
        "and one on a machine without.",
    )
    torch_compile: bool = Field(
        False,
        description="Compile the model with torch.compile: faster steps on a GPU after minutes of compiling.",
    )

    @field_validator("language")
    @classmethod
    def _known_language(cls, language: str) -> str:
        if language.strip().lower() in ("en", "english"):
            return language
        # only a language other than the default pays for importing Whisper's table (~2 s)
        from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

        key = language.strip().lower()
        if key not in LANGUAGES and key not in TO_LANGUAGE_CODE:
            raise ValueError(f"unknown language {language!r}: a Whisper language code (de, fr, …) or name")
        return language

    @field_validator("speed_perturbation")
    @classmethod
    def _sane_speeds(cls, speeds: list[float]) -> list[float]:
        if any(not 0.5 <= s <= 2.0 for s in speeds):
            raise ValueError("speed factors must lie between 0.5 and 2.0")
        return speeds


class ValidationPolicy(_Strict):
    eval_manifest: Path | None = Field(
        None, description="Standard eval set scored beside the held-out split."
    )
    normalizer: str = Field(
        "whisper-en/1",
        description="Text normaliser applied before scoring (`name/version`), recorded with every metric.",
    )
    confidence: float = Field(
        0.95, gt=0.5, lt=1.0, description="Confidence of the bootstrap intervals the gates decide on."
    )
    bootstrap_resamples: int = Field(1000, ge=100, description="Resamples per bootstrap interval.")
    significance_test: Literal["wilcoxon", "t_test", "mapsswe"] = Field(
        "wilcoxon", description="Paired test behind `max_p_value`; all three are reported."
    )
    min_wer_improvement: float | None = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="Superiority margin: the upper bound of the held-out ΔWER interval must lie below minus this; unset rejects (fail closed).",
    )
    max_p_value: float | None = Field(
        0.05, gt=0.0, lt=1.0, description="Significance level of the paired test; unset rejects."
    )
    max_worse_share: float | None = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="Largest share of held-out utterances allowed to get worse; unset rejects.",
    )
    max_cer_increase: float | None = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Largest allowed rise in held-out CER; unset rejects. Guards against WER gains from garbage.",
    )
    max_formatting_error_increase: float | None = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Largest allowed rise in the held-out formatting error rate (raw WER minus "
        "normalised WER: the errors of casing and punctuation alone); unset rejects.",
    )
    max_empty_share: float | None = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="Largest share of held-out utterances the candidate may answer with nothing; unset rejects.",
    )
    max_loop_share_increase: float | None = Field(
        0.01,
        ge=0.0,
        lt=1.0,
        description="Allowed rise (vs production) in the share of outputs caught in a repetition loop.",
    )
    max_burst_share_increase: float | None = Field(
        0.02,
        ge=0.0,
        lt=1.0,
        description="Allowed rise (vs production) in the share of outputs with an insertion burst.",
    )
    loop_repeats: int = Field(
        3, ge=2, description="An n-gram (n ≤ 4) repeated this many times in a row is a loop."
    )
    burst_length: int = Field(4, ge=2, description="This many insertions in a row are an insertion burst.")
    slice_by: list[str] = Field(
        default_factory=lambda: ["domain", "speaker", "duration"],
        description="Metadata fields to slice the held-out split by (`duration` is bucketed).",
    )
    min_slice_size: int = Field(20, ge=1, description="Slices with fewer utterances are reported, not gated.")
    max_slice_degradation: float | None = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="A slice fails when its ΔWER is above this and its interval lies above zero; unset rejects.",
    )
    critical_terms: list[str] = Field(
        default_factory=list, description="Words (names, numbers, product words) whose recall is tracked."
    )
    max_critical_recall_drop: float | None = Field(
        0.0, ge=0.0, lt=1.0, description="Allowed drop in recall of the critical terms vs production."
    )
    first_run_max_wer: float | None = Field(
        None,
        ge=0.0,
        description="With no production model yet, the absolute held-out WER the candidate must reach; unset rejects.",
    )
    first_run_max_cer: float | None = Field(
        None,
        ge=0.0,
        description="With no production model yet, the absolute held-out CER bound; unset rejects.",
    )
    churn_examples: int = Field(
        20, ge=0, description="Newly broken / fixed utterances listed in the reports."
    )
    batch_size: int = Field(16, gt=0, description="Transcription batch size.")

    @field_validator("normalizer")
    @classmethod
    def _known_normalizer(cls, spec: str) -> str:
        from stt_flywheel.scoring.text import get_normalizer

        return get_normalizer(spec).id


class RegressionSuite(_Strict):
    """One regression suite: a fixed set the candidate may not get worse on."""

    name: str = Field(description="The suite's name (its metric keys use it).")
    data: Path = Field(description="Manifest (JSONL: `id`, `audio`, `text`, optional `speaker`, `domain`).")
    kind: Literal["benchmark", "critical", "edge"] = Field(
        "benchmark", description="What the suite stands for."
    )
    reference: float | Literal["production"] = Field(
        "production", description="Reference WER: a number, or the production model's WER on the suite."
    )
    max_relative_degradation: float | None = Field(
        0.1,
        description="Non-inferiority margin relative to the reference WER: the upper bound of the (Holm-adjusted) interval must stay within it; unset rejects.",
    )
    max_absolute_degradation: float = Field(0.0, ge=0, description="Added to the relative allowance.")
    must_pass: list[str] = Field(
        default_factory=list, description="Utterance ids that must be transcribed exactly."
    )


class DeploySettings(_Strict):
    auto_deploy: bool = Field(
        True, description="Deploy a candidate that passed; otherwise register it with the alias `candidate`."
    )
    model_name: str = Field(
        "stt-flywheel", description="The registry's model name (on Vertex AI, the model id)."
    )
    endpoint_name: str = Field("stt-flywheel-local", description="The endpoint's name.")
    keep_versions: int = Field(
        5, ge=2, description="Registered versions kept; aliased or deployed ones never pruned."
    )
    strategy: Literal["replace", "canary"] = Field(
        "replace",
        description="`replace`: the candidate takes all traffic at once; `canary`: it serves `canary_percent` until the monitor (or a person) decides.",
    )
    canary_percent: int = Field(
        10, ge=1, le=99, description="Traffic share of a canary (the first of monitor.canary_steps when set)."
    )
    backend: Literal["local", "vertex"] = Field(
        "local", description="Registry and endpoint: the embedded SQLite + local server, or Vertex AI."
    )


class CaptureSettings(_Strict):
    """What the serving processes keep of each prediction, written to the error store."""

    enabled: bool = Field(True, description="Capture predictions into the error store.")
    share: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of requests captured (the others are only counted)."
    )
    audio: bool = Field(
        True, description="Keep each captured request's audio (a correction without it cannot be trained on)."
    )
    batch_size: int = Field(256, gt=0, description="Predictions written per file at most.")
    flush_interval_s: float = Field(2.0, gt=0, description="Write a smaller batch after this long.")
    queue_size: int = Field(
        10_000,
        gt=0,
        description="Predictions waiting to be written at most; beyond it they are dropped and counted.",
    )
    retry_interval_s: float = Field(10.0, gt=0, description="How often spilled batches are retried.")
    spill_dir: Path | None = Field(
        None, description="Local directory for batches the store did not take; default ROOT/capture-spill."
    )


class ServingLimits(_Strict):
    """What one request to a serving process may ask for; more is refused before it is decoded."""

    max_body_bytes: int = Field(
        32 * 1024 * 1024, gt=0, description="A larger request body is answered 413 before it is read whole."
    )
    max_instances: int = Field(32, gt=0, description="More instances in one request are answered 400.")
    max_audio_s: float = Field(
        120.0, gt=0, description="Longer audio (by its header) is answered 400 before it is decoded."
    )
    chunk_s: float = Field(
        30.0,
        gt=0,
        description="Audio longer than this is transcribed in pieces of this length, in bounded memory.",
    )


class FeedbackSettings(_Strict):
    """How late feedback is joined to predictions."""

    pending_horizon_hours: float = Field(
        24.0,
        gt=0,
        description="An event whose prediction is not in the store this long after it arrived is quarantined.",
    )
    label_window_hours: float = Field(
        24.0,
        ge=0,
        description="Feedback is expected this long after a prediction; younger predictions without any are pending.",
    )

    @property
    def pending_horizon(self) -> timedelta:
        return timedelta(hours=self.pending_horizon_hours)

    @property
    def label_window(self) -> timedelta:
        return timedelta(hours=self.label_window_hours)


class MonitorSettings(_Strict):
    """How the monitor decides canaries from live evidence and watches the default (README: "The
    monitor's decision rule")."""

    confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1.0,
        description="Confidence of a canary's decision over all its looks; each testing look uses 1 − (1 − confidence) / max_looks.",
    )
    max_looks: int = Field(
        12,
        ge=1,
        description="Testing looks per canary step (looks that wait for labels do not count); the error rate is split evenly over them.",
    )
    min_labelled_per_arm: int = Field(
        200,
        ge=1,
        description="Predictions with feedback, older than feedback.label_window_hours, each arm needs before a look tests.",
    )
    min_scored_per_arm: int = Field(
        30, ge=1, description="Predictions with a reference transcript each arm needs for the live-WER test."
    )
    correction_rate_margin: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="Non-inferiority margin on the correction rate (absolute: candidate − default).",
    )
    wer_margin: float = Field(
        0.02, ge=0.0, description="Non-inferiority margin on live WER (absolute: candidate − default)."
    )
    max_canary_hours: float = Field(
        72.0, gt=0, description="A canary still undecided this long after it started meets deadline_policy."
    )
    deadline_policy: Literal["rollback", "promote", "hold"] = Field(
        "rollback",
        description="At the deadline (or with the looks spent): roll back (fail closed), promote, or hold and alert.",
    )
    canary_steps: list[int] = Field(
        default_factory=list,
        description="Progressive traffic shares of a canary, e.g. [10, 50, 100], each step gated the same way (the first replaces deploy.canary_percent); empty: deploy.canary_percent, then 100.",
    )
    auto_rollback: bool = Field(
        True, description="Roll a degraded default back to `previous` (off: only alert)."
    )
    max_live_degradation: float = Field(
        0.05,
        ge=0.0,
        description="The default is degraded when its correction rate or live WER is worse than its record by more than this (absolute), the interval excluding zero.",
    )
    baseline_hours: float = Field(
        72.0, gt=0, description="The default's record: its first hours of serving (else `previous`'s last)."
    )
    watch_window_hours: float = Field(
        24.0, gt=0, description="Recent traffic of the default compared with its record."
    )
    alert_webhook: str | None = Field(
        None,
        description="URL that receives a Slack-compatible JSON message on a rollback, a stalled canary or a degraded default.",
    )
    lease_minutes: float = Field(
        30.0, gt=0, description="How long a monitor holds the monitor lease (two monitors never act twice)."
    )
    bootstrap_resamples: int = Field(2000, ge=100, description="Resamples of the live-WER interval.")

    @field_validator("canary_steps")
    @classmethod
    def _steps(cls, steps: list[int]) -> list[int]:
        if steps and (
            any(not 0 < s <= 100 for s in steps)
            or any(b <= a for a, b in zip(steps, steps[1:], strict=False))
            or steps[-1] != 100
        ):
            raise ValueError(
                "canary steps must rise strictly within 1..100 and end at 100, e.g. [10, 50, 100]"
            )
        return steps

    @property
    def look_confidence(self) -> float:
        return 1 - (1 - self.confidence) / self.max_looks


class VertexSettings(_Strict):
    """Google Cloud settings: the Vertex AI registry/endpoint backend (`deploy.backend: vertex`) and
    pipeline submission."""

    project: str | None = Field(None, description="Google Cloud project id.")
    location: str = Field("us-central1", description="Vertex AI region.")
    api_endpoint: str | None = Field(
        None,
        description="Override of the Vertex AI API endpoint (REST); an http:// one (a local fake) is reached without credentials.",
    )
    serving_image: str | None = Field(
        None, description="Serving container image (by digest) registered with each model version."
    )
    machine_type: str = Field("n1-standard-4", description="Machine type of the endpoint's replicas.")
    accelerator_type: str | None = Field(
        None, description="Accelerator of each serving replica, e.g. NVIDIA_TESLA_T4; unset serves on CPU."
    )
    accelerator_count: int = Field(0, ge=0, description="Accelerators per serving replica.")
    min_replica_count: int = Field(1, ge=1, description="Endpoint autoscaling floor.")
    max_replica_count: int = Field(1, ge=1, description="Endpoint autoscaling ceiling.")
    serving_service_account: str | None = Field(
        None, description="Service account the deployed model runs as."
    )
    pipeline_service_account: str | None = Field(
        None, description="Service account pipeline runs (and schedules) run as."
    )
    scheduler_api_endpoint: str | None = Field(
        None,
        description="Override of the Cloud Scheduler API endpoint (REST); an http:// one (a local fake) is reached without credentials.",
    )
    scheduler_service_account: str | None = Field(
        None,
        description="Service account whose OAuth token a Cloud Scheduler job creates runs with (default: pipeline_service_account).",
    )
    retry_initial_s: float = Field(1.0, gt=0, description="First backoff after a 429 / 503 from the API.")
    retry_timeout_s: float = Field(300.0, gt=0, description="Give up retrying an API call after this long.")


class FlywheelConfig(_Strict):
    paths: PathSettings = PathSettings()
    base_model: Path = Field(
        DEFAULT_BASE_MODEL, description="Model registered as version 1 when the registry is empty."
    )
    capture: CaptureSettings = CaptureSettings()
    serving: ServingLimits = ServingLimits()
    feedback: FeedbackSettings = FeedbackSettings()
    trigger: TriggerPolicy = TriggerPolicy()
    dataset: DatasetSettings = DatasetSettings()
    training: TrainingSettings = TrainingSettings()
    validation: ValidationPolicy = ValidationPolicy()
    regression: list[RegressionSuite] = Field(
        default_factory=list, description="The regression suites; none configured rejects every candidate."
    )
    deploy: DeploySettings = DeploySettings()
    monitor: MonitorSettings = MonitorSettings()
    vertex: VertexSettings = VertexSettings()

    def with_overrides(self, overrides: dict[str, Any]) -> FlywheelConfig:
        """Apply dotted-key overrides (`{"trigger.force": True}`); None values are ignored."""
        data = self.model_dump()
        for key, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            if leaf not in node:
                raise ConfigError(f"unknown config key in override: {key}")
            node[leaf] = value
        return FlywheelConfig.model_validate(data)


def _resolve_paths(obj: Any, base: Path) -> Any:
    if isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            value = getattr(obj, name)
            if isinstance(value, Path) and not value.is_absolute():
                object.__setattr__(obj, name, (base / value).resolve())
            elif isinstance(value, list):
                object.__setattr__(
                    obj,
                    name,
                    [
                        (base / v).resolve()
                        if isinstance(v, Path) and not v.is_absolute()
                        else _resolve_paths(v, base)
                        for v in value
                    ],
                )
            else:
                _resolve_paths(value, base)
    return obj


def load_config(path: str | Path | None = None) -> FlywheelConfig:
    """Load and validate a config file (a path or a `gs://` URI); None gives the defaults, rooted in
    the working directory.

    Relative locations resolve against the file's directory, so a config read from
    `gs://bucket/flywheel/flywheel.yaml` keeps its state under `gs://bucket/flywheel/`. Relative
    file paths (manifests, the base model, `paths.root`) resolve against the file's directory when
    it is local and against the working directory when it is in Cloud Storage (on Vertex, files in
    Cloud Storage are read through the Cloud Storage FUSE mount at `/gcs/<bucket>/…`).
    """
    if path is None:
        config = _resolve_paths(FlywheelConfig(), Path.cwd())
        config.paths.resolve_locations(Path.cwd())
        return config
    location: str | Path
    if is_remote(path):
        location = str(path)
        try:
            text = read_uri(location).decode()
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {location}") from exc
        base_dir, base_locations = Path.cwd(), location.rpartition("/")[0]
    else:
        location = Path(path)
        if not location.is_file():
            raise ConfigError(f"config file not found: {location}")
        text = location.read_text()
        base_dir = location.parent.resolve()
        base_locations = str(base_dir)
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{location}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{location}: expected a mapping at the top level")
    try:
        config = FlywheelConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{location}: {problems}") from exc
    resolved = _resolve_paths(config, base_dir)
    resolved.paths.resolve_locations(base_locations)
    return resolved


def load_run_config(
    config_uri: str,
    *,
    force: bool = False,
    auto_deploy: bool | None = None,
    max_steps: int = 0,
    serving_image: str = "",
) -> FlywheelConfig:
    """The config for one pipeline run: the file plus the run's parameters.

    `force` only ever turns forcing on, and `max_steps=0` and an empty `serving_image` keep the
    configured values, so a pipeline's default parameters never silently override the file.
    """
    return load_config(config_uri).with_overrides(
        {
            "trigger.force": True if force else None,
            "deploy.auto_deploy": auto_deploy,
            "training.max_steps": max_steps or None,
            "vertex.serving_image": serving_image or None,
        }
    )
