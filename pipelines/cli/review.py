"""`review …`: corrections held for a person before they may teach the model."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from flywheel_pipelines.cli.common import ConfigOpt, JsonOpt, console, load, print_json

__all__ = ["review_app"]

review_app = typer.Typer(
    no_args_is_help=True,
    help="Corrections held for review (far from what the model heard, or a critical term taken away).",
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
