"""What every command group shares: the console, the common options, config loading, JSON output."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console

from stt_flywheel.config import FlywheelConfig, load_config

__all__ = [
    "ConfigOpt",
    "JsonOpt",
    "NormalizerOpt",
    "PipelineName",
    "PipelineOpt",
    "VertexConfigOpt",
    "console",
    "load",
    "print_json",
]


console = Console()

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help="The flywheel config, a path or gs:// URI (default: the built-in defaults, state under ./.flywheel).",
    ),
]

VertexConfigOpt = Annotated[
    str, typer.Option("--config", "-c", help="The flywheel config, a path or gs:// URI (its vertex section).")
]

NormalizerOpt = Annotated[
    str, typer.Option(help="Text normaliser: whisper-en, basic-en or none (optionally name/version).")
]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


class PipelineName(StrEnum):
    flywheel = "flywheel"
    monitor = "monitor"


PipelineOpt = Annotated[
    PipelineName,
    typer.Option(
        "--pipeline", help="flywheel: the six stages; monitor: canary decisions and the default's watch."
    ),
]


def load(path: str | Path | None) -> FlywheelConfig:
    return load_config(path)


def print_json(obj: object) -> None:
    sys.stdout.write(
        orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode() + "\n"
    )
