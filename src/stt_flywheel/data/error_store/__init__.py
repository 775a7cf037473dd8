"""The error store: what every serving version answered, and what users said about it later.

Hive-partitioned Parquet under a local directory or a `gs://` prefix: predictions by their own
hour, feedback by its arrival hour (what a model's data watermark counts), rejected lines in the
quarantine, audio by content. Every file is created once and never changed; feedback is joined to
predictions when it is read, never when it is written, so each event gets its state (applied,
superseded, duplicate, pending, quarantined) at read time and the counts balance. The layout and
the states, for people: `docs/concepts/error-store.md`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from stt_flywheel.config import FlywheelConfig, RetentionSettings, ServingLimits
from stt_flywheel.data.error_store import export as _export
from stt_flywheel.data.error_store import query as _sql
from stt_flywheel.data.error_store.compact import CompactResult, build_index, compact
from stt_flywheel.data.error_store.ingest import (
    FeedbackIngestResult,
    IngestResult,
    ingest_feedback,
    ingest_records,
)
from stt_flywheel.data.error_store.layout import Partitions, distinct_events, prediction_hours, utc_now
from stt_flywheel.data.error_store.lines import QuarantineEntry, read_lines
from stt_flywheel.data.error_store.resolve import (
    CLOCK_SKEW,
    FEEDBACK_STATES,
    Resolution,
    latest_kinds,
    resolve,
    resolve_for,
)
from stt_flywheel.data.error_store.retain import StoreRetention, retain_store
from stt_flywheel.data.identity import Senders, load_identity
from stt_flywheel.data.records import PREDICTION_SCHEMA

__all__ = [
    "CLOCK_SKEW",
    "FEEDBACK_STATES",
    "CompactResult",
    "StoreRetention",
    "ErrorStore",
    "FeedbackIngestResult",
    "IngestResult",
    "QuarantineEntry",
    "Resolution",
    "QUERY_ENGINES",
    "Senders",
    "distinct_events",
    "latest_kinds",
    "open_error_store",
]


QUERY_ENGINES = ("duckdb", "arrow")  # SQL over the files (`query`); tables joined in Python


class ErrorStore(Partitions):
    """The store under `root`, a local directory or a `gs://` prefix (see `objectstore`): its
    partitions' reads, and ingest, resolution, export and compaction over them."""

    def __init__(
        self,
        root: str | Path,
        pending_horizon: timedelta = timedelta(hours=24),
        senders: Senders | None = None,
        limits: ServingLimits | None = None,
        max_events_per_user_per_hour: int | None = None,
        audio_roots: Sequence[str] | None = None,
        engine: str = "duckdb",
        memory_limit: str = _sql.MEMORY_LIMIT,
    ) -> None:
        super().__init__(root)
        if engine not in QUERY_ENGINES:
            raise ValueError(f"unknown query engine {engine!r}: one of {', '.join(QUERY_ENGINES)}")
        self.engine = engine  # who answers the whole-store reads (`stats`, `errors`, `export`)
        self.memory_limit = memory_limit  # DuckDB's, before it spills
        self.audio_roots = audio_roots  # None: a record's audio may be anywhere (no config to say)
        self.pending_horizon = pending_horizon
        self.senders = senders or Senders()
        self.limits = limits or ServingLimits()  # what a record's metadata may hold
        self.max_events_per_user_per_hour = max_events_per_user_per_hour

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
        return ingest_records(
            self, rows, now=now, senders=self.senders, limits=self.limits, audio_roots=self.audio_roots
        )

    def ingest_feedback(
        self, rows: Iterable[Any], now: datetime | None = None, caller: str | None = None
    ) -> FeedbackIngestResult:
        return ingest_feedback(
            self, rows, self.pending_horizon, now, self.senders, self.max_events_per_user_per_hour, caller
        )

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
        if self.engine == "duckdb":
            return _sql.errors(self, upto=upto, memory_limit=self.memory_limit)
        return _export.errors(self, self.pending_horizon, upto=upto)

    def stats(self, since: datetime | None = None, now: datetime | None = None) -> dict[str, Any]:
        if self.engine == "duckdb":
            return _sql.stats(
                self, self.pending_horizon, since=since, now=now, memory_limit=self.memory_limit
            )
        return _export.stats(self, self.pending_horizon, since=since, now=now)

    def export(
        self, *, since: datetime | None = None, version: str | None = None, now: datetime | None = None
    ) -> Iterator[dict[str, Any]]:
        if self.engine == "duckdb":
            return _sql.export(self, since=since, version=version, now=now, memory_limit=self.memory_limit)
        return _export.export(self, self.pending_horizon, since=since, version=version, now=now)

    def window(
        self,
        start: datetime | None,
        end: datetime | None,
        now: datetime,
        *,
        columns: Sequence[str] = (),
        reviewers: bool = True,
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None, str | None]]:
        """Each prediction made in [start, end) (with `columns`), its applied event among those
        that arrived by `now` (None without one) and its kind; without `reviewers`, as if no
        reviewer had sent anything. Feedback that arrived before the window opened (less the
        clock skew allowed) is not read."""
        after = start - CLOCK_SKEW if start is not None else None
        if self.engine == "duckdb":
            yield from _sql.window(self, start, end, now, after, columns, reviewers, self.memory_limit)
            return
        predictions = self.predictions(start, end)
        events = self.feedback_for(predictions["prediction_id"].to_pylist(), upto=now, after=after)
        if not reviewers:
            events = events.filter(pc.invert(pc.fill_null(events["reviewer"], False)))
        labels = self.resolve(events, now=now, predictions=predictions)
        for p in predictions.to_pylist():
            pid = p["prediction_id"]
            yield p, labels.applied.get(pid), labels.kind(pid)

    def export_quarantine(self, now: datetime | None = None) -> Iterator[dict[str, Any]]:
        return _export.export_quarantine(self, self.pending_horizon, now=now)

    def compact(self, now: datetime | None = None, min_files: int = 2) -> CompactResult:
        return compact(self, now=now, min_files=min_files)

    def build_index(self, now: datetime | None = None) -> dict[str, int]:
        return build_index(self, now=now)

    def retain(
        self, settings: RetentionSettings, now: datetime | None = None, dry_run: bool = False
    ) -> StoreRetention:
        return retain_store(self, settings, now or utc_now(), dry_run)


def open_error_store(config: FlywheelConfig) -> ErrorStore:
    """The configured error store; its identity key is loaded when a user is first named."""
    senders = Senders(
        lambda: load_identity(config.paths.root, settings=config.identity), config.feedback.reviewer_sources
    )
    return ErrorStore(
        config.paths.error_store,
        config.feedback.pending_horizon,
        senders,
        config.serving,
        config.feedback.max_events_per_user_per_hour,
        config.dataset.audio_roots,
        config.store.query_engine,
        config.store.memory_limit,
    )
