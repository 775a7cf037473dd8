"""`monitor`: one look at live quality, a decision, and the action it calls for."""

from __future__ import annotations

import math
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from flywheel_pipelines.cli.common import ConfigOpt, JsonOpt, console, load, print_json

__all__ = ["monitor", "print_decision"]


def _n(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) and math.isfinite(x) else "–"


def print_decision(d: dict[str, Any], console: Console = console) -> None:
    """A decision as a person reads it: the verdict, both arms, each test with its interval."""
    colour = {"NOTICE": "green", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "red"}.get(
        d["severity"], ""
    )
    head = f"[{colour}]{d['summary']}[/]" if colour else d["summary"]
    console.print(f"[bold]Monitor[/] ({d['severity']}, {d['kind']}): {head}")
    if d["arms"]:
        table = Table(
            title=f"Live evidence, settled traffic {d['window']['start'][:19]} → {d['window']['end'][:19]}"
        )
        for col in (
            "arm",
            "version",
            "requests",
            "labelled",
            "corrected",
            "correction rate",
            "scored",
            "live WER",
        ):
            table.add_column(col)
        for name, a in d["arms"].items():
            table.add_row(
                name,
                f"v{a['version']}",
                str(a["requests"]),
                str(a["labelled"]),
                str(a["corrected"]),
                _n(a["correction_rate"]),
                str(a["scored"]),
                _n(a["wer"]),
            )
        console.print(table)
    for reason in d["reasons"]:
        console.print(f"  - {reason}", highlight=False)
    before = ", ".join(f"v{v} {p} %" for v, p in sorted(d["traffic_before"].items()))
    after = ", ".join(f"v{v} {p} %" for v, p in sorted(d["traffic_after"].items()))
    verb = "acted" if d["acted"] else ("dry run, nothing changed" if d["dry_run"] else "no action")
    console.print(f"  traffic {before} → {after} ({verb})", highlight=False)
    if d.get("alert"):
        console.print(f"  alert: {d['alert']}", highlight=False)
    if d.get("report"):
        console.print(f"  report: {d['report']}", highlight=False)


def monitor(
    config: ConfigOpt = None,
    json: JsonOpt = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Decide and report, but change no traffic and record nothing.")
    ] = False,
    log_line: Annotated[
        bool,
        typer.Option(
            "--log-line", help="Also write the structured log line (Cloud Logging's format) to stderr."
        ),
    ] = False,
) -> None:
    """Look once: decide the canary in flight from live evidence (promote, next step, roll back,
    keep collecting), or watch the default against its record; act, record, report and alert."""
    from stt_flywheel.monitoring.monitor import run_monitor

    decision = run_monitor(
        load(config, reads_state=True), act=not dry_run, log_stream=sys.stderr if log_line else None
    )
    out = {k: v for k, v in decision.as_dict().items() if k != "history"}
    if json:
        print_json(out)
    else:
        print_decision(out)
