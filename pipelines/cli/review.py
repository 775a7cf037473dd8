"""`review …`: corrections held for a person before they may teach the model."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from flywheel_pipelines.cli.common import ConfigOpt, JsonOpt, console, load, parse_when, print_json
from stt_flywheel.errors import InputError

__all__ = ["review_app"]

review_app = typer.Typer(
    no_args_is_help=True,
    help="What people review: corrections held for review (far from what the model heard, or a "
    "critical term taken away), and a budget of predictions to correct (Label Studio out and back).",
)

IdsArg = Annotated[
    list[str],
    typer.Argument(
        metavar="PREDICTION_ID…",
        help="Held corrections, by prediction id (`review list`).",
        show_default=False,
    ),
]
ReasonOpt = Annotated[
    str, typer.Option(help="Why; recorded with the decision and in the audit log.", show_default=False)
]


@review_app.command("list")
def review_list(config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """Every held correction not yet decided, oldest first: its prediction id, the sender's
    pseudonym, what the model heard, the correction and why it is held."""
    from stt_flywheel.data.error_store import open_error_store
    from stt_flywheel.data.review import Screen, held_corrections

    cfg = load(config, reads_state=True)
    held = list(held_corrections(open_error_store(cfg), Screen.of(cfg)))
    if json:
        print_json([h.as_dict() for h in held])
        return
    if not held:
        console.print("no corrections held for review")
        return
    table = Table(title=f"Held for review: {len(held)}")
    for col in ("prediction_id", "user", "heard", "correction", "why"):
        table.add_column(col, overflow="fold")
    for h in held:
        table.add_row(
            h.prediction_id, h.user[:8], h.hypothesis, h.corrected_text, ", ".join(h.reasons), style=None
        )
    console.print(table, markup=False)


def _decide(ids: list[str], config: str | None, reason: str, accept: bool, json: bool) -> None:
    from stt_flywheel.run.approval import who
    from stt_flywheel.run.review import review

    made = review(load(config, reads_state=True), ids, accept=accept, reason=reason, by=who())
    if json:
        print_json(made)
        return
    word = "accepted: they may now teach the model" if accept else "rejected: they will never teach the model"
    console.print(f"{len(made)} {word}", highlight=False)


@review_app.command("accept")
def review_accept(ids: IdsArg, reason: ReasonOpt, config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """Accept held corrections: each becomes a reviewer's event with the same words."""
    _decide(ids, config, reason, True, json)


@review_app.command("reject")
def review_reject(ids: IdsArg, reason: ReasonOpt, config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """Reject held corrections: they stay in the store and never train."""
    _decide(ids, config, reason, False, json)


BudgetOpt = Annotated[int, typer.Option(min=1, help="How many predictions to ask people to correct.")]
SinceOpt = Annotated[
    str | None,
    typer.Option(help="Only predictions made at or after this time (ISO; UTC if no zone). Default: 30 days."),
]


class Format(StrEnum):
    label_studio = "label-studio"


@review_app.command("propose")
def review_propose(
    budget: BudgetOpt, since: SinceOpt = None, config: ConfigOpt = None, json: JsonOpt = False
) -> None:
    """The settled predictions most worth a person's correction, least sure first: nobody
    answered them, their audio was kept, spread over domains and speakers."""
    from stt_flywheel.run.review import propose_reviews

    picked = propose_reviews(load(config, reads_state=True), budget, parse_when(since))
    if json:
        print_json([p.as_dict() for p in picked])
        return
    if not picked:
        console.print("nothing to propose: no settled prediction that nobody answered, with its audio")
        return
    table = Table(title=f"Proposed for review: {len(picked)} of a budget of {budget}")
    for col in ("prediction_id", "version", "confidence", "least sure", "heard", "domain", "speaker"):
        table.add_column(col, overflow="fold")
    for p in picked:
        sure = f"{p.confidence:.3f}" if p.confidence is not None else "–"
        row = (p.prediction_id, p.model_version or "–", sure, p.least_sure or "–", p.hypothesis)
        table.add_row(*row, p.domain or "–", p.speaker[:12])
    console.print(table, markup=False)


@review_app.command("export")
def review_export(
    budget: BudgetOpt,
    out: Annotated[
        Path, typer.Option(help="Where to write the tasks (JSON); the labelling config beside it.")
    ],
    format: Annotated[
        Format, typer.Option("--format", help="The labelling tool's import format.")
    ] = Format.label_studio,
    since: SinceOpt = None,
    audio_url: Annotated[
        str | None,
        typer.Option(
            help="The dashboard's address (`stt-flywheel ui`): each task's audio is its /audio/ID. "
            "Default: the store's URI of the audio (gs:// for a Label Studio with Google Cloud Storage)."
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """`review propose`'s picks as a labelling tool's import: Label Studio tasks with each audio
    and the model's transcript as a pre-annotation to correct (`review import` reads the export back)."""
    from stt_flywheel.data.proposal import LABEL_CONFIG, label_studio_tasks
    from stt_flywheel.run.review import propose_reviews

    picked = propose_reviews(load(config, reads_state=True), budget, parse_when(since))
    tasks = label_studio_tasks(picked, audio_url)
    labelling = out.with_name(out.stem + ".label-config.xml")
    try:
        out.write_bytes(orjson.dumps(tasks, option=orjson.OPT_INDENT_2))
        labelling.write_text(LABEL_CONFIG)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror}") from None
    console.print(
        f"{len(tasks)} tasks ({format.value}) in {out}; the labelling interface they need in {labelling}",
        highlight=False,
    )


@review_app.command("import")
def review_import(
    source_file: Annotated[
        Path, typer.Argument(metavar="FILE", help="A Label Studio JSON export.", show_default=False)
    ],
    source: Annotated[
        str, typer.Option(help="The events' source: one of feedback.reviewer_sources.")
    ] = "label-studio",
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """A Label Studio export's corrections, as reviewer events: each task's latest submitted
    text, about the prediction its data names. Tasks without one are listed, not lost."""
    from stt_flywheel.run.approval import who
    from stt_flywheel.run.review import import_reviews

    try:
        tasks = orjson.loads(source_file.read_bytes())
    except OSError as exc:
        raise InputError(f"cannot read {source_file}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{source_file} is not JSON: {exc}") from None
    if not isinstance(tasks, list) or not tasks:
        raise InputError(f"{source_file}: not a Label Studio JSON export (a list of tasks)")
    result, skipped = import_reviews(load(config, reads_state=True), tasks, source=source, by=who())
    if json:
        print_json({**result.as_dict(), "skipped": skipped})
        return
    console.print(
        f"{len(tasks)} tasks: {result.accepted} corrections accepted, {len(result.quarantined)} quarantined, "
        f"{len(skipped)} skipped",
        highlight=False,
    )
    for s in skipped[:20]:
        console.print(f"  task {s['task']}: {s['reason']}", highlight=False)
    for q in result.quarantined[:20]:
        console.print(f"  event {q.line}: {q.reason} — {q.detail}", highlight=False)
