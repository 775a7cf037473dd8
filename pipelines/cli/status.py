"""`status`: the whole system in one view."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from flywheel_pipelines.cli.common import (
    ConfigOpt,
    console,
    load,
    print_json,
)

if TYPE_CHECKING:
    pass

__all__ = ["status"]


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


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
