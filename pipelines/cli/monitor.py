"""`monitor`: one look at live quality, a decision, and the action it calls for."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from flywheel_pipelines.cli.common import ConfigOpt, JsonOpt, console, load, print_json
from flywheel_pipelines.views import print_decision

__all__ = ["monitor"]


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
        print_decision(out, console)
