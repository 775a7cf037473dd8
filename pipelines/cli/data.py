"""`errors …` and `base-model …`: feeding the error store, re-training the demo's base model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from flywheel_pipelines.cli.common import ConfigOpt, console, load, print_json

__all__ = ["base_app", "errors_app"]

errors_app = typer.Typer(no_args_is_help=True, help="Feed the error store.")
base_app = typer.Typer(no_args_is_help=True, help="The demo's tiny base model.")


@errors_app.command("ingest")
def errors_ingest(
    file: Annotated[Path, typer.Argument(help="JSONL of transcript records.")],
    config: ConfigOpt = None,
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate and append transcript records; invalid lines are quarantined with a reason."""
    from stt_flywheel.data.error_store import ErrorStore

    cfg = load(config)
    assert cfg.paths.error_store
    result = ErrorStore(cfg.paths.error_store).ingest_file(file)
    if json:
        print_json({**result.as_dict(), "quarantine": [q.__dict__ for q in result.quarantined]})
        return
    console.print(
        f"read {result.read}: accepted {result.accepted}, duplicates {result.duplicates}, "
        f"quarantined {len(result.quarantined)}"
    )
    for q in result.quarantined[:20]:
        console.print(f"  line {q.line}: {q.reason} — {q.detail}")


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
