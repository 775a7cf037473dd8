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

from stt_flywheel.config import FlywheelConfig, RetentionSettings, ServingLimits
from stt_flywheel.data.error_store import export as _export
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
    "Senders",
    "distinct_events",
    "latest_kinds",
    "open_error_store",
]


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
    ) -> None:
        super().__init__(root)
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
    )
