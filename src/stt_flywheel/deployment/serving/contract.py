"""Prediction server following Vertex AI's custom-container contract.

Vertex starts the container with `AIP_HTTP_PORT`, `AIP_HEALTH_ROUTE`, `AIP_PREDICT_ROUTE` and
`AIP_STORAGE_URI` (where the model artifacts are) in the environment, sends
`{"instances": [{"b64": "<audio file bytes, base64>", "metadata": {"domain": "…"}}, ...]}` to the
predict route and expects `{"predictions": [...]}` back, one per instance: the transcript, a
`prediction_id` (what feedback names later) and the `model_version` that answered. The health
route answers 200 once the model is loaded, with the capture counters. `stt-flywheel serve` runs
the same server locally.

Capture is configured by the environment the deployer sets per version (`capture_env`):
`FLYWHEEL_CAPTURE_URI` (the error store; unset: no capture), `FLYWHEEL_MODEL_VERSION`,
`FLYWHEEL_ENDPOINT` and the `capture.*` settings as `FLYWHEEL_CAPTURE_*`.

`FLYWHEEL_MODEL_DIGEST`, when set, is the digest of the model the registry holds for this
version (`model_digest`): the server hashes the model directory it was given before it loads it
and refuses to start on any other content.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stt_flywheel.config import CaptureSettings, IdentitySettings, ServingLimits
from stt_flywheel.data.identity import (
    IDENTITY_KEY_ENV,
    IDENTITY_SECRET_ENDPOINT_ENV,
    IDENTITY_SECRET_ENV,
    MAX_USER_CHARS,
    Identity,
    load_identity,
)
from stt_flywheel.errors import InputError
from stt_flywheel.storage.files import tree_digest

__all__ = [
    "MODEL_DIGEST_ENV",
    "REGISTRY_RECORD",
    "Health",
    "PredictInstance",
    "PredictParameters",
    "PredictedWord",
    "PredictRequest",
    "PredictResponse",
    "Prediction",
    "ServingSettings",
    "model_digest",
    "capture_env",
]

CAPTURE_ENV = {
    "share": "FLYWHEEL_CAPTURE_SHARE",
    "audio": "FLYWHEEL_CAPTURE_AUDIO",
    "batch_size": "FLYWHEEL_CAPTURE_BATCH_SIZE",
    "flush_interval_s": "FLYWHEEL_CAPTURE_FLUSH_INTERVAL_S",
    "queue_size": "FLYWHEEL_CAPTURE_QUEUE_SIZE",
    "retry_interval_s": "FLYWHEEL_CAPTURE_RETRY_INTERVAL_S",
    "spill_dir": "FLYWHEEL_CAPTURE_SPILL_DIR",
}


LIMITS_ENV = {
    "max_body_bytes": "FLYWHEEL_MAX_BODY_BYTES",
    "max_instances": "FLYWHEEL_MAX_INSTANCES",
    "max_audio_s": "FLYWHEEL_MAX_AUDIO_S",
    "chunk_s": "FLYWHEEL_CHUNK_S",
    "reveal_version": "FLYWHEEL_REVEAL_VERSION",
    "max_metadata_keys": "FLYWHEEL_MAX_METADATA_KEYS",
    "max_metadata_chars": "FLYWHEEL_MAX_METADATA_CHARS",
}

MODEL_DIGEST_ENV = "FLYWHEEL_MODEL_DIGEST"
REGISTRY_RECORD = "flywheel.json"  # what a registry may write beside a version's model files


def model_digest(directory: str | Path) -> str:
    """The digest of a model directory as training wrote it (`storage.files.tree_digest`), a
    registry's own record beside the files left out."""
    return tree_digest(directory, skip=(REGISTRY_RECORD,))


def capture_env(
    store_uri: str | None,
    settings: CaptureSettings,
    *,
    version: str | int | None,
    endpoint: str | None,
    spill_dir: str | Path | None = None,
    limits: ServingLimits | None = None,
    identity: Identity | None = None,
) -> dict[str, str]:
    """The environment that makes a serving process capture its traffic as `version` (and hold
    requests to `limits`), its users as pseudonyms under `identity`'s key (capture refuses to
    start without one)."""
    env = {
        "FLYWHEEL_MODEL_VERSION": str(version) if version is not None else "",
        "FLYWHEEL_ENDPOINT": endpoint or "",
    }
    if limits is not None:
        env |= {var: str(getattr(limits, name)) for name, var in LIMITS_ENV.items()}
    if not settings.enabled or not store_uri:
        return env
    env["FLYWHEEL_CAPTURE_URI"] = store_uri
    if identity is not None:
        env |= identity.environment()
    for name, var in CAPTURE_ENV.items():
        value = getattr(settings, name)
        if name == "spill_dir":
            value = spill_dir or value
        if value is not None:
            env[var] = str(int(value) if isinstance(value, bool) else value)
    return env


@dataclass(frozen=True)
class ServingSettings:
    storage_uri: str
    port: int = 8080
    host: str = "127.0.0.1"  # this machine only; the serving image sets FLYWHEEL_HOST=0.0.0.0
    health_route: str = "/health"
    predict_route: str = "/predict"
    batch_size: int = 16
    model_version: str | None = None
    endpoint: str | None = None
    capture_uri: str | None = None
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    limits: ServingLimits = field(default_factory=ServingLimits)
    identity: Identity | None = None  # the key that turns users into pseudonyms; needed to capture
    model_digest: str | None = None  # what the model directory must hash to (`model_digest`)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> ServingSettings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {
            "storage_uri": env.get("AIP_STORAGE_URI", ""),
            "port": int(env.get("AIP_HTTP_PORT", "8080")),
            "host": env.get("FLYWHEEL_HOST") or "127.0.0.1",
            "health_route": env.get("AIP_HEALTH_ROUTE", "/health"),
            "predict_route": env.get("AIP_PREDICT_ROUTE", "/predict"),
            "model_version": env.get("FLYWHEEL_MODEL_VERSION") or None,
            "endpoint": env.get("FLYWHEEL_ENDPOINT") or None,
            "capture_uri": env.get("FLYWHEEL_CAPTURE_URI") or None,
            "model_digest": env.get(MODEL_DIGEST_ENV) or None,
        }
        capture = {name: env[var] for name, var in CAPTURE_ENV.items() if env.get(var)}
        try:
            values["capture"] = CaptureSettings.model_validate(capture)
        except ValueError as exc:
            raise InputError(f"invalid FLYWHEEL_CAPTURE_* setting: {exc}") from exc
        limits = {name: env[var] for name, var in LIMITS_ENV.items() if env.get(var)}
        try:
            values["limits"] = ServingLimits.model_validate(limits)
        except ValueError as exc:
            raise InputError(f"invalid FLYWHEEL_MAX_* / FLYWHEEL_CHUNK_S setting: {exc}") from exc
        if env.get(IDENTITY_KEY_ENV) or env.get(IDENTITY_SECRET_ENV):
            try:
                secret = IdentitySettings(
                    secret=env.get(IDENTITY_SECRET_ENV) or None,
                    secret_api_endpoint=env.get(IDENTITY_SECRET_ENDPOINT_ENV) or None,
                )
            except ValueError as exc:
                raise InputError(f"invalid {IDENTITY_SECRET_ENV}: {exc}") from None
            values["identity"] = load_identity(None, env, secret)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values["capture_uri"] and values.get("identity") is None:
            raise InputError(
                f"capture needs the identity key: set {IDENTITY_SECRET_ENV} or {IDENTITY_KEY_ENV}"
            )
        if not values["storage_uri"]:
            raise InputError("no model: set AIP_STORAGE_URI or pass a model directory")
        return cls(**values)


class PredictInstance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    b64: str = Field(description="The audio file (WAV, FLAC, OGG), base64-encoded.")
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="What the caller knows of the request: speaker, device, domain, app, … "
        "(bounded in keys and length: `serving.max_metadata_*`).",
    )
    user: str | None = Field(
        None,
        max_length=MAX_USER_CHARS,
        description="The calling application's pseudonymous id of the end user who asked; stored only "
        "as a keyed hash. Feedback about this prediction is accepted from this user (or a reviewer).",
    )


class PredictParameters(BaseModel):
    """Settings for the whole request."""

    model_config = ConfigDict(extra="allow")
    user: str | None = Field(
        None, max_length=MAX_USER_CHARS, description="The user of every instance that names none."
    )
    word_confidence: bool = Field(
        False,
        description="Answer each transcript's words with their times and confidence, and the "
        "transcript's confidence (they are captured with the prediction either way).",
    )


class PredictRequest(BaseModel):
    """What the predict route takes: Vertex AI's `instances`, one audio file each."""

    instances: list[PredictInstance] = Field(min_length=1)
    parameters: PredictParameters = Field(default_factory=PredictParameters)


class PredictedWord(BaseModel):
    word: str
    start: float | None = Field(
        description="Seconds into the audio; null where the model family gives no timing."
    )
    end: float | None
    confidence: float = Field(
        description="How sure the model is of the word, 0 to 1 (calibrated per version)."
    )


class Prediction(BaseModel):
    transcript: str
    prediction_id: str = Field(description="What feedback names later (a UUIDv7: its time is in it).")
    model_version: str | None = Field(
        description="The registered version that answered; null unless `serving.reveal_version`."
    )
    confidence: float | None = Field(
        None,
        description="With `parameters.word_confidence`: how sure the model is of its least sure "
        "word; null without words.",
    )
    words: list[PredictedWord] | None = Field(None, description="With `parameters.word_confidence`.")


class PredictResponse(BaseModel):
    """One prediction per instance, in order."""

    predictions: list[Prediction]


class Health(BaseModel):
    status: str
    family: str = Field(description="The model family: seq2seq or ctc.")
    model_version: str | None
    capture: dict[str, Any] | None = Field(description="The capture writer's counters; null without capture.")
