"""Feedback joined to predictions when it is read: each event's state, each prediction's label.

Two engines answer "what is this prediction's label": `Resolution` row by row (with every event's
state, for counts that balance) and `latest_kinds` column-wise in Arrow (for the trigger's large
reads). Both apply `records.feedback_kind`'s rule; the tests hold them equal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from stt_flywheel.data.error_store.layout import Partitions, first_by, utc_now
from stt_flywheel.data.identity import ANONYMOUS
from stt_flywheel.data.records import feedback_kind
from stt_flywheel.scoring.text import normalize_arrow

__all__ = ["CLOCK_SKEW", "FEEDBACK_STATES", "Resolution", "latest_kinds", "resolve", "resolve_for"]

CLOCK_SKEW = timedelta(hours=1)  # how much earlier than its prediction an event may seem to arrive
FEEDBACK_STATES = ("applied", "superseded", "duplicate", "pending", "quarantined")


@dataclass
class Resolution:
    """Feedback events joined to the visible predictions: each event's state, and per prediction
    its applied (latest) event."""

    states: dict[str, str]  # event_id (first occurrence) -> state; duplicates are only counted
    counts: Counter[str]
    applied: dict[str, dict[str, Any]]  # prediction_id -> the applied event's row
    predictions: dict[str, dict[str, Any]]  # prediction_id -> the prediction's row (the visible ones)
    quarantined: list[dict[str, Any]]  # events past the horizon without a prediction
    refused: list[dict[str, Any]]  # events about another user's prediction, not from a reviewer
    first_arrival: dict[str, datetime]  # event_id -> when it first arrived

    def kind(self, prediction_id: str) -> str | None:
        """`corrected`, `flagged` or `confirmed` for a prediction with an applied event, else None."""
        event = self.applied.get(prediction_id)
        if event is None:
            return None
        pred = self.predictions[prediction_id]
        return feedback_kind(pred["hypothesis"], event["corrected_text"], event["flagged"])


def resolve(
    files: Partitions,
    events: pa.Table,
    pending_horizon: timedelta,
    now: datetime | None = None,
    predictions: pa.Table | None = None,
) -> Resolution:
    """Join events (every event of each prediction they name) to the visible predictions
    (`predictions` when the caller has read them already, else looked up)."""
    now = now or utc_now()
    rows = events.sort_by([("ingested_at", "ascending"), ("event_id", "ascending")]).to_pylist()
    counts: Counter[str] = Counter()
    states: dict[str, str] = {}
    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["event_id"] in first:
            counts["duplicate"] += 1
        else:
            first[row["event_id"]] = row
    named = {r["prediction_id"] for r in first.values()}
    if predictions is None:
        predictions = files.lookup(named)
    else:
        predictions = predictions.filter(
            pc.is_in(predictions["prediction_id"], pa.array(sorted(named), pa.string()))
        )
    visible = {r["prediction_id"]: r for r in predictions.to_pylist()}
    by_prediction: dict[str, list[dict[str, Any]]] = {}
    for row in first.values():
        by_prediction.setdefault(row["prediction_id"], []).append(row)
    applied: dict[str, dict[str, Any]] = {}
    quarantined: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    for pid, group in by_prediction.items():
        if pid in visible:
            owner = visible[pid]["user"] or ANONYMOUS
            allowed = [r for r in group if r["reviewer"] or (r["user"] or ANONYMOUS) == owner]
            for r in group:
                if r not in allowed:
                    states[r["event_id"]] = "quarantined"
                    refused.append(r)
            if not allowed:
                continue
            latest = max(allowed, key=lambda r: (r["event_time"], r["ingested_at"], r["event_id"]))
            applied[pid] = latest
            for r in allowed:
                states[r["event_id"]] = "applied" if r is latest else "superseded"
            continue
        for r in group:
            expired = now - r["ingested_at"] > pending_horizon
            states[r["event_id"]] = "quarantined" if expired else "pending"
            if expired:
                quarantined.append(r)
    counts.update(states.values())
    for state in FEEDBACK_STATES:
        counts.setdefault(state, 0)
    first_arrival = {e: r["ingested_at"] for e, r in first.items()}
    return Resolution(states, counts, applied, visible, quarantined, refused, first_arrival)


def resolve_for(
    files: Partitions,
    prediction_ids: Iterable[str],
    pending_horizon: timedelta,
    now: datetime | None = None,
    predictions: pa.Table | None = None,
) -> Resolution:
    """Every event about these predictions, joined (`predictions`: those of them the caller has
    looked up already). Events arrive after their prediction was made: those that arrived before
    the earliest visible one (less an hour of clock skew) are not read, unless some prediction is
    not visible yet."""
    ids = set(prediction_ids)
    if predictions is None:
        predictions = files.lookup(ids)
    else:
        predictions = predictions.filter(
            pc.is_in(predictions["prediction_id"], pa.array(sorted(ids), pa.string()))
        )
    after = None
    if predictions.num_rows == len(ids) and predictions.num_rows:
        after = pc.min(predictions["predicted_at"]).as_py() - CLOCK_SKEW
    events = files.feedback_for(ids, upto=now, after=after)
    return resolve(files, events, pending_horizon, now=now, predictions=predictions)


def latest_kinds(events: pa.Table, predictions: pa.Table) -> pa.Table:
    """Per prediction in `predictions` with feedback in `events`: its latest event (latest
    `event_time`, then arrival, then event id) and its `kind`, computed column-wise; the same as
    `Resolution.kind`, without a Python loop over the rows."""
    cols = [
        "prediction_id",
        "corrected_text",
        "flagged",
        "event_time",
        "ingested_at",
        "event_id",
        "user",
        "reviewer",
    ]
    if events.num_rows == 0 or predictions.num_rows == 0:  # events whose predictions are not here yet
        return events.select(cols).slice(0, 0).append_column("kind", pa.array([], pa.string()))
    # an event sent again counts from its first arrival, as in `resolve`
    first = first_by(
        events.select(cols).sort_by([("ingested_at", "ascending"), ("event_id", "ascending")]), "event_id"
    )
    # only the requester's events and a reviewer's count, as in `resolve`
    owners = predictions.select(["prediction_id", "user"]).rename_columns(["prediction_id", "owner"])
    first = first.join(owners, "prediction_id", join_type="inner")
    same_user = pc.equal(pc.fill_null(first["user"], ANONYMOUS), pc.fill_null(first["owner"], ANONYMOUS))
    first = first.filter(pc.or_(pc.fill_null(first["reviewer"], False), same_user)).drop_columns(["owner"])
    ordered = first.sort_by(
        [
            ("prediction_id", "ascending"),
            ("event_time", "descending"),
            ("ingested_at", "descending"),
            ("event_id", "descending"),
        ]
    )
    latest = first_by(ordered, "prediction_id")
    joined = latest.join(
        predictions.select(["prediction_id", "hypothesis"]), "prediction_id", join_type="inner"
    )
    text = joined["corrected_text"]
    differs = pc.and_(
        pc.is_valid(text),
        pc.not_equal(normalize_arrow(text), normalize_arrow(joined["hypothesis"])),
    )
    kind = pc.if_else(differs, "corrected", pc.if_else(joined["flagged"], "flagged", "confirmed"))
    return joined.drop_columns(["hypothesis"]).append_column("kind", kind)
