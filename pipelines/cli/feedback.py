"""`feedback …`: late feedback on served predictions."""

from __future__ import annotations

from typing import Annotated

import typer

from flywheel_pipelines.cli.common import (
    ConfigOpt,
    JsonOpt,
    SourceArg,
    load,
    report_ingest,
)

__all__ = ["feedback_app"]


feedback_app = typer.Typer(no_args_is_help=True, help="Late feedback on served predictions.")


@feedback_app.command("ingest")
def feedback_ingest(
    source: SourceArg,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """Append feedback events (JSONL: prediction_id, corrected_text or flagged, event_time, source);
    invalid lines are quarantined with a reason, and the events' states (applied, superseded,
    duplicate, pending) are reported. A source with no valid line is refused (exit 1)."""
    from stt_flywheel.data.error_store import open_error_store

    store = open_error_store(load(config))
    result = store.ingest_feedback_file(source)
    counts = result.as_dict()
    states = ", ".join(f"{k} {v}" for k, v in counts["states"].items())
    counts["summary"] = (
        f"read {result.read}: accepted {result.accepted} ({states}), quarantined {len(result.quarantined)}"
    )
    report_ingest(source, counts, result.quarantined, result.accepted, json, store.root)


@feedback_app.command("serve")
def feedback_serve(
    config: ConfigOpt = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: feedback.service.host).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port (default: PORT, else feedback.service.port)."),
    ] = None,
) -> None:
    """Take feedback over HTTP: POST /v1/feedback (one event, a batch, or a Pub/Sub push
    envelope), authenticated by a bearer key or a Google ID token (feedback.service.*), into the
    error store as `feedback ingest` does. Runs on Cloud Run from the base image."""
    from stt_flywheel.deployment.feedback import run_feedback_service

    run_feedback_service(load(config), host=host, port=port)
