"""`registry …` and `serve`: versions, aliases, traffic, promotion and rollback; the prediction server."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table

from flywheel_pipelines.cli.common import ConfigOpt, console, load, print_json
from stt_flywheel.deployment.registry import RegistryError

__all__ = ["registry_app", "serve"]

registry_app = typer.Typer(no_args_is_help=True, help="Inspect and roll back the model registry.")


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
    from stt_flywheel.deployment.serving.contract import ServingSettings

    env = dict(os.environ)
    if config is not None or (model_dir is None and not env.get("AIP_STORAGE_URI")):
        cfg = load(config, reads_state=True)
        if model_dir is None and not env.get("AIP_STORAGE_URI"):
            default = open_registry(cfg).resolve("default")
            if default is None:
                raise RegistryError("the registry has no default version to serve; pass --model-dir")
            model_dir = default.uri
            model_version = model_version or str(default.version)
        env.update(serving_capture(cfg)(model_version or "unknown"))
    elif model_version is not None:
        env["FLYWHEEL_MODEL_VERSION"] = model_version
    run_server(ServingSettings.from_env(env, storage_uri=model_dir, port=port, host=host))


@registry_app.command("list")
def registry_list(
    config: ConfigOpt = None, json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """List registered versions with their aliases and headline metrics."""
    from stt_flywheel.deployment.backends import open_endpoint, open_registry

    cfg = load(config, reads_state=True)
    registry = open_registry(cfg)
    versions = registry.versions()
    traffic = open_endpoint(cfg, registry).traffic()
    if json:
        print_json(
            {"versions": [v.as_dict() for v in versions], "aliases": registry.aliases(), "traffic": traffic}
        )
        return
    table = Table(title=f"{registry.model} ({registry.location})")
    for col in ("version", "aliases", "traffic %", "dataset", "held-out WER", "created"):
        table.add_column(col)
    for v in versions:
        wer = v.metrics.get("wer")
        table.add_row(
            str(v.version),
            ", ".join(v.aliases),
            str(traffic.get(v.version, 0)),
            v.dataset_version or "—",
            f"{wer:.3f}" if isinstance(wer, float) else "—",
            v.created_at[:19],
        )
    console.print(table)


@registry_app.command("rollback")
def registry_rollback(
    config: ConfigOpt = None,
    reason: Annotated[str, typer.Option(help="Recorded in the audit log.")] = "manual rollback",
) -> None:
    """End a canary in flight, or restore the `previous` version as `default` with all endpoint traffic."""
    from stt_flywheel.deployment.backends import open_endpoint, open_registry
    from stt_flywheel.deployment.strategies import rollback

    cfg = load(config, reads_state=True)
    registry = open_registry(cfg)
    outcome = rollback(registry, open_endpoint(cfg, registry), reason)
    console.print(
        f"rolled back: default is v{outcome.version}, the endpoint serves it (v{outcome.replaced} out)"
    )


@registry_app.command("promote-canary")
def registry_promote_canary(
    config: ConfigOpt = None,
    reason: Annotated[str, typer.Option(help="Recorded in the audit log.")] = "canary promoted",
) -> None:
    """Give the canary (alias `candidate`) all traffic, undeploy the rest, make it `default`."""
    from stt_flywheel.deployment.backends import open_endpoint, open_registry
    from stt_flywheel.deployment.strategies import promote_canary

    cfg = load(config, reads_state=True)
    registry = open_registry(cfg)
    outcome = promote_canary(registry, open_endpoint(cfg, registry), reason)
    console.print(f"default is v{outcome.version} (was v{outcome.replaced}) and serves all traffic")


@registry_app.command("promote")
def registry_promote(
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit log (required).")],
    version: Annotated[int | None, typer.Option(help="A registered version.")] = None,
    run: Annotated[
        str | None,
        typer.Option(help="A pipeline run id: register its candidate, with its evaluation, and promote it."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(help="Promote even though the evaluation rejected it (recorded with what it overrode)."),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Promote a version (or a run's candidate) to `default` and send it all endpoint traffic."""
    from stt_flywheel.run.promotion import promote_by_hand

    if (version is None) == (run is None):  # a usage mistake is named before any state is read
        raise RegistryError("give exactly one of --version and --run")
    outcome = promote_by_hand(
        load(config, reads_state=True), reason=reason, version=version, run=run, force=force
    )
    console.print(f"default is v{outcome.version} (was v{outcome.replaced}); {outcome.reasons[0]}")
