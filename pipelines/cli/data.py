"""`errors …` and `base-model …`: feeding the error store, re-training the demo's base model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from flywheel_pipelines.cli.common import ConfigOpt, SourceArg, load, print_json, report_ingest

__all__ = ["base_app", "errors_app"]

errors_app = typer.Typer(no_args_is_help=True, help="Feed the error store.")
base_app = typer.Typer(no_args_is_help=True, help="The demo's tiny base model.")


@errors_app.command("ingest")
def errors_ingest(
    source: SourceArg,
    config: ConfigOpt = None,
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate and append combined transcript records (JSONL); invalid lines are quarantined with a
    reason. A source with no valid line is refused (exit 1)."""
    from stt_flywheel.data.error_store import open_error_store

    store = open_error_store(load(config))
    result = store.ingest_file(source)
    counts = result.as_dict()
    counts["summary"] = (
        f"read {result.read}: accepted {result.accepted}, duplicates {result.duplicates}, "
        f"quarantined {len(result.quarantined)}"
    )
    report_ingest(source, counts, result.quarantined, result.accepted, json, store.root)


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
