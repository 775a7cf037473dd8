"""`forget`: carry out a person's deletion request."""

from __future__ import annotations

from typing import Annotated

import typer

from flywheel_pipelines.cli.common import ConfigOpt, JsonOpt, console, load, print_json

__all__ = ["forget_command"]


def forget_command(
    reason: Annotated[
        str, typer.Option(help="Why (the request's reference): kept in the audit log.", show_default=False)
    ],
    user: Annotated[
        str | None,
        typer.Option(help="The user id the application sends as `user` (hashed here, never kept)."),
    ] = None,
    prediction_id: Annotated[
        list[str] | None, typer.Option("--prediction-id", help="A prediction to forget (repeat for more).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Count what would go; change nothing.")] = False,
    propose_retraining: Annotated[
        bool,
        typer.Option(
            help="When a registered version learnt from them, propose a run that trains again without "
            "them from the newest version that did not (approved with `stt-flywheel approve`)."
        ),
    ] = False,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """Forget a person: their predictions, feedback events, captured audio (unless another user's
    prediction holds the same bytes) and quarantined lines leave the error store; a tombstone (hashed)
    keeps them out of later ingests, compactions and datasets; the registered versions that learnt
    from them are named. A rerun of the same request finishes one that was interrupted."""
    from datetime import UTC, datetime

    from stt_flywheel.run.forget import forget

    cfg = load(config, reads_state=True)
    result = forget(
        cfg,
        user=user,
        prediction_ids=prediction_id or [],
        reason=reason,
        now=datetime.now(UTC),
        dry_run=dry_run,
        propose_retraining=propose_retraining,
    )
    if json:
        print_json(result.as_dict())
        return
    c = result.counts
    verb = "would remove" if dry_run else "removed"
    console.print(
        f"request {result.request}: {verb} {c.predictions} predictions, {c.feedback_events} feedback events, "
        f"{c.quarantine_lines} quarantined lines and {c.audio_objects} audio objects "
        f"({c.files_rewritten} files rewritten)",
        highlight=False,
    )
    if result.learnt_by:
        versions = ", ".join(f"v{v}" for v in result.learnt_by)
        console.print(
            f"registered versions that learnt from them: {versions} (retrain without them to unlearn)"
        )
    else:
        console.print("no registered version learnt from them")
    if result.retraining:
        p = result.retraining
        start = p["dataset"]["start_from_version"]
        console.print(
            f"proposed {p['id']}: retrain from {f'v{start}' if start else 'the base model'} without them "
            f"(`stt-flywheel approve {p['id']}`; it lapses at {p['expires_at'][:16]})",
            highlight=False,
        )
    elif propose_retraining and result.learnt_by:
        console.print("with --dry-run nothing is proposed", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
