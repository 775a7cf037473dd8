"""`schedule …`: scheduled runs, as Vertex AI schedules or Cloud Scheduler jobs."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from flywheel_pipelines.cli.common import (
    PipelineName,
    PipelineOpt,
    VertexConfigOpt,
    console,
    load,
)
from flywheel_pipelines.cli.submit import submission, template_now

__all__ = ["schedule_app"]


schedule_app = typer.Typer(
    no_args_is_help=True, help="Scheduled runs: Vertex AI schedules or Cloud Scheduler jobs."
)


class ScheduleMode(StrEnum):
    vertex = "vertex"
    scheduler = "scheduler"


ModeOpt = Annotated[
    ScheduleMode,
    typer.Option("--mode", help="vertex: a Vertex AI schedule; scheduler: a Cloud Scheduler HTTP job."),
]


NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Schedule name.")]


def _print_schedules(rows: list) -> None:
    table = Table(title="stt-flywheel schedules")
    for column in ("mode", "name", "cron", "state", "target"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.mode, r.name, r.cron, r.state, r.target)
    console.print(table)


@schedule_app.command("create")
def schedule_create(
    config: VertexConfigOpt,
    name: Annotated[str, typer.Option(help="Schedule name (Vertex display name or Cloud Scheduler job id).")],
    cron: Annotated[str, typer.Option(help="Cron expression, e.g. '0 3 * * *'.")],
    config_uri: Annotated[str, typer.Option(help="gs:// URI of the config the pipeline's tasks read.")],
    pipeline_root: Annotated[str, typer.Option(help="gs:// pipeline root for the runs' artifacts.")],
    template: Annotated[
        str | None, typer.Option(help="Published template URL or compiled YAML (default: compile now).")
    ] = None,
    base_image: Annotated[str | None, typer.Option(help="Base image by digest, when compiling now.")] = None,
    trainer_image: Annotated[
        str | None, typer.Option(help="Trainer image by digest, when compiling now.")
    ] = None,
    mode: ModeOpt = ScheduleMode.vertex,
    time_zone: Annotated[str, typer.Option(help="IANA time zone of the cron expression.")] = "Etc/UTC",
    service_account: Annotated[
        str | None,
        typer.Option(help="Service account the runs run as (default: vertex.pipeline_service_account)."),
    ] = None,
    scheduler_service_account: Annotated[
        str | None,
        typer.Option(
            help="scheduler mode: account whose OAuth token creates the runs (default: vertex.scheduler_service_account, else the runs' account)."
        ),
    ] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="Pipeline parameter key=value.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Label key=value on each run.")] = None,
    replace: Annotated[bool, typer.Option(help="Replace a schedule of the same name.")] = False,
    pipeline: PipelineOpt = PipelineName.flywheel,
) -> None:
    """Run a pipeline on a cron schedule (never two runs of it at once): the flywheel (e.g. daily),
    or the monitor (e.g. hourly: '0 * * * *')."""
    from flywheel_pipelines.cloud.schedules import create_schedule

    cfg = load(config)
    info = create_schedule(
        cfg,
        submission(
            cfg,
            template_now(template, base_image, trainer_image, pipeline),
            config_uri,
            pipeline_root,
            service_account,
            param,
            label,
            pipeline,
        ),
        name=name,
        cron=cron,
        time_zone=time_zone,
        mode=mode.value,  # type: ignore[arg-type]
        replace=replace,
        scheduler_service_account=scheduler_service_account,
    )
    console.print(f"created {info.resource} ({info.cron}, {info.state})", highlight=False)


@schedule_app.command("list")
def schedule_list(config: VertexConfigOpt, mode: ModeOpt = ScheduleMode.vertex) -> None:
    """List this project's stt-flywheel schedules."""
    from flywheel_pipelines.cloud.schedules import list_schedules

    _print_schedules(list_schedules(load(config), mode.value))  # type: ignore[arg-type]


def _schedule_action(config: str, mode: ScheduleMode, name: str, action: str) -> None:
    from flywheel_pipelines.cloud.schedules import set_schedule_state

    info = set_schedule_state(load(config), mode.value, name, action)  # type: ignore[arg-type]
    console.print(f"{action}: {name}" + (f" ({info.state})" if info else ""), highlight=False)


@schedule_app.command("pause")
def schedule_pause(name: NameArg, config: VertexConfigOpt, mode: ModeOpt = ScheduleMode.vertex) -> None:
    """Pause a schedule (a run in progress goes on)."""
    _schedule_action(config, mode, name, "pause")


@schedule_app.command("resume")
def schedule_resume(name: NameArg, config: VertexConfigOpt, mode: ModeOpt = ScheduleMode.vertex) -> None:
    """Resume a paused schedule (missed ticks are not caught up)."""
    _schedule_action(config, mode, name, "resume")


@schedule_app.command("delete")
def schedule_delete(name: NameArg, config: VertexConfigOpt, mode: ModeOpt = ScheduleMode.vertex) -> None:
    """Delete a schedule."""
    _schedule_action(config, mode, name, "delete")


@schedule_app.command("run")
def schedule_run(name: NameArg, config: VertexConfigOpt, mode: ModeOpt = ScheduleMode.scheduler) -> None:
    """Fire a Cloud Scheduler job now (scheduler mode only)."""
    _schedule_action(config, mode, name, "run")
