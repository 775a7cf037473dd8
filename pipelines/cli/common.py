"""What every command group shares: the console, the common options, config loading, JSON output."""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from pydantic import BaseModel

from flywheel_pipelines.views import make_console
from stt_flywheel.config import ConfigError, FlywheelConfig, load_config
from stt_flywheel.errors import InputError

__all__ = [
    "ConfigOpt",
    "JsonOpt",
    "NormalizerOpt",
    "PipelineName",
    "PipelineOpt",
    "SourceArg",
    "VertexConfigOpt",
    "console",
    "load",
    "make_console",
    "print_json",
    "report_ingest",
]


console = make_console()

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="The flywheel config, a path or gs:// URI (default: the built-in defaults, state under ./.flywheel).",
    ),
]

VertexConfigOpt = Annotated[
    str,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="The flywheel config, a path or gs:// URI (its vertex section).",
    ),
]

NormalizerOpt = Annotated[
    str, typer.Option(help="Text normaliser: whisper-en, basic-en or none (optionally name/version).")
]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


class PipelineName(StrEnum):
    flywheel = "flywheel"
    monitor = "monitor"
    retention = "retention"


PipelineOpt = Annotated[
    PipelineName,
    typer.Option(
        "--pipeline",
        help="flywheel: the six stages; monitor: canary decisions and the default's watch; "
        "retention: `store retain`.",
    ),
]


def load(path: str | Path | None, reads_state: bool = False) -> FlywheelConfig:
    """The config at `path`, or the built-in defaults (state under ./.flywheel). A command that
    only reads state refuses the defaults where no ./.flywheel exists, instead of creating an
    empty one and reporting on nothing."""
    if path is None and reads_state and not (Path.cwd() / ".flywheel").exists():
        raise ConfigError(
            "no --config given and no ./.flywheel here: pass --config FILE, the flywheel config "
            "whose state to read (e.g. demo-work/flywheel.yaml after `make demo`)"
        )
    return load_config(path)


SourceArg = Annotated[
    str,
    typer.Argument(
        metavar="SOURCE", help="JSONL file, gs:// object, or - for standard input.", show_default=False
    ),
]


def report_ingest(
    source: str,
    counts: dict[str, object],
    quarantined: list[Any],
    accepted: int,
    json: bool,
    store_root: str,
) -> None:
    """What an ingest read, accepted and quarantined; a source with no valid line is an error."""
    source = "standard input" if source == "-" else source
    if json:
        print_json(
            {
                **{k: v for k, v in counts.items() if k != "summary"},
                "quarantine": [q.__dict__ for q in quarantined],
            }
        )
    else:
        console.print(counts["summary"], highlight=False)
        for q in quarantined[:20]:
            console.print(f"  line {q.line}: {q.reason} — {q.detail}", highlight=False)
        if len(quarantined) > 20:
            console.print(f"  … and {len(quarantined) - 20} more", highlight=False)
        if quarantined:
            console.print(
                f"Every rejected line is kept under {store_root}/quarantine/ "
                "(`errors export --quarantine` lists them).",
                highlight=False,
            )
    if counts["read"] == 0:
        raise InputError(f"{source}: no records in it")
    if accepted == 0 and counts.get("duplicates", 0) == 0:
        reason, n = Counter(q.reason for q in quarantined).most_common(1)[0]
        first = next(q for q in quarantined if q.reason == reason)
        hint = (
            "does dataset.audio_roots name where the audio lies?"
            if reason == "audio_outside_roots"
            else "is it the right file and format?"
        )
        raise InputError(
            f"{source}: no valid line — all {len(quarantined)} quarantined, {n} as {reason} "
            f"(first at line {first.line}); {hint}"
        )


def parse_when(value: str | None) -> datetime | None:
    """An ISO date or time given as an option; one without a zone is UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"not an ISO date or time: {value!r} (e.g. 2026-11-27 or 2026-11-27T10:00Z)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def print_json(obj: object) -> None:
    """JSON on stdout; a model (a summary, a status, an entry) as its fields."""
    sys.stdout.write(
        orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=_jsonable).decode()
        + "\n"
    )


def _jsonable(value: object) -> object:
    return value.model_dump() if isinstance(value, BaseModel) else str(value)
