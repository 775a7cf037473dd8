"""Google Cloud: the project, Vertex AI's services and the accounts they run as."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from stt_flywheel.config.base import Strict

__all__ = ["IdentitySettings", "VertexSettings"]


class VertexSettings(Strict):
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
    experiment: str | None = Field(
        None,
        description="Vertex AI Experiments experiment each run that trains is logged to (parameters, "
        "validation and suite metrics, its dataset and model); unset: none.",
    )
    monitoring_api_endpoint: str | None = Field(
        None,
        description="Override of the Cloud Monitoring API endpoint (gRPC, host:port); an http://host:port one (a local fake) is reached in plaintext without credentials.",
    )
    retry_initial_s: float = Field(1.0, gt=0, description="First backoff after a 429 / 503 from the API.")
    retry_timeout_s: float = Field(300.0, gt=0, description="Give up retrying an API call after this long.")


SECRET_VERSION = re.compile(r"^projects/[^/]+/secrets/[A-Za-z0-9_-]{1,255}/versions/([0-9]+|latest)$")


class IdentitySettings(Strict):
    """Where the key that turns user ids into pseudonyms comes from (`FLYWHEEL_IDENTITY_KEY`
    wins over both)."""

    secret: str | None = Field(
        None,
        description="Secret Manager secret version holding the key, projects/P/secrets/S/versions/V "
        "(V a number or latest). Every process that needs the key reads it there: the pipeline's "
        "stages, the CLI, and the serving container on Vertex AI, which is given the name, never the "
        "key. Unset: the embedded default, a key made once in paths.root/identity.key (0600).",
    )
    secret_api_endpoint: str | None = Field(
        None,
        description="Override of the Secret Manager API endpoint (REST); an http:// one (a local fake) is reached without credentials.",
    )

    @field_validator("secret")
    @classmethod
    def _secret_version(cls, value: str | None) -> str | None:
        if value is not None and not SECRET_VERSION.match(value):
            raise ValueError(f"not a secret version name (projects/P/secrets/S/versions/V): {value!r}")
        return value
