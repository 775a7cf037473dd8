"""`submit`: a pipeline run on Vertex AI Pipelines, from a compiled package or a published template."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flywheel_pipelines.cli.common import (
    PipelineName,
    PipelineOpt,
    VertexConfigOpt,
    console,
    load,
)
from stt_flywheel.config import ConfigError, FlywheelConfig

if TYPE_CHECKING:
    from flywheel_pipelines.cloud.submit import Submission

__all__ = ["submission", "submit", "template_now"]


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
        submission(
            cfg,
            template_now(template, base_image, trainer_image, pipeline),
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


def template_now(
    template: str | None,
    base_image: str | None,
    trainer_image: str | None,
    pipeline: PipelineName = PipelineName.flywheel,
) -> str:
    """The given template, or one compiled now for the cloud from images pinned by digest (the
    monitor and retention need only the base image)."""
    import tempfile

    from flywheel_pipelines.compile import compile_pipeline

    if template is not None:
        return template
    if not base_image or (pipeline == PipelineName.flywheel and not trainer_image):
        needs = "--base-image and --trainer-image" if pipeline == PipelineName.flywheel else "--base-image"
        raise ConfigError(f"give --template, or {needs} (by digest) to compile now")
    path = Path(tempfile.mkdtemp()) / f"{pipeline.value}.yaml"
    return str(
        compile_pipeline(path, base_image, trainer_image, require_digests=True, pipeline=pipeline.value)
    )


def submission(
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
