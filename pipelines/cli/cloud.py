"""`submit`, `template …` and `schedule …`: the pipeline on Vertex AI."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from flywheel_pipelines.cli.common import PipelineName, PipelineOpt, VertexConfigOpt, console, load
from stt_flywheel.config import ConfigError, FlywheelConfig

if TYPE_CHECKING:
    from flywheel_pipelines.cloud.submit import Submission

__all__ = ["schedule_app", "submit", "template_app"]

template_app = typer.Typer(no_args_is_help=True, help="Published pipeline templates (Artifact Registry).")
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


def submit(
    config: VertexConfigOpt,
    config_uri: Annotated[str, typer.Option(help="gs:// URI of the config the pipeline's tasks read.")],
    pipeline_root: Annotated[str, typer.Option(help="gs:// pipeline root for the run's artifacts.")],
    template: Annotated[
        str | None, typer.Option(help="Compiled YAML or a published template URL (default: compile now).")
    ] = None,
    base_image: Annotated[str | None, typer.Option(help="Base image by digest, when compiling now.")] = None,
    trainer_image: Annotated[
        str | None, typer.Option(help="Trainer image by digest, when compiling now.")
    ] = None,
    service_account: Annotated[
        str | None,
        typer.Option(help="Service account of the run (default: vertex.pipeline_service_account)."),
    ] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="Pipeline parameter key=value.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Label key=value on the run.")] = None,
    caching: Annotated[bool, typer.Option(help="Let Vertex reuse cached task results.")] = False,
    job_id: Annotated[str | None, typer.Option(help="Job id (default: stt-flywheel-<time>).")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the run, printing task states as they change.")] = False,
    poll_s: Annotated[float, typer.Option(help="Seconds between polls with --wait.")] = 15.0,
    pipeline: PipelineOpt = PipelineName.flywheel,
) -> None:
    """Submit a pipeline (the flywheel, or the monitor) to Vertex AI Pipelines."""
    from flywheel_pipelines.cloud.submit import submit_pipeline

    cfg = load(config)
    result = submit_pipeline(
        cfg,
        _submission(
            cfg,
            _template_now(template, base_image, trainer_image, pipeline),
            config_uri,
            pipeline_root,
            service_account,
            param,
            label,
            pipeline,
            enable_caching=caching,
            job_id=job_id,
        ),
        wait=wait,
        poll_s=poll_s,
        report=console.print,
    )
    if wait and result["state"] != "PIPELINE_STATE_SUCCEEDED":
        raise typer.Exit(1)


def _template_now(
    template: str | None,
    base_image: str | None,
    trainer_image: str | None,
    pipeline: PipelineName = PipelineName.flywheel,
) -> str:
    """The given template, or one compiled now for the cloud from images pinned by digest (the
    monitor needs only the base image)."""
    import tempfile

    from flywheel_pipelines.compile import compile_pipeline

    if template is not None:
        return template
    if not base_image or (pipeline == PipelineName.flywheel and not trainer_image):
        needs = "--base-image" if pipeline == PipelineName.monitor else "--base-image and --trainer-image"
        raise ConfigError(f"give --template, or {needs} (by digest) to compile now")
    path = Path(tempfile.mkdtemp()) / f"{pipeline.value}.yaml"
    return str(
        compile_pipeline(path, base_image, trainer_image, require_digests=True, pipeline=pipeline.value)
    )


def _submission(
    cfg: FlywheelConfig,
    template: str,
    config_uri: str,
    pipeline_root: str,
    service_account: str | None,
    params: list[str] | None,
    labels: list[str] | None,
    pipeline: PipelineName = PipelineName.flywheel,
    **options: Any,
) -> Submission:
    """A run as `submit` and `schedule create` describe it, with the config's defaults."""
    from flywheel_pipelines.cloud.submit import Submission, parse_params
    from flywheel_pipelines.pipeline import PIPELINES

    return Submission(
        template=template,
        config_uri=config_uri,
        pipeline_root=pipeline_root,
        service_account=service_account or cfg.vertex.pipeline_service_account or "",
        params=parse_params(params or []),
        labels={k: str(v) for k, v in parse_params(labels or []).items()},
        pipeline=PIPELINES[pipeline.value][0],
        **options,
    )


@template_app.command("publish")
def template_publish(
    host: Annotated[str, typer.Option(help="KFP repository: https://REGION-kfp.pkg.dev/PROJECT/REPOSITORY.")],
    tag: Annotated[list[str], typer.Option("--tag", help="Tag of this version (repeat); moves if taken.")],
    template: Annotated[
        Path | None, typer.Option(help="Compiled YAML (default: compile now from the images).")
    ] = None,
    base_image: Annotated[str | None, typer.Option(help="Base image by digest, when compiling now.")] = None,
    trainer_image: Annotated[
        str | None, typer.Option(help="Trainer image by digest, when compiling now.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="Description shown in the registry.")] = None,
    access_token: Annotated[
        str | None,
        typer.Option(
            envvar="STT_FLYWHEEL_REGISTRY_TOKEN",
            help="Bearer token instead of application-default credentials (gcloud auth print-access-token).",
        ),
    ] = None,
) -> None:
    """Publish the pipeline to an Artifact Registry KFP repository, so runs can be created from it."""
    from flywheel_pipelines.cloud.templates import publish_template

    path = _template_now(str(template) if template else None, base_image, trainer_image)
    published = publish_template(host, path, tag, description, auth=access_token)
    console.print(f"published {published.package} {published.version}")
    for t in published.tags:
        console.print(f"  {published.url(t)}", highlight=False)


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
        _submission(
            cfg,
            _template_now(template, base_image, trainer_image, pipeline),
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
