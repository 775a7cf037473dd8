"""`registry …`: versions, aliases, traffic, the audit log, rollback and promotion by hand."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from flywheel_pipelines.cli.common import (
    ConfigOpt,
    JsonOpt,
    console,
    load,
    print_json,
)
from stt_flywheel.deployment.registry import RegistryError

__all__ = ["registry_app"]


registry_app = typer.Typer(no_args_is_help=True, help="Inspect and roll back the model registry.")


@registry_app.command("list")
def registry_list(
    config: ConfigOpt = None, json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """List registered versions with their aliases and headline metrics."""
    from stt_flywheel.deployment.backends import open_deployment

    cfg = load(config, reads_state=True)
    registry, endpoint = open_deployment(cfg)
    versions = registry.versions()
    traffic = endpoint.traffic()
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


@registry_app.command("adopt")
def registry_adopt(config: ConfigOpt = None) -> None:
    """Register `base_model` (what serves today) as version 1 with the alias `default`, and deploy
    it to `deploy.endpoint_name` with all the traffic. An endpoint that already serves another
    model keeps it deployed at 0 %. A registry that has a default already is left as it is."""
    from stt_flywheel.deployment.backends import open_deployment
    from stt_flywheel.run.stages import bootstrap_registry

    cfg = load(config, reads_state=True)
    registry, _ = open_deployment(cfg)
    existing = registry.resolve("default")
    version = bootstrap_registry(cfg)
    if existing is not None:
        console.print(
            f"the registry already has a default, v{existing.version}: nothing adopted", highlight=False
        )
        return
    console.print(
        f"v{version.version} registered from {cfg.base_model} and deployed to {cfg.deploy.endpoint_name} (100 %)",
        highlight=False,
    )


@registry_app.command("rollback")
def registry_rollback(
    config: ConfigOpt = None,
    reason: Annotated[str, typer.Option(help="Recorded in the audit log.")] = "manual rollback",
) -> None:
    """End a canary in flight, or restore the `previous` version as `default` with all endpoint traffic."""
    from stt_flywheel.deployment.backends import open_deployment
    from stt_flywheel.deployment.strategies import rollback

    cfg = load(config, reads_state=True)
    registry, endpoint = open_deployment(cfg)
    outcome = rollback(registry, endpoint, reason)
    console.print(
        f"rolled back: default is v{outcome.version}, the endpoint serves it (v{outcome.replaced} out)"
    )


@registry_app.command("promote-canary")
def registry_promote_canary(
    config: ConfigOpt = None,
    reason: Annotated[str, typer.Option(help="Recorded in the audit log.")] = "canary promoted",
) -> None:
    """Give the canary (alias `candidate`) all traffic, undeploy the rest, make it `default`."""
    from stt_flywheel.deployment.backends import open_deployment
    from stt_flywheel.deployment.strategies import promote_canary

    cfg = load(config, reads_state=True)
    registry, endpoint = open_deployment(cfg)
    outcome = promote_canary(registry, endpoint, reason)
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


@registry_app.command("audit")
def registry_audit(
    config: ConfigOpt = None,
    json: JsonOpt = False,
    limit: Annotated[int, typer.Option(min=1, help="The newest this many entries.")] = 50,
    action: Annotated[
        str | None, typer.Option(help="Only this action (e.g. promote, rollback, monitor_canary).")
    ] = None,
) -> None:
    """The registry's audit log, newest first: registrations, aliases, deploys, traffic, promotions,
    rollbacks and the monitor's decisions, each with its reason."""
    from stt_flywheel.deployment.backends import open_registry

    entries = open_registry(load(config, reads_state=True)).audit_log()
    if action is not None:
        entries = [e for e in entries if e.action == action]
    entries = entries[-limit:][::-1]
    if json:
        print_json([e.model_dump() for e in entries])
        return
    table = Table(title="Registry audit log")
    for col in ("at", "action", "version", "what"):
        table.add_column(col)
    for e in entries:
        d = e.detail
        what = (
            d.get("summary")
            or d.get("reason")
            or ", ".join(f"{k} {v}" for k, v in d.items() if k != "evaluation")
        )
        table.add_row(
            e.at.isoformat()[:19],
            e.action,
            str(e.version if e.version is not None else "–"),
            str(what)[:200],
        )
    console.print(table)
