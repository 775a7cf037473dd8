"""`store …`: looking after the error store."""

from __future__ import annotations

from typing import Annotated

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
        f"{result.rows_in} rows into {result.rows_out}; {result.index_files} user index files merged"
    )


@store_app.command("index")
def store_index(config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """Build the user index of a store written before it existed (once, after an upgrade): which
    hours hold whose rows, so that `forget` reads only those. Safe beside writers."""
    from stt_flywheel.data.error_store import open_error_store
    from stt_flywheel.data.error_store.layout import INDEX_COMPLETE

    store = open_error_store(load(config, reads_state=True))
    if store.store.read(INDEX_COMPLETE) is not None:
        if json:
            print_json({"predictions": 0, "feedback": 0, "shared_audio": 0})
            return
        console.print("the user index is complete already: every writer keeps it")
        return
    counts = store.build_index()
    if json:
        print_json(counts)
        return
    console.print(
        f"indexed {counts['predictions']} predictions and {counts['feedback']} feedback events; "
        f"{counts['shared_audio']} audio objects named more than once; forget now reads only a person's hours",
        highlight=False,
    )


@store_app.command("retain")
def store_retain(
    config: ConfigOpt = None,
    dry_run: Annotated[bool, typer.Option(help="Count what is past its days; delete nothing.")] = False,
    json: JsonOpt = False,
) -> None:
    """Delete what is past its `retention.*` days: the store's partitions and audio, datasets, run
    reports and pipeline outputs (those a registered model version names stay)."""
    from datetime import UTC, datetime

    from stt_flywheel.run.retention import retain

    cfg = load(config, reads_state=True)
    result = retain(cfg, datetime.now(UTC), dry_run=dry_run)
    if json:
        print_json(result.as_dict())
        return
    if not result.deleted:
        console.print("nothing to do: no retention.* days are set (null keeps everything)")
        return
    verb = "would delete" if dry_run else "deleted"
    for kind, count in result.deleted.items():
        kept = result.kept.get(kind, 0)
        note = (
            f" (kept {kept} past their days: a younger prediction or a registered version names them)"
            if kept
            else ""
        )
        console.print(f"{kind}: {verb} {count}{note}", highlight=False)


@store_app.command("lifecycle")
def store_lifecycle(config: ConfigOpt = None) -> None:
    """Print the error store's retention as a Cloud Storage lifecycle configuration, for
    `gcloud storage buckets update gs://BUCKET --lifecycle-file=FILE`."""
    from stt_flywheel.run.retention import lifecycle_rules

    print_json(lifecycle_rules(load(config)))
