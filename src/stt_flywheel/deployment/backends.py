"""The configured registry and endpoint: embedded (SQLite + serving processes) or Vertex AI."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from stt_flywheel.config import ConfigError, FlywheelConfig
from stt_flywheel.data.identity import IDENTITY_SECRET_ENDPOINT_ENV, IDENTITY_SECRET_ENV, load_identity
from stt_flywheel.deployment.endpoint import LocalEndpoint
from stt_flywheel.deployment.protocols import Endpoint, Registry
from stt_flywheel.deployment.registry import LocalRegistry
from stt_flywheel.deployment.serving.contract import capture_env
from stt_flywheel.deployment.vertex import VertexEndpoint, VertexRegistry

__all__ = ["Deployment", "open_deployment", "open_endpoint", "open_registry", "serving_capture"]


class Deployment(NamedTuple):
    """The configured registry and the endpoint that serves its versions."""

    registry: Registry
    endpoint: Endpoint


def open_deployment(config: FlywheelConfig) -> Deployment:
    """The configured registry and its endpoint, opened together (the endpoint needs the registry)."""
    registry = open_registry(config)
    return Deployment(registry, open_endpoint(config, registry))


def open_registry(config: FlywheelConfig) -> Registry:
    """The configured registry: the embedded SQLite one, or Vertex AI Model Registry."""
    if config.deploy.backend == "vertex":
        return VertexRegistry(config, capture=serving_capture(config))
    return LocalRegistry(config.paths.registry_db, config.paths.models, config.deploy.model_name)


def open_endpoint(config: FlywheelConfig, registry: Registry | None = None) -> Endpoint:
    """The configured endpoint: the embedded one (served by `stt-flywheel serve`), or Vertex AI."""
    registry = registry or open_registry(config)
    if config.deploy.backend == "vertex":
        if not isinstance(registry, VertexRegistry):
            raise TypeError(
                f"a Vertex AI endpoint needs the Vertex AI registry, not {type(registry).__name__}"
            )
        return VertexEndpoint(config, registry)
    if not isinstance(registry, LocalRegistry):
        raise TypeError(f"the embedded endpoint needs the embedded registry, not {type(registry).__name__}")
    return LocalEndpoint(registry, config.deploy.endpoint_name, capture=serving_capture(config))


def serving_capture(config: FlywheelConfig) -> Callable[[int | str], dict[str, str]]:
    """The serving environment of one version: capture its traffic into the configured store.
    The embedded backend's serving processes get the identity key in their environment; on
    Vertex AI the container is given the name of the key's secret (`identity.secret`), never the
    key, which would show in the model's spec."""
    spill = config.capture.spill_dir or config.paths.root / "capture-spill"
    vertex = config.deploy.backend == "vertex" and config.capture.enabled  # the key comes from a secret

    def env(version: int | str) -> dict[str, str]:
        if vertex and not config.identity.secret:
            raise ConfigError(
                "serving on Vertex AI captures its users as pseudonyms under a key in Secret Manager: "
                "set identity.secret (or capture.enabled: false)"
            )
        out = capture_env(
            config.paths.error_store,
            config.capture,
            version=version,
            endpoint=config.deploy.endpoint_name,
            spill_dir=spill / f"v{version}",
            limits=config.serving,
            identity=None
            if vertex or not config.capture.enabled
            else load_identity(config.paths.root, settings=config.identity),
        )
        if vertex and config.identity.secret:
            out[IDENTITY_SECRET_ENV] = config.identity.secret
            if config.identity.secret_api_endpoint:
                out[IDENTITY_SECRET_ENDPOINT_ENV] = config.identity.secret_api_endpoint
        return out

    return env
