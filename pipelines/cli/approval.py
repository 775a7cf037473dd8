"""`approve` and `proposals list`: a person says yes before a run spends a GPU
(`trigger.require_approval`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from flywheel_pipelines.cli.common import ConfigOpt, JsonOpt, console, load, print_json

__all__ = ["approve", "proposals_app"]

proposals_app = typer.Typer(
    no_args_is_help=True, help="Training proposals waiting for approval (trigger.require_approval)."
)


def approve(
    proposal: Annotated[
        str,
        typer.Argument(
            metavar="PROPOSAL", help="The proposal's id (`proposals list`, `status`).", show_default=False
        ),
    ],
    config: ConfigOpt = None,
    reason: Annotated[
        str, typer.Option(help="Why; recorded with the approval and in the audit log.")
    ] = "approved",
    json: JsonOpt = False,
) -> None:
    """Approve a training proposal: the next run (scheduled or submitted) trains on it."""
    from stt_flywheel.deployment.backends import open_registry
    from stt_flywheel.run.approval import approve as approve_proposal
    from stt_flywheel.run.approval import who
    from stt_flywheel.storage.objectstore import open_store

    cfg = load(config, reads_state=True)
    approved = approve_proposal(open_store(cfg.paths.state), proposal, reason, by=who())
    open_registry(cfg).record(
        "approve",
        None,
        {"proposal": approved.id, "reason": reason, "by": (approved.approval or {}).get("by")},
    )
    if json:
        print_json(approved.as_dict())
        return
    console.print(
        f"approved {approved.id} (until {approved.expires_at[:16]}); the next run whose trigger fires trains on it",
        highlight=False,
    )


@proposals_app.command("list")
def proposals_list(config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """Every training proposal, newest first: pending, approved, trained or expired."""
    from stt_flywheel.run.approval import list_proposals
    from stt_flywheel.storage.objectstore import open_store

    cfg = load(config, reads_state=True)
    now = datetime.now(UTC)
    proposals = list_proposals(open_store(cfg.paths.state))
    if json:
        print_json([p.as_dict(now) for p in proposals])
        return
    if not proposals:
        console.print("no proposals (with trigger.require_approval, a fired trigger makes one)")
        return
    table = Table(title="Training proposals")
    for col in (
        "proposal",
        "state",
        "made",
        "lapses",
        "what",
        "machine",
        "cost",
        "approved by",
        "trained by",
    ):
        table.add_column(col)
    for p in proposals:
        table.add_row(
            p.id,
            p.state(now),
            p.created_at[:16],
            p.expires_at[:16],
            p.what,
            p.machine.get("accelerator", "–"),
            p.cost_line,
            (p.approval or {}).get("by", "–"),
            (p.claimed or {}).get("run_id", "–"),
        )
    console.print(table)
