"""`template …`: published pipeline templates (Artifact Registry)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flywheel_pipelines.cli.common import (
    console,
)
from flywheel_pipelines.cli.submit import template_now

__all__ = ["template_app"]


template_app = typer.Typer(no_args_is_help=True, help="Published pipeline templates (Artifact Registry).")


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

    path = template_now(str(template) if template else None, base_image, trainer_image)
    published = publish_template(host, path, tag, description, auth=access_token)
    console.print(f"published {published.package} {published.version}")
    for t in published.tags:
        console.print(f"  {published.url(t)}", highlight=False)
