"""Stage 6 and the loop after it: deploying, serving, capture, feedback, the monitor."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from stt_flywheel.config.base import ConfigPath, Strict

__all__ = [
    "CaptureSettings",
    "DeploySettings",
    "FeedbackService",
    "FeedbackSettings",
    "MonitorSettings",
    "ServingLimits",
    "UiSettings",
]


class DeploySettings(Strict):
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


class CaptureSettings(Strict):
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
    spill_dir: ConfigPath | None = Field(
        None, description="Local directory for batches the store did not take; default ROOT/capture-spill."
    )


class ServingLimits(Strict):
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
    reveal_version: bool = Field(
        False,
        description="Name the version that answered in each prediction. Off, a caller cannot tell "
        "which requests a canary serves, so cannot aim confirmations or corrections at one arm.",
    )
    max_metadata_keys: int = Field(
        16,
        ge=0,
        description="More metadata keys on one instance are answered 422 (and a record "
        "with more is quarantined at `errors ingest`, `metadata_too_large`).",
    )
    max_metadata_chars: int = Field(
        200, gt=0, description="A longer metadata key or value is answered 422 (quarantined at ingest)."
    )

    def metadata_problem(self, metadata: dict[str, str]) -> str | None:
        """Why this metadata is more than a request may carry, or None."""
        if len(metadata) > self.max_metadata_keys:
            return f"{len(metadata)} metadata keys; at most {self.max_metadata_keys}"
        limit = self.max_metadata_chars
        if (
            max(map(len, metadata), default=0) <= limit
            and max(map(len, metadata.values()), default=0) <= limit
        ):
            return None
        key = next(k for k, v in metadata.items() if len(k) > limit or len(v) > limit)
        return f"metadata {key[:40]!r}: a key or value over {limit} characters"


class FeedbackService(Strict):
    """`stt-flywheel feedback serve`: feedback over HTTP (and Pub/Sub push) from a team's own
    service. Each caller is known by name, and the name is the `source` of what it sends, so
    `feedback.reviewer_sources` decides which callers may label any user's prediction."""

    host: str = Field(
        "127.0.0.1",
        description="Address to listen on; `0.0.0.0` on Cloud Run. Without `keys_secret` or "
        "`callers` it serves on a loopback address only.",
    )
    port: int = Field(8090, ge=1, le=65535, description="Port; `PORT` (Cloud Run's) wins when it is set.")
    keys_secret: str | None = Field(
        None,
        description="Bearer keys: a Secret Manager secret version (`projects/P/secrets/S/versions/latest`) "
        "or a local file readable by its owner alone; one `name:key` per line, `name` being the caller.",
    )
    secret_api_endpoint: str | None = Field(
        None, description="Secret Manager's endpoint, for a stand-in (tests); None: Google's."
    )
    audience: str | None = Field(
        None,
        description="Google ID tokens are accepted for this audience (the service's URL, or the one a "
        "Pub/Sub push subscription names), from the accounts in `callers` only.",
    )
    callers: dict[str, str] = Field(
        default_factory=dict,
        description="Service account email → caller name, for ID tokens: a Pub/Sub push "
        "subscription's account, a team's service's account. Any Google account can mint an ID token "
        "for any audience, so an account not named here is refused.",
    )
    certs_url: str = Field(
        "https://www.googleapis.com/oauth2/v1/certs",
        description="Where the keys that sign Google ID tokens are published (a stand-in's in tests).",
    )
    max_body_bytes: int = Field(1_000_000, gt=0, description="A larger request body is refused (413).")
    max_events: int = Field(500, gt=0, description="More events in one request are refused (400).")
    requests_per_minute: int = Field(
        600, gt=0, description="Requests one caller may make in a minute; beyond it, 429 with Retry-After."
    )

    @field_validator("callers")
    @classmethod
    def _named(cls, v: dict[str, str]) -> dict[str, str]:
        if any(not name.strip() for name in v.values()):
            raise ValueError("each account in callers needs a caller name")
        return v

    @model_validator(mode="after")
    def _tokens_need_both(self) -> FeedbackService:
        if bool(self.audience) != bool(self.callers):
            raise ValueError("ID tokens need both an audience and the callers (accounts) to accept")
        return self


class FeedbackSettings(Strict):
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
    max_events_per_user_per_hour: int | None = Field(
        600,
        gt=0,
        description="Feedback events one user may send in an hour of arrival (reviewer sources "
        "excepted; events that name no user are one user); the excess is quarantined, kept whole, "
        "as `rate_limited`. Null: no limit.",
    )
    max_edit_ratio: float | None = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="A correction further than this from what the model heard (character edit distance "
        "over the longer text, after normalisation) waits for review instead of training. Null: never "
        "held for that.",
    )
    reviewer_sources: list[str] = Field(
        default_factory=lambda: ["review"],
        description="Sources whose events may label any user's prediction (a review tool, a labelling "
        "team); an event from any other source about another user's prediction is quarantined "
        "(`not_the_requester`). `review` is what `stt-flywheel review accept` sends.",
    )
    service: FeedbackService = FeedbackService()

    @property
    def pending_horizon(self) -> timedelta:
        return timedelta(hours=self.pending_horizon_hours)

    @property
    def label_window(self) -> timedelta:
        return timedelta(hours=self.label_window_hours)


class MonitorSettings(Strict):
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
    min_distinct_users_per_arm: int = Field(
        20,
        ge=1,
        description="Distinct users each arm must have served before a look tests (requests that name "
        "no user are one user): a few users, however many requests they send, decide nothing.",
    )
    max_predictions_per_user: int | None = Field(
        25,
        ge=1,
        description="Of one user's predictions in an arm only the earliest this many count (live "
        "quality of the default too): a flood of requests and confirmations weighs as much as this. "
        "Null: no cap.",
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
    cloud_metrics: bool = Field(
        False,
        description="Write each version's live quality (requests, correction rate, live WER, traffic share) "
        "to Cloud Monitoring in `vertex.project` as `custom.googleapis.com/stt_flywheel/…` metrics at every look.",
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


IAP_ISSUER = "https://cloud.google.com/iap"


class UiSettings(Strict):
    """`stt-flywheel ui`: the served dashboard. It shows people's audio and words, so it listens on
    loopback unless Identity-Aware Proxy stands in front of it and each request's IAP assertion is
    checked (`iap_audience`)."""

    host: str = Field(
        "127.0.0.1",
        description="Address to listen on; `0.0.0.0` on Cloud Run, which needs `iap_audience`.",
    )
    port: int = Field(8070, ge=1, le=65535, description="Port; `PORT` (Cloud Run's) wins when it is set.")
    iap_audience: str | None = Field(
        None,
        description="The audience of the IAP JWT (`/projects/NUMBER/locations/REGION/services/SERVICE` for "
        "Cloud Run): each request's `x-goog-iap-jwt-assertion` is verified against it, and the email "
        "in it is who a review decision names.",
    )
    iap_certs_url: str = Field(
        "https://www.gstatic.com/iap/verify/public_key",
        description="Where IAP's signing keys are published (a stand-in's in tests).",
    )
