"""Stages 4 and 5: what a candidate must prove."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from stt_flywheel.config.base import ConfigPath, Strict

__all__ = ["RegressionSuite", "ValidationPolicy"]


class ValidationPolicy(Strict):
    eval_manifest: ConfigPath | None = Field(
        None,
        description="The curated eval set, scored beside the held-out split and gating it: the held-out "
        "split is drawn from users' corrections, so data that poisoned training can move it; this set "
        "cannot. A candidate worse here than production (`max_eval_wer_increase`, and critical-term "
        "recall by `max_critical_recall_drop`) is refused.",
    )
    max_eval_wer_increase: float | None = Field(
        0.01,
        ge=0.0,
        description="Largest rise of WER on the curated eval set, candidate over production; unset "
        "rejects a candidate whenever an eval set is configured.",
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


class RegressionSuite(Strict):
    """One regression suite: a fixed set the candidate may not get worse on."""

    name: str = Field(description="The suite's name (its metric keys use it).")
    data: ConfigPath = Field(
        description="Manifest (JSONL: `id`, `audio`, `text`, optional `speaker`, `domain`)."
    )
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
