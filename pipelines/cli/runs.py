"""`runs …`: every pipeline run's outcome, and any run's summary."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from flywheel_pipelines.cli.common import (
    ConfigOpt,
    JsonOpt,
    console,
    load,
    print_json,
)

__all__ = ["runs_app"]


runs_app = typer.Typer(
    no_args_is_help=True, help="Pipeline runs: every run's outcome, and any run's summary."
)


@runs_app.command("list")
def runs_list(
    config: ConfigOpt = None,
    json: JsonOpt = False,
    limit: Annotated[int, typer.Option(min=1, help="The newest this many runs.")] = 20,
) -> None:
    """Every run that got past its trigger check, newest first, with what each stage decided."""
    from stt_flywheel.run.ledger import STAGES, list_runs
    from stt_flywheel.run.summary import run_outcome

    cfg = load(config, reads_state=True)
    runs = [run_outcome(cfg, r) for r in list_runs(cfg)[-limit:]][::-1]
    if json:
        print_json(runs)
        return
    if not runs:
        console.print(f"no runs under {cfg.paths.reports}")
        return
    table = Table(title=f"Runs under {cfg.paths.reports}")
    table.add_column("run", no_wrap=True)
    table.add_column("started (UTC)", no_wrap=True)
    for col in STAGES:
        table.add_column(col)
    for r in runs:
        stages = dict(r.stages)
        if stages["trigger"]:  # its first reason says enough here; `runs show` has them all
            stages["trigger"] = stages["trigger"].split(";")[0]
        started = str(r.checked_at or "–")[:16].replace("T", " ")
        table.add_row(r.run_id, started, *(stages[s] or "–" for s in STAGES))
    console.print(table)


@runs_app.command("show")
def runs_show(
    run: Annotated[
        str,
        typer.Argument(
            metavar="RUN",
            help="A run id as `runs list` shows it, a prefix that names one run, or `latest`.",
            show_default=False,
        ),
    ],
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """One run's own story, from its ledger: trigger, dataset, training, both verdicts, what its
    deploy stage left serving, and where its reports are."""
    from flywheel_pipelines.views import print_summary
    from stt_flywheel.run.summary import resolve_run, summarize_run

    cfg = load(config, reads_state=True)
    summary = summarize_run(cfg, resolve_run(cfg, run))
    if json:
        print_json(summary)
        return
    print_summary(summary, console)
