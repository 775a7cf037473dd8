"""`feedback ingest`, `errors export`, `store compact` and `status`: the loop after deployment."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from flywheel_pipelines.cli.common import ConfigOpt, SourceArg, console, load, print_json, report_ingest

__all__ = ["feedback_app", "status", "store_app"]

feedback_app = typer.Typer(no_args_is_help=True, help="Late feedback on served predictions.")
store_app = typer.Typer(no_args_is_help=True, help="Look after the error store.")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _when(value: str | None) -> datetime | None:
    """An ISO date or time; one without a zone is UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"not an ISO date or time: {value!r} (e.g. 2026-11-27 or 2026-11-27T10:00Z)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@feedback_app.command("ingest")
def feedback_ingest(
    source: SourceArg,
    config: ConfigOpt = None,
    json: JsonFlag = False,
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

    start = _when(since)
    store = open_error_store(load(config, reads_state=True))
    rows = store.export_quarantine() if quarantine else store.export(since=start, version=version)
    out = sys.stdout.buffer
    try:
        for row in rows:
            out.write(orjson.dumps(row, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n")
        out.flush()
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        sys.stderr.close()


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


def status(
    config: ConfigOpt = None,
    json: JsonFlag = False,
    html: Annotated[
        Path | None, typer.Option(help="Also write the view as one self-contained HTML page.")
    ] = None,
) -> None:
    """The whole system in one view: store, trigger, runs, versions with live quality, trends."""
    from stt_flywheel.monitoring.status import percent_interval, system_status
    from stt_flywheel.run.ledger import STAGES

    view = system_status(load(config, reads_state=True))
    if html is not None:
        from stt_flywheel.monitoring.status_page import write_status_page

        write_status_page(view, html)
    if json:
        print_json(view)
        return
    st = view["store"]
    fb = st["feedback_events"]
    console.print(f"[bold]Store[/] {st['root']}")
    console.print(
        f"  {st['predictions']} predictions; feedback events {fb['read']}: applied {fb['applied']}, "
        f"superseded {fb['superseded']}, duplicates {fb['duplicate']}, pending {fb['pending']}, "
        f"quarantined {fb['quarantined'] + fb['rejected_at_ingest']}; "
        f"{st['since_watermark']['feedback_events']} events since the watermark"
    )
    console.print(f"[bold]Trigger[/] {view['trigger']['summary']}")
    for proposal in view["proposals"]:
        console.print(
            f"[bold]Proposal[/] {proposal['id']} {proposal['state']} (lapses {proposal['expires_at'][:16]}): "
            f"{proposal['dataset'].get('corrected_cases')} corrected cases on {proposal['machine'].get('accelerator', '–')}"
            + ("" if proposal["approval"] else f" — `stt-flywheel approve {proposal['id']}`"),
            highlight=False,
        )
    monitor = view["monitor"]
    if monitor:
        console.print(
            f"[bold]Monitor[/] {monitor['at'][:19]}: {monitor['summary']} ({monitor['severity']})",
            highlight=False,
        )
    table = Table(title="Versions")
    for col in (
        "version",
        "aliases",
        "traffic %",
        "offline WER",
        "requests",
        "pending",
        "correction rate",
        "live WER",
    ):
        table.add_column(col)
    for v in view["registry"]["versions"]:
        live = v["live"] or {}
        offline = v["offline"].get("wer")
        table.add_row(
            str(v["version"]),
            ", ".join(v["aliases"]),
            str(v["traffic"] if v["traffic"] is not None else "–"),
            f"{offline:.3f}" if isinstance(offline, float) else "–",
            str(live.get("requests", 0)),
            str(live.get("pending", 0)),
            percent_interval(live.get("correction_rate")),
            percent_interval(live.get("wer")),
        )
    if view["registry"]["versions"]:
        console.print(table)
        console.print(f"[dim]{view['live']['selection_bias']}[/]")
    else:
        console.print("[bold]Versions[/] none registered yet (`stt-flywheel run` registers the base model)")
    runs = Table(title="Last runs")
    for col in ("run", *STAGES):
        runs.add_column(col)
    for r in view["runs"]:
        runs.add_row(r["run_id"], *(str(r["stages"][k] or "–") for k in STAGES))
    if view["runs"]:
        console.print(runs)
    else:
        console.print("[bold]Runs[/] none yet")
    if html is not None:
        console.print(f"wrote {html}")
