"""The error store: what every serving version answered, and what users said about it later.

Layout under the store root, a local directory or a `gs://` prefix, hive-partitioned Parquet so
that BigQuery can read it as an external table::

    predictions/date=2026-11-27/hour=10/part-<written_at>-<rand>.parquet   by the prediction's hour
    feedback/date=2026-11-27/hour=14/part-<written_at>-<rand>.parquet      by the event's arrival hour
    quarantine/date=2026-11-27/hour=14/part-<written_at>-<rand>.jsonl      rejected lines + reason
    audio/<sha256[:2]>/<sha256>.<ext>                                       captured audio, by content

Every file is created once, whole, and never changed (create-only-if-absent on both backends);
`compact` merges a partition's small files into one and then deletes them, and readers drop the
duplicate rows such a merge leaves while it runs (predictions by id, events by event id), so a
merge is safe beside writers and readers and after a `kill -9`.

Feedback partitions by *arrival* because that is what a model's data watermark counts: a
correction that arrives after the production model was trained is new evidence whatever its
`event_time`. Predictions partition by their own hour (the hour in their UUIDv7 id when they have
one), so a lookup by id reads one partition and a live-quality window reads only its hours.

Feedback is joined to predictions when it is read, never when it is written, so ingest costs
O(batch) and an event may arrive before its prediction is visible. Each event then has one state:
`applied` (the latest event of a visible prediction: latest `event_time`, then latest arrival),
`superseded` (an earlier event of that prediction), `duplicate` (the same event again), `pending`
(its prediction is not visible yet) or `quarantined` (not visible after `pending_horizon`). Every
event is kept; the counts balance: events read = applied + superseded + duplicates + pending +
quarantined (which includes the lines rejected at ingest).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.error_store import export as _export
from stt_flywheel.data.error_store.compact import CompactResult, compact
from stt_flywheel.data.error_store.ingest import (
    FeedbackIngestResult,
    IngestResult,
    QuarantineEntry,
    ingest_feedback,
    ingest_records,
    read_lines,
)
from stt_flywheel.data.error_store.layout import Partitions, distinct_events, prediction_hours, utc_now
from stt_flywheel.data.error_store.resolve import (
    CLOCK_SKEW,
    FEEDBACK_STATES,
    Resolution,
    latest_kinds,
    resolve,
    resolve_for,
)
from stt_flywheel.data.records import PREDICTION_SCHEMA

__all__ = [
    "CLOCK_SKEW",
    "FEEDBACK_STATES",
    "CompactResult",
    "ErrorStore",
    "FeedbackIngestResult",
    "IngestResult",
    "QuarantineEntry",
    "Resolution",
    "distinct_events",
    "latest_kinds",
    "open_error_store",
]


class ErrorStore(Partitions):
    """The store under `root`, a local directory or a `gs://` prefix (see `objectstore`): its
    partitions' reads, and ingest, resolution, export and compaction over them."""

    def __init__(self, root: str | Path, pending_horizon: timedelta = timedelta(hours=24)) -> None:
        super().__init__(root)
        self.pending_horizon = pending_horizon

    def write_predictions(self, rows: Sequence[dict[str, Any]], now: datetime | None = None) -> list[str]:
        """Append captured predictions (dicts with PREDICTION_SCHEMA's fields but `ingested_at`)."""
        if not rows:
            return []
        now = now or utc_now()
        table = pa.Table.from_pylist(
            [{**r, "ingested_at": now, "metadata": r.get("metadata") or {}} for r in rows],
            schema=PREDICTION_SCHEMA,
        )
        return self.write("predictions", table, prediction_hours(table), now)

    def ingest(self, rows: Iterable[Any], now: datetime | None = None) -> IngestResult:
        return ingest_records(self, rows, now=now)

    def ingest_feedback(self, rows: Iterable[Any], now: datetime | None = None) -> FeedbackIngestResult:
        return ingest_feedback(self, rows, self.pending_horizon, now=now)

    def ingest_file(self, path: str | Path, now: datetime | None = None) -> IngestResult:
        return self.ingest(read_lines(path), now=now)

    def ingest_feedback_file(self, path: str | Path, now: datetime | None = None) -> FeedbackIngestResult:
        return self.ingest_feedback(read_lines(path), now=now)

    def resolve(
        self, events: pa.Table, now: datetime | None = None, predictions: pa.Table | None = None
    ) -> Resolution:
        return resolve(self, events, self.pending_horizon, now=now, predictions=predictions)

    def resolve_for(self, prediction_ids: Iterable[str], now: datetime | None = None) -> Resolution:
        return resolve_for(self, prediction_ids, self.pending_horizon, now=now)

    def errors(self, upto: datetime | None = None) -> Iterator[tuple[dict[str, Any], dict[str, Any], str]]:
        return _export.errors(self, self.pending_horizon, upto=upto)

    def stats(self, since: datetime | None = None, now: datetime | None = None) -> dict[str, Any]:
        return _export.stats(self, self.pending_horizon, since=since, now=now)

    def export(
        self, *, since: datetime | None = None, version: str | None = None, now: datetime | None = None
    ) -> Iterator[dict[str, Any]]:
        return _export.export(self, self.pending_horizon, since=since, version=version, now=now)

    def export_quarantine(self, now: datetime | None = None) -> Iterator[dict[str, Any]]:
        return _export.export_quarantine(self, self.pending_horizon, now=now)

    def compact(self, now: datetime | None = None, min_files: int = 2) -> CompactResult:
        return compact(self, now=now, min_files=min_files)


def open_error_store(config: FlywheelConfig) -> ErrorStore:
    """The configured error store."""
    return ErrorStore(config.paths.error_store, pending_horizon=config.feedback.pending_horizon)
