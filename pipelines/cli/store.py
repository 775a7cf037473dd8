"""`store …`: looking after the error store."""

from __future__ import annotations

import typer

from flywheel_pipelines.cli.common import (
    ConfigOpt,
    JsonOpt,
    console,
    load,
    print_json,
)

__all__ = ["store_app"]


store_app = typer.Typer(no_args_is_help=True, help="Look after the error store.")


@store_app.command("compact")
def store_compact(config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """Merge each past hour's small files into one (safe beside serving writers and readers)."""
    from stt_flywheel.data.error_store import open_error_store

    result = open_error_store(load(config, reads_state=True)).compact()
    if json:
        print_json(result.as_dict())
        return
    console.print(
        f"compacted {result.partitions} partitions: {result.files_in} files into {result.files_out}, "
        f"{result.rows_in} rows into {result.rows_out}"
    )
