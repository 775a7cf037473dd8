"""`feedback …`: late feedback on served predictions."""

from __future__ import annotations

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
