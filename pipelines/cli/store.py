"""`store …`: looking after the error store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from flywheel_pipelines.cli.common import (
    ConfigOpt,
    console,
    load,
    print_json,
)

if TYPE_CHECKING:
    pass

__all__ = ["store_app"]


store_app = typer.Typer(no_args_is_help=True, help="Look after the error store.")


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@store_app.command("compact")
def store_compact(config: ConfigOpt = None, json: JsonFlag = False) -> None:
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
