"""`errors …`: combined records in (a prediction with its correction or flag), stored predictions out."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer

from flywheel_pipelines.cli.common import (
    ConfigOpt,
    SourceArg,
    load,
    parse_when,
    report_ingest,
)

__all__ = ["errors_app"]


errors_app = typer.Typer(no_args_is_help=True, help="Feed the error store.")


@errors_app.command("ingest")
def errors_ingest(
    source: SourceArg,
    config: ConfigOpt = None,
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate and append combined transcript records (JSONL); invalid lines are quarantined with a
    reason. A source with no valid line is refused (exit 1)."""
    from stt_flywheel.data.error_store import open_error_store

    store = open_error_store(load(config))
    result = store.ingest_file(source)
    counts = result.as_dict()
    counts["summary"] = (
        f"read {result.read}: accepted {result.accepted}, duplicates {result.duplicates}, "
        f"quarantined {len(result.quarantined)}"
    )
    report_ingest(source, counts, result.quarantined, result.accepted, json, store.root)


@errors_app.command("export")
def errors_export(
    config: ConfigOpt = None,
    since: Annotated[
        str | None, typer.Option(help="Only predictions made at or after this time (ISO; UTC if no zone).")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Only this model version's predictions.")] = None,
    quarantine: Annotated[bool, typer.Option("--quarantine", help="Export the quarantine instead.")] = False,
) -> None:
    """Stream stored predictions as JSONL, each with its latest feedback (or the quarantine)."""
    from stt_flywheel.data.error_store import open_error_store

    start = parse_when(since)
    store = open_error_store(load(config, reads_state=True))
    rows = store.export_quarantine() if quarantine else store.export(since=start, version=version)
    out = sys.stdout.buffer
    try:
        for row in rows:
            out.write(orjson.dumps(row, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n")
        out.flush()
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        sys.stderr.close()
