"""`base-model …`: the demo's tiny base model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from flywheel_pipelines.cli.common import (
    print_json,
)

__all__ = ["base_app"]


base_app = typer.Typer(no_args_is_help=True, help="The demo's tiny base model.")


@base_app.command("train")
def base_model_train(
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the trained model.")],
    scratch: Annotated[Path, typer.Option(help="Where to synthesise the training audio.")] = Path(
        "/tmp/stt-base"
    ),
    utterances: Annotated[int, typer.Option(help="General-domain training utterances.")] = 1500,
) -> None:
    """Train the tiny CTC base model from scratch on synthetic general-domain speech."""
    from stt_flywheel.demo.base_model import train_base_model

    command = " ".join(["stt-flywheel", *sys.argv[1:]])
    card = train_base_model(output, scratch, utterances=utterances, command=command)
    print_json(card)
