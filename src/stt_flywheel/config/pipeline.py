"""Stages 1 to 3: when to train, what to train on, how."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from stt_flywheel.config.base import ConfigPath, Strict

__all__ = ["DatasetSettings", "TrainingSettings", "TriggerPolicy"]


class TriggerPolicy(Strict):
    min_error_cases: int = Field(50, ge=0, description="New error cases since the watermark needed to train.")
    min_corrected_cases: int = Field(
        30, ge=0, description="New error cases that carry a corrected transcript."
    )
    min_distinct_users: int = Field(
        4,
        ge=1,
        description="Distinct users the new corrections must come from (requests that name no user "
        "are one user): no single voice, nor a few, starts a run. With `dataset.max_user_share` 0.25 "
        "fewer than four users could not fill a training split anyway.",
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


class DatasetSettings(Strict):
    replay_manifest: ConfigPath | None = Field(
        None, description="General-domain manifest mixed in against forgetting."
    )
    replay_share: float = Field(
        0.3, ge=0.0, lt=1.0, description="Share of the training split that is replay."
    )
    holdout_fraction: float = Field(
        0.25, gt=0.0, lt=1.0, description="Share of error cases held out for validation."
    )
    protected_manifests: list[ConfigPath] = Field(
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
    max_user_share: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="No user's corrections are more than this share of the training split's: each "
        "user keeps at most as many as that allows, the rest are quarantined (`over_user_share`). "
        "Requests that name no user are one user (anonymous). 1.0: no cap.",
    )
    max_words_per_second: float | None = Field(
        6.0,
        gt=0,
        description="A correction with more words than this many per second of its audio (plus two) "
        "cannot be what was said: quarantined as `implausible_words_per_second`. Null: no such check.",
    )
    pseudo_label_min_confidence: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Pseudo-labels: settled predictions nobody answered (signed, audio kept, made in the "
        "7 days before the label window) whose calibrated confidence is at least this join the training "
        "split with their own transcript as the label. Never held out, never a gate. Null: off.",
    )
    pseudo_label_weight: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="How often a pseudo-label is drawn in training against a correction (1: as often).",
    )
    pseudo_label_max_share: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="At most this share of the training split is pseudo-labels, the most confident first.",
    )

    @model_validator(mode="after")
    def _durations_in_order(self) -> DatasetSettings:
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError(
                f"min_duration_s ({self.min_duration_s}) must be below max_duration_s ({self.max_duration_s})"
            )
        return self


class TrainingSettings(Strict):
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
        from stt_flywheel.scoring.languages import language_code

        if language_code(language) is None:
            raise ValueError(f"unknown language {language!r}: a Whisper language code (de, fr, …) or name")
        return language

    @field_validator("speed_perturbation")
    @classmethod
    def _sane_speeds(cls, speeds: list[float]) -> list[float]:
        if any(not 0.5 <= s <= 2.0 for s in speeds):
            raise ValueError("speed factors must lie between 0.5 and 2.0")
        return speeds
