"""The configured registry and endpoint: embedded (SQLite + serving processes) or Vertex AI."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.identity import load_identity
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
    Vertex AI the container takes it from its own environment, never from the model's spec."""
    spill = config.capture.spill_dir or config.paths.root / "capture-spill"

    def env(version: int | str) -> dict[str, str]:
        embedded = config.deploy.backend != "vertex" and config.capture.enabled
        return capture_env(
            config.paths.error_store,
            config.capture,
            version=version,
            endpoint=config.deploy.endpoint_name,
            spill_dir=spill / f"v{version}",
            limits=config.serving,
            identity=load_identity(config.paths.root) if embedded else None,
        )

    return env
