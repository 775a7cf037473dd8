"""`serve`: one model over HTTP with Vertex AI's custom-container contract."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from flywheel_pipelines.cli.common import (
    ConfigOpt,
    load,
)
from stt_flywheel.deployment.registry import RegistryError

__all__ = ["serve"]


def serve(
    model_dir: Annotated[
        str | None,
        typer.Option(help="Model directory (default: AIP_STORAGE_URI, else the registry's default)."),
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: AIP_HTTP_PORT, else 8080).")
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            help="Address to listen on (default: FLYWHEEL_HOST, else 127.0.0.1, this machine only; "
            "0.0.0.0 for every interface, as the serving image sets)."
        ),
    ] = None,
    model_version: Annotated[
        str | None,
        typer.Option(help="The version its answers are captured as (default: the registry version served)."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Serve a model over HTTP with Vertex AI's custom-container contract (AIP_* variables).

    With --config, every answer is captured into that config's error store (capture.*)."""
    from stt_flywheel.deployment.backends import open_registry, serving_capture
    from stt_flywheel.deployment.serving.app import run_server
    from stt_flywheel.deployment.serving.contract import MODEL_DIGEST_ENV, ServingSettings

    env = dict(os.environ)
    if config is not None or (model_dir is None and not env.get("AIP_STORAGE_URI")):
        cfg = load(config, reads_state=True)
        if model_dir is None and not env.get("AIP_STORAGE_URI"):
            registry = open_registry(cfg)
            default = registry.resolve("default")
            if default is None:
                raise RegistryError("the registry has no default version to serve; pass --model-dir")
            model_dir = default.uri
            model_version = model_version or str(default.version)
            if (digest := registry.digest(default.version)) is not None:
                env[MODEL_DIGEST_ENV] = digest
        env.update(serving_capture(cfg)(model_version or "unknown"))
    elif model_version is not None:
        env["FLYWHEEL_MODEL_VERSION"] = model_version
    run_server(ServingSettings.from_env(env, storage_uri=model_dir, port=port, host=host))
