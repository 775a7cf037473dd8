"""The SDK pointed at the project (or a local stand-in), calls retried on quota and unavailability,
and label values as Vertex AI accepts them."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

from stt_flywheel.config import VertexSettings
from stt_flywheel.deployment.registry import RegistryError

__all__ = ["init_vertex", "iso", "label_value", "retrying"]

T = TypeVar("T")


def init_vertex(settings: VertexSettings, staging_bucket: str | None = None) -> None:
    """Point the SDK at the project; an `api_endpoint` override (a local fake) is reached over REST
    without credentials."""
    from google.cloud import aiplatform

    if not settings.project:
        raise RegistryError("vertex.project is not set")
    kwargs: dict[str, Any] = {"project": settings.project, "location": settings.location}
    if settings.api_endpoint:
        kwargs["api_endpoint"] = settings.api_endpoint
        kwargs["api_transport"] = "rest"
        if settings.api_endpoint.startswith("http://"):
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
    if staging_bucket:
        kwargs["staging_bucket"] = staging_bucket
    aiplatform.init(**kwargs)


def retrying(settings: VertexSettings) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Retry quota (429) and availability errors with exponential backoff; map the rest to RegistryError."""
    from google.api_core import exceptions, retry

    policy = retry.Retry(
        predicate=retry.if_exception_type(
            exceptions.TooManyRequests, exceptions.ResourceExhausted, exceptions.ServiceUnavailable
        ),
        initial=settings.retry_initial_s,
        maximum=30.0,
        multiplier=2.0,
        timeout=settings.retry_timeout_s,
    )

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> T:
            try:
                return policy(fn)(*args, **kwargs)
            except exceptions.GoogleAPICallError as exc:
                raise RegistryError(f"Vertex AI refused {fn.__name__}: {exc.message}") from exc

        return call

    return wrap


def label_value(value: Any) -> str:
    """A Vertex label value: lowercase `[a-z0-9_-]`, at most 63 characters."""
    if isinstance(value, float):
        value = f"{value:.4f}".replace("-", "m").replace(".", "_")
    text = re.sub(r"[^a-z0-9_-]", "-", str(value).lower())
    return text[:63]


def iso(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
