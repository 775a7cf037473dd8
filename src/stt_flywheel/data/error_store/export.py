"""Reading the store as a whole: counts, the errors to learn from, exports of rows and rejects."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pyarrow.compute as pc

from stt_flywheel.data.error_store.layout import Partitions, arrived, distinct_events, utc_now
from stt_flywheel.data.error_store.resolve import FEEDBACK_STATES, resolve
from stt_flywheel.data.identity import ANONYMOUS
from stt_flywheel.data.records import feedback_kind

__all__ = ["errors", "export", "export_quarantine", "stats"]

_FEEDBACK_FIELDS = ("corrected_text", "flagged", "event_time", "source", "ingested_at")


def errors(
    files: Partitions, pending_horizon: timedelta, upto: datetime | None = None
) -> Iterator[tuple[dict[str, Any], dict[str, Any], str]]:
    """(prediction, its latest event, kind) for each prediction whose latest feedback that
    arrived by `upto` says it was wrong: kind `corrected` or `flagged`."""
    resolution = resolve(files, files.feedback(upto=upto), pending_horizon, now=upto)
    for pid in sorted(resolution.applied):
        kind = resolution.kind(pid)
        if kind in ("corrected", "flagged"):
            yield resolution.predictions[pid], resolution.applied[pid], kind


def stats(
    files: Partitions, pending_horizon: timedelta, since: datetime | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Counts over the whole store (reads the feedback and the predictions' id column)."""
    now = now or utc_now()
    events = files.feedback(upto=now)
    resolution = resolve(files, events, pending_horizon, now=now)
    rejected = Counter(q["stream"] for q in files.quarantine())
    kinds = Counter(resolution.kind(pid) for pid in resolution.applied)
    predictions = files.predictions(columns=["user"])
    return {
        "predictions": predictions.num_rows,
        # distinct requesters (predictions that name none, and those from before users, are one)
        "users": pc.count_distinct(pc.fill_null(predictions["user"], ANONYMOUS)).as_py()
        if predictions.num_rows
        else 0,
        "feedback_events": {
            "read": events.num_rows + rejected.get("feedback", 0),
            **{state: resolution.counts[state] for state in FEEDBACK_STATES},
            "rejected_at_ingest": rejected.get("feedback", 0),
        },
        "labels": {k: kinds.get(k, 0) for k in ("corrected", "flagged", "confirmed")},
        "records_rejected_at_ingest": rejected.get("records", 0),
        "since_watermark": {
            "watermark": since,
            "feedback_events": distinct_events(arrived(events, since)),
        },
    }


def export(
    files: Partitions,
    pending_horizon: timedelta,
    *,
    since: datetime | None = None,
    version: str | None = None,
    now: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """Stored predictions (made at or after `since`, of `version`), each with its latest
    feedback and how many events it had; one hour partition at a time."""
    now = now or utc_now()
    events = files.feedback(upto=now)
    resolution = resolve(files, events, pending_horizon, now=now)
    counts = Counter(events["prediction_id"].to_pylist())
    hours = sorted({h for h, _ in files.list_files("predictions", since)})
    for hour in hours:
        table = files.predictions(max(hour, since) if since else hour, hour + timedelta(hours=1))
        if version is not None:
            table = table.filter(pc.equal(table["model_version"], version))
        for row in table.sort_by("predicted_at").to_pylist():
            pid = row["prediction_id"]
            event = resolution.applied.get(pid)
            row["metadata"] = dict(row["metadata"] or [])
            row["feedback"] = {k: event[k] for k in _FEEDBACK_FIELDS} if event is not None else None
            row["label"] = (
                feedback_kind(row["hypothesis"], event["corrected_text"], event["flagged"]) if event else None
            )
            row["feedback_events"] = counts.get(pid, 0)
            yield row


def export_quarantine(
    files: Partitions, pending_horizon: timedelta, now: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Lines rejected at ingest, then feedback events whose prediction never arrived, then events
    about another user's prediction that arrived before it."""
    yield from files.quarantine()
    now = now or utc_now()
    resolution = resolve(files, files.feedback(upto=now), pending_horizon, now=now)
    for event in resolution.quarantined:
        yield {
            "stream": "feedback",
            "reason": "unknown_prediction",
            "detail": f"no prediction {event['prediction_id']} within {pending_horizon} of the event's arrival",
            "event": event,
        }
    for event in resolution.refused:
        yield {
            "stream": "feedback",
            "reason": "not_the_requester",
            "detail": "another user's prediction: only the requester or a reviewer source may label it",
            "event": event,
        }
