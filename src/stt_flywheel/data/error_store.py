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

import base64
import contextlib
import hashlib
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import ValidationError

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.records import (
    FEEDBACK_SCHEMA,
    PREDICTION_SCHEMA,
    TIMESTAMP,
    TRANSCRIPT_RECORD,
    FeedbackEvent,
    event_row,
    feedback_kind,
    id_ms,
)
from stt_flywheel.errors import InputNotFound
from stt_flywheel.scoring.text import normalize_arrow
from stt_flywheel.storage.objectstore import (
    LocalStore,
    PreconditionFailed,
    is_remote,
    join_uri,
    open_store,
    read_uri,
)

__all__ = [
    "FEEDBACK_STATES",
    "CLOCK_SKEW",
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

CLOCK_SKEW = timedelta(hours=1)  # how much earlier than its prediction an event may seem to arrive
MAX_FUTURE = timedelta(days=1)  # a record or event dated later than this after its arrival is refused
MAX_LINE_BYTES = 1 << 20  # a longer line is quarantined unparsed (`line_too_long`)
MAX_ID_CHARS = 256  # a longer prediction id is quarantined (`id_too_long`)
FEEDBACK_STATES = ("applied", "superseded", "duplicate", "pending", "quarantined")
STREAMS = {"predictions": PREDICTION_SCHEMA, "feedback": FEEDBACK_SCHEMA}


def _now() -> datetime:
    return datetime.now(UTC)


def _hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _partition(t: datetime) -> str:
    h = _hour(t)
    return f"date={h.date().isoformat()}/hour={h.hour:02d}"


def _partition_hour(key: str) -> datetime | None:
    """The hour of a key `<stream>/date=YYYY-MM-DD/hour=HH/<file>`, None for any other key."""
    parts = key.split("/")
    if len(parts) != 4 or not parts[1].startswith("date=") or not parts[2].startswith("hour="):
        return None
    try:
        return datetime.fromisoformat(f"{parts[1][5:]}T{parts[2][5:]}:00:00+00:00")
    except ValueError:
        return None


def _file_name(now: datetime, ext: str) -> str:
    return f"part-{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}.{ext}"


def _first_by(table: pa.Table, key: str) -> pa.Table:
    """The first row (in the table's order) of each value of `key`."""
    if table.num_rows == 0:
        return table
    indexed = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    first = indexed.group_by(key, use_threads=False).aggregate([("_row", "min")])["_row_min"]
    return table.take(pc.take(first, pc.sort_indices(first)))


def distinct_events(events: pa.Table) -> int:
    """How many events, counting one stored twice (two ingests of one file at once) once."""
    return pc.count_distinct(events["event_id"]).as_py() if events.num_rows else 0


def _arrived(events: pa.Table, after: datetime | None = None, upto: datetime | None = None) -> pa.Table:
    """The events with after < ingested_at <= upto, in arrival order."""
    arrival = events["ingested_at"]
    if after is not None:
        events = events.filter(pc.greater(arrival, pa.scalar(after, arrival.type)))
        arrival = events["ingested_at"]
    if upto is not None:
        events = events.filter(pc.less_equal(arrival, pa.scalar(upto, arrival.type)))
    return events.sort_by([("ingested_at", "ascending"), ("event_id", "ascending")])


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def _detail(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())


@dataclass(frozen=True)
class QuarantineEntry:
    line: int  # the physical line number in the source (blank lines counted)
    reason: str
    detail: str
    raw: str  # the line as text (undecodable bytes replaced), for people
    raw_base64: str | None = None  # the line's bytes exactly, when it came as bytes


@dataclass
class IngestResult:
    """One `errors ingest` batch of combined records: lines read = accepted + duplicates (an id
    repeated inside the batch) + quarantined. Each accepted record is a prediction, and a
    feedback event when it carries a correction or a flag."""

    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    feedback_events: int = 0
    quarantined: list[QuarantineEntry] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return self.read == self.accepted + self.duplicates + len(self.quarantined)

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "feedback_events": self.feedback_events,
            "quarantined": len(self.quarantined),
            "quarantine_reasons": dict(Counter(q.reason for q in self.quarantined)),
            "balanced": self.balanced,
            "files": self.files,
        }


@dataclass
class FeedbackIngestResult:
    """One `feedback ingest` batch: lines read = events accepted + quarantined; the accepted
    events' states right after the write (`applied`, `superseded`, `duplicate`, `pending`)."""

    read: int = 0
    accepted: int = 0
    quarantined: list[QuarantineEntry] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return self.read == self.accepted + len(self.quarantined) and self.accepted == sum(
            self.states.values()
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "accepted": self.accepted,
            "quarantined": len(self.quarantined),
            "quarantine_reasons": dict(Counter(q.reason for q in self.quarantined)),
            "states": {s: self.states.get(s, 0) for s in ("applied", "superseded", "duplicate", "pending")},
            "balanced": self.balanced,
            "files": self.files,
        }


@dataclass
class Resolution:
    """Feedback events joined to the visible predictions: each event's state, and per prediction
    its applied (latest) event."""

    states: dict[str, str]  # event_id (first occurrence) -> state; duplicates are only counted
    counts: Counter[str]
    applied: dict[str, dict[str, Any]]  # prediction_id -> the applied event's row
    predictions: dict[str, dict[str, Any]]  # prediction_id -> the prediction's row (the visible ones)
    quarantined: list[dict[str, Any]]  # events past the horizon without a prediction
    first_arrival: dict[str, datetime]  # event_id -> when it first arrived

    def kind(self, prediction_id: str) -> str | None:
        """`corrected`, `flagged` or `confirmed` for a prediction with an applied event, else None."""
        event = self.applied.get(prediction_id)
        if event is None:
            return None
        pred = self.predictions[prediction_id]
        return feedback_kind(pred["hypothesis"], event["corrected_text"], event["flagged"])


@dataclass
class CompactResult:
    partitions: int = 0
    files_in: int = 0
    files_out: int = 0
    rows_in: int = 0
    rows_out: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class ErrorStore:
    """The store under `root`, a local directory or a `gs://` prefix (see `objectstore`)."""

    def __init__(self, root: str | Path, pending_horizon: timedelta = timedelta(hours=24)) -> None:
        self.root = str(root)
        self.store = open_store(root)
        self.pending_horizon = pending_horizon

    # -- files -------------------------------------------------------------------------------

    def _files(
        self, stream: str, start: datetime | None = None, end: datetime | None = None, ext: str = ".parquet"
    ) -> list[tuple[datetime, str]]:
        """(partition hour, key) of the stream's files whose hour h has start-hour <= h < end.
        With a start, only the days from it on are listed (one prefix each)."""
        lo = _hour(start) if start is not None else None
        if lo is not None:
            last = (end or _now() + timedelta(hours=1)) - timedelta(microseconds=1)
            days = (last.date() - lo.date()).days + 1
            if days <= 0:
                return []
            prefixes = [f"{stream}/date={(lo + timedelta(days=d)).date().isoformat()}/" for d in range(days)]
        else:
            prefixes = [f"{stream}/"]
        out = []
        for prefix in prefixes:
            for key in self.store.list(prefix):
                hour = _partition_hour(key)
                if hour is None or not key.endswith(ext) or not key.rsplit("/", 1)[-1].startswith("part-"):
                    continue
                if (lo is None or hour >= lo) and (end is None or hour < end):
                    out.append((hour, key))
        return sorted(out)

    def _read(self, key: str, columns: Sequence[str] | None = None) -> pa.Table | None:
        """One file (the given columns), or None when it is gone (merged by a compaction)."""
        cols = list(columns) if columns else None
        if isinstance(self.store, LocalStore):
            try:
                with open(self.store.root / key, "rb") as fh:
                    return pq.ParquetFile(fh).read(columns=cols)
            except FileNotFoundError:
                return None
        found = self.store.read(key)
        if found is None:
            return None
        return pq.ParquetFile(pa.BufferReader(found.data)).read(columns=cols)

    def _tables(
        self, keys: Iterable[str], columns: Sequence[str] | None = None, seen: set[str] | None = None
    ) -> Iterator[tuple[str, pa.Table]]:
        """Each listed file's table. A file that a compaction removed after the listing is
        replaced by the partition's files not yet `seen` (the merged one among them)."""
        queue = list(keys)
        seen = seen if seen is not None else set()
        seen.update(queue)
        while queue:
            key = queue.pop(0)
            table = self._read(key, columns)
            if table is not None:
                yield key, table
                continue
            for other in self.store.list(key.rsplit("/", 1)[0] + "/"):
                if (
                    other not in seen
                    and other.rsplit("/", 1)[-1].startswith("part-")
                    and other.endswith(".parquet")
                ):
                    seen.add(other)
                    queue.append(other)

    def _matching(self, stream: str, keys: Iterable[str], wanted: pa.Array) -> list[pa.Table]:
        """The rows whose prediction_id is in `wanted`: the id column of every file, the rest of
        a file only where it matches."""
        out = []
        seen: set[str] = set()
        for key, ids in self._tables(keys, ["prediction_id"], seen):
            mask = pc.is_in(ids["prediction_id"], value_set=wanted)
            if not pc.any(mask).as_py():
                continue
            full = self._read(key)
            if full is None:  # merged away between the two reads: the files that replaced it, whole
                out += [
                    t.cast(STREAMS[stream]).filter(pc.is_in(t["prediction_id"], value_set=wanted))
                    for _, t in self._tables([key], None, seen)
                ]
                continue
            out.append(full.cast(STREAMS[stream]).filter(mask))
        return out

    def _read_many(self, stream: str, keys: Iterable[str], columns: Sequence[str] | None = None) -> pa.Table:
        schema = STREAMS[stream]
        if columns:
            schema = pa.schema([schema.field(c) for c in columns])
        tables = [t for _, t in self._tables(keys, columns)]
        if not tables:
            return schema.empty_table()
        return pa.concat_tables([t.cast(schema) for t in tables])

    def _write(self, stream: str, table: pa.Table, hours: np.ndarray, now: datetime) -> list[str]:
        """One new file per hour partition (`hours`: each row's hour since the epoch); returns their URIs."""
        order = np.argsort(hours, kind="stable")
        ordered = hours[order]
        if len(order) and (order[1:] < order[:-1]).any():
            table = table.take(pa.array(order))
        starts = [0, *(np.flatnonzero(np.diff(ordered)) + 1).tolist()]
        written = []
        for start, stop in zip(starts, [*starts[1:], len(ordered)], strict=True):
            hour = datetime.fromtimestamp(int(ordered[start]) * 3600, UTC)
            key = f"{stream}/{_partition(hour)}/{_file_name(now, 'parquet')}"
            self.store.create(key, _parquet_bytes(table.slice(start, stop - start)))
            written.append(join_uri(self.root, key))
        return written

    def _write_feedback(self, events: list[dict[str, Any]], now: datetime) -> list[str]:
        """Feedback rows, all in the partition of their arrival hour."""
        if not events:
            return []
        table = pa.Table.from_pylist(events, schema=FEEDBACK_SCHEMA)
        return self._write("feedback", table, np.full(len(events), _us(now) // 3_600_000_000), now)

    def _quarantine(self, stream: str, entries: list[QuarantineEntry], now: datetime) -> None:
        if not entries:
            return
        lines = [
            orjson.dumps({"stream": stream, **e.__dict__, "quarantined_at": now.isoformat()}) for e in entries
        ]
        key = f"quarantine/{_partition(now)}/{_file_name(now, 'jsonl')}"
        self.store.create(key, b"\n".join(lines) + b"\n")

    # -- writes ------------------------------------------------------------------------------

    def put_audio(self, data: bytes, ext: str = "wav") -> tuple[str, str]:
        """Store audio by the SHA-256 of its bytes (once); returns (uri, sha256)."""
        sha = hashlib.sha256(data).hexdigest()
        key = f"audio/{sha[:2]}/{sha}.{ext}"
        with contextlib.suppress(PreconditionFailed):  # the same bytes are already there
            self.store.create(key, data)
        return join_uri(self.root, key), sha

    def write_predictions(self, rows: Sequence[dict[str, Any]], now: datetime | None = None) -> list[str]:
        """Append captured predictions (dicts with PREDICTION_SCHEMA's fields but `ingested_at`)."""
        if not rows:
            return []
        now = now or _now()
        table = pa.Table.from_pylist(
            [{**r, "ingested_at": now, "metadata": r.get("metadata") or {}} for r in rows],
            schema=PREDICTION_SCHEMA,
        )
        return self._write("predictions", table, _hours(table), now)

    @staticmethod
    def _parse(
        rows: Iterable[Any],
        validate: Callable[[Any], Any],
        quarantined: list[QuarantineEntry],
        time_field: str,
        now: datetime,
    ) -> Iterator[tuple[int, Any]]:
        """(line number, validated value) of each good row; the others are quarantined, each with
        its reason and its bytes. Rows are dicts, JSON strings or bytes, or `Line`s (a source's
        lines with their physical numbers)."""
        latest = now + MAX_FUTURE
        for index, item in enumerate(rows, 1):
            lineno, row = (item.number, item.data) if isinstance(item, Line) else (index, item)
            raw = isinstance(row, str | bytes)
            if raw and len(row) > MAX_LINE_BYTES:
                _reject(quarantined, lineno, row, "line_too_long", f"{len(row)} bytes > {MAX_LINE_BYTES}")
                continue
            try:
                data = orjson.loads(row) if raw else row
            except orjson.JSONDecodeError as exc:
                _reject(quarantined, lineno, row, "invalid_json", str(exc))
                continue
            if type(data) is not dict:
                _reject(quarantined, lineno, row, "not_an_object", type(data).__name__)
                continue
            rec_id = data.get("id", data.get("prediction_id"))
            if isinstance(rec_id, str) and len(rec_id) > MAX_ID_CHARS:
                _reject(quarantined, lineno, row, "id_too_long", f"{len(rec_id)} characters > {MAX_ID_CHARS}")
                continue
            try:
                value = validate(data)
            except ValidationError as exc:
                _reject(quarantined, lineno, row, "invalid_record", _detail(exc))
                continue
            when = value[time_field] if isinstance(value, dict) else getattr(value, time_field)
            try:
                utc = when.astimezone(UTC)
            except OverflowError:  # a zone offset past the ends of the calendar
                _reject(
                    quarantined,
                    lineno,
                    row,
                    "invalid_timestamp",
                    f"{time_field} {when.isoformat()} is out of range in UTC",
                )
                continue
            if utc > latest:  # it would count as recent traffic for years
                _reject(
                    quarantined,
                    lineno,
                    row,
                    "timestamp_in_future",
                    f"{time_field} {utc.isoformat()} is after {latest.isoformat()}",
                )
                continue
            yield lineno, value

    def ingest_feedback(self, rows: Iterable[Any], now: datetime | None = None) -> FeedbackIngestResult:
        """Append feedback events (dicts or raw JSON lines); invalid lines are quarantined with a
        reason. Returns the counts and the accepted events' states right after the write."""
        now = now or _now()
        result = FeedbackIngestResult()
        rows = list(rows)
        result.read = len(rows)
        events: list[dict[str, Any]] = []
        for _, event in self._parse(
            rows, FeedbackEvent.model_validate, result.quarantined, "event_time", now
        ):
            event_id = _event_id(
                event.prediction_id, event.corrected_text, event.flagged, event.event_time, event.source
            )
            events.append(event_row(event, event_id, now))
        result.accepted = len(events)
        result.files = self._write_feedback(events, now)
        self._quarantine("feedback", result.quarantined, now)
        if events:
            resolution = self.resolve_for({e["prediction_id"] for e in events}, now=now)
            in_batch: set[str] = set()
            for e in events:
                sent_before = resolution.first_arrival.get(e["event_id"], now) < now
                state = (
                    "duplicate"
                    if sent_before or e["event_id"] in in_batch
                    else resolution.states[e["event_id"]]
                )
                in_batch.add(e["event_id"])
                result.states[state] = result.states.get(state, 0) + 1
        return result

    def ingest(self, rows: Iterable[Any], now: datetime | None = None) -> IngestResult:
        """Append combined records (a prediction with its correction or flag); bad lines are
        quarantined with a reason, an id repeated inside the batch is a duplicate. A record for a
        prediction already stored adds its correction as a feedback event.

        Column-wise: each line is checked by pydantic-core as a dict and lands in column lists,
        so the cost stays near that of parsing the lines and writing Parquet."""
        now = now or _now()
        result = IngestResult()
        rows = list(rows)
        result.read = len(rows)
        cols: dict[str, list[Any]] = {
            name: []
            for name in (
                "prediction_id",
                "predicted_at",
                "model_version",
                "hypothesis",
                "metadata",
                "audio_uri",
            )
        }
        events: list[dict[str, Any]] = []
        seen: set[str] = set()
        for _, rec in self._parse(
            rows, TRANSCRIPT_RECORD.validate_python, result.quarantined, "timestamp", now
        ):
            pid = rec["id"]
            if pid in seen:
                result.duplicates += 1
                continue
            seen.add(pid)
            cols["prediction_id"].append(pid)
            cols["predicted_at"].append(rec["timestamp"])
            cols["model_version"].append(rec.get("model_version"))
            cols["hypothesis"].append(rec["hypothesis"])
            cols["metadata"].append(rec.get("metadata") or {})
            cols["audio_uri"].append(rec["audio_uri"])
            corrected, flagged = rec.get("corrected_text"), rec.get("flagged", False)
            if corrected is not None or flagged:
                events.append(
                    {
                        "event_id": _event_id(pid, corrected, flagged, rec["timestamp"], "errors-ingest"),
                        "prediction_id": pid,
                        "corrected_text": corrected,
                        "flagged": flagged,
                        "event_time": rec["timestamp"],
                        "source": "errors-ingest",
                        "ingested_at": now,
                    }
                )
        n = len(cols["prediction_id"])
        result.accepted = n
        if n:
            arrays = {
                "prediction_id": pa.array(cols["prediction_id"], pa.string()),
                "predicted_at": pa.array(cols["predicted_at"], TIMESTAMP),
                "model_version": pa.array(cols["model_version"], pa.string()),
                "endpoint": pa.nulls(n, pa.string()),
                "hypothesis": pa.array(cols["hypothesis"], pa.string()),
                "metadata": pa.array(cols["metadata"], PREDICTION_SCHEMA.field("metadata").type),
                "duration_s": pa.nulls(n, pa.float32()),
                "audio_uri": pa.array(cols["audio_uri"], pa.string()),
                "audio_sha256": pa.nulls(n, pa.string()),
                "ingested_at": pa.array(np.full(n, _us(now), dtype="int64"), pa.int64()).cast(TIMESTAMP),
            }
            table = pa.table(arrays, schema=PREDICTION_SCHEMA)
            result.files = self._write("predictions", table, _hours(table), now)
        result.files += self._write_feedback(events, now)
        result.feedback_events = len(events)
        self._quarantine("records", result.quarantined, now)
        return result

    def ingest_file(self, path: str | Path, now: datetime | None = None) -> IngestResult:
        return self.ingest(_lines(path), now=now)

    def ingest_feedback_file(self, path: str | Path, now: datetime | None = None) -> FeedbackIngestResult:
        return self.ingest_feedback(_lines(path), now=now)

    # -- reads -------------------------------------------------------------------------------

    def predictions(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Predictions with start <= predicted_at < end, each id once (the first written)."""
        cols = list(columns) if columns else None
        if cols is not None:
            cols = list(dict.fromkeys(["prediction_id", "predicted_at", *cols]))
        keys = [k for _, k in self._files("predictions", start, end)]
        table = _first_by(self._read_many("predictions", keys, cols), "prediction_id")
        if start is not None:
            table = table.filter(
                pc.greater_equal(table["predicted_at"], pa.scalar(start, table["predicted_at"].type))
            )
        if end is not None:
            table = table.filter(pc.less(table["predicted_at"], pa.scalar(end, table["predicted_at"].type)))
        return table

    def lookup(self, prediction_ids: Iterable[str]) -> pa.Table:
        """The visible predictions among these ids. A UUIDv7 id is looked for in its own hour; an
        id of another form costs a scan of the id column of every partition."""
        ids = set(prediction_ids)
        if not ids:
            return PREDICTION_SCHEMA.empty_table()
        ms = [id_ms(i) for i in ids]
        hours = {datetime.fromtimestamp(m // 3_600_000 * 3600, UTC) for m in ms if m is not None}
        if any(m is None for m in ms):
            keys = [k for _, k in self._files("predictions")]
        else:
            keys = [
                k for h in sorted(hours) for _, k in self._files("predictions", h, h + timedelta(hours=1))
            ]
        tables = self._matching("predictions", keys, pa.array(sorted(ids), pa.string()))
        if not tables:
            return PREDICTION_SCHEMA.empty_table()
        return _first_by(pa.concat_tables(tables), "prediction_id")

    def feedback(self, after: datetime | None = None, upto: datetime | None = None) -> pa.Table:
        """Events that arrived with after < ingested_at <= upto, in arrival order, repeats included."""
        keys = [
            k for _, k in self._files("feedback", after, _hour(upto) + timedelta(hours=1) if upto else None)
        ]
        return _arrived(self._read_many("feedback", keys), after, upto)

    def feedback_for(
        self, prediction_ids: Iterable[str], upto: datetime | None = None, after: datetime | None = None
    ) -> pa.Table:
        """Every event about these predictions that arrived in (after, upto]; reads the id
        column of those partitions, and the rest of a file only where it matches. Events arrive
        after their prediction was made, so `after` a little before the earliest prediction
        loses none."""
        wanted = pa.array(sorted(set(prediction_ids)), pa.string())
        if len(wanted) == 0:
            return FEEDBACK_SCHEMA.empty_table()
        end = _hour(upto) + timedelta(hours=1) if upto else None
        tables = self._matching("feedback", [k for _, k in self._files("feedback", after, end)], wanted)
        return _arrived(pa.concat_tables(tables) if tables else FEEDBACK_SCHEMA.empty_table(), after, upto)

    def resolve(
        self, events: pa.Table, now: datetime | None = None, predictions: pa.Table | None = None
    ) -> Resolution:
        """Join events (every event of each prediction they name) to the visible predictions
        (`predictions` when the caller has read them already, else looked up)."""
        now = now or _now()
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
            predictions = self.lookup(named)
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
        for pid, group in by_prediction.items():
            if pid in visible:
                latest = max(group, key=lambda r: (r["event_time"], r["ingested_at"], r["event_id"]))
                applied[pid] = latest
                for r in group:
                    states[r["event_id"]] = "applied" if r is latest else "superseded"
                continue
            for r in group:
                expired = now - r["ingested_at"] > self.pending_horizon
                states[r["event_id"]] = "quarantined" if expired else "pending"
                if expired:
                    quarantined.append(r)
        counts.update(states.values())
        for state in FEEDBACK_STATES:
            counts.setdefault(state, 0)
        first_arrival = {e: r["ingested_at"] for e, r in first.items()}
        return Resolution(states, counts, applied, visible, quarantined, first_arrival)

    def resolve_for(self, prediction_ids: Iterable[str], now: datetime | None = None) -> Resolution:
        """Every event about these predictions, joined. Events arrive after their prediction was
        made: those that arrived before the earliest visible one (less an hour of clock skew) are
        not read, unless some prediction is not visible yet."""
        ids = set(prediction_ids)
        predictions = self.lookup(ids)
        after = None
        if predictions.num_rows == len(ids) and predictions.num_rows:
            after = pc.min(predictions["predicted_at"]).as_py() - CLOCK_SKEW
        return self.resolve(self.feedback_for(ids, upto=now, after=after), now=now, predictions=predictions)

    def errors(self, upto: datetime | None = None) -> Iterator[tuple[dict[str, Any], dict[str, Any], str]]:
        """(prediction, its latest event, kind) for each prediction whose latest feedback that
        arrived by `upto` says it was wrong: kind `corrected` or `flagged`."""
        resolution = self.resolve(self.feedback(upto=upto), now=upto)
        for pid in sorted(resolution.applied):
            kind = resolution.kind(pid)
            if kind in ("corrected", "flagged"):
                yield resolution.predictions[pid], resolution.applied[pid], kind

    def quarantine(self, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Lines rejected at ingest, oldest first."""
        for _, key in self._files("quarantine", since, ext=".jsonl"):
            found = self.store.read(key)
            if found is None:
                continue
            for line in found.data.splitlines():
                yield orjson.loads(line)

    def stats(self, since: datetime | None = None, now: datetime | None = None) -> dict[str, Any]:
        """Counts over the whole store (reads the feedback and the predictions' id column)."""
        now = now or _now()
        events = self.feedback(upto=now)
        resolution = self.resolve(events, now=now)
        rejected = Counter(q["stream"] for q in self.quarantine())
        kinds = Counter(resolution.kind(pid) for pid in resolution.applied)
        return {
            "predictions": self.predictions(columns=["prediction_id"]).num_rows,
            "feedback_events": {
                "read": events.num_rows + rejected.get("feedback", 0),
                **{state: resolution.counts[state] for state in FEEDBACK_STATES},
                "rejected_at_ingest": rejected.get("feedback", 0),
            },
            "labels": {k: kinds.get(k, 0) for k in ("corrected", "flagged", "confirmed")},
            "records_rejected_at_ingest": rejected.get("records", 0),
            "since_watermark": {
                "watermark": since,
                "feedback_events": distinct_events(_arrived(events, since)),
            },
        }

    def export(
        self,
        *,
        since: datetime | None = None,
        version: str | None = None,
        now: datetime | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Stored predictions (made at or after `since`, of `version`), each with its latest
        feedback and how many events it had; one hour partition at a time."""
        now = now or _now()
        events = self.feedback(upto=now)
        resolution = self.resolve(events, now=now)
        counts = Counter(events["prediction_id"].to_pylist())
        hours = sorted({h for h, _ in self._files("predictions", since)})
        for hour in hours:
            table = self.predictions(max(hour, since) if since else hour, hour + timedelta(hours=1))
            if version is not None:
                table = table.filter(pc.equal(table["model_version"], version))
            for row in table.sort_by("predicted_at").to_pylist():
                pid = row["prediction_id"]
                event = resolution.applied.get(pid)
                row["metadata"] = dict(row["metadata"] or [])
                row["feedback"] = (
                    {
                        k: event[k]
                        for k in ("corrected_text", "flagged", "event_time", "source", "ingested_at")
                    }
                    if event is not None
                    else None
                )
                row["label"] = (
                    feedback_kind(row["hypothesis"], event["corrected_text"], event["flagged"])
                    if event
                    else None
                )
                row["feedback_events"] = counts.get(pid, 0)
                yield row

    def export_quarantine(self, now: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Lines rejected at ingest, then feedback events whose prediction never arrived."""
        yield from self.quarantine()
        now = now or _now()
        for event in self.resolve(self.feedback(upto=now), now=now).quarantined:
            yield {
                "stream": "feedback",
                "reason": "unknown_prediction",
                "detail": f"no prediction {event['prediction_id']} within {self.pending_horizon} of the event's arrival",
                "event": event,
            }

    # -- maintenance ---------------------------------------------------------------------------

    def compact(self, now: datetime | None = None, min_files: int = 2) -> CompactResult:
        """Merge each partition's files into one, dropping repeated rows, then delete the inputs.

        Safe beside writers (a file written meanwhile is not an input and stays) and readers (who
        drop the rows a merge briefly shows twice); two compactions of one partition write the same
        file name, so the second finds it and only deletes what is left. Partitions of the
        current hour are left to their writers."""
        now = now or _now()
        result = CompactResult()
        for stream, key_col in (("predictions", "prediction_id"), ("feedback", "event_id")):
            by_hour: dict[datetime, list[str]] = {}
            for hour, key in self._files(stream, end=_hour(now)):
                by_hour.setdefault(hour, []).append(key)
            for hour, keys in by_hour.items():
                if len(keys) < min_files:
                    continue
                found = [(k, self.store.read(k)) for k in keys]
                inputs = [(k, v) for k, v in found if v is not None]
                if len(inputs) < min_files:
                    continue
                tables = [pq.read_table(pa.BufferReader(v.data)).cast(STREAMS[stream]) for _, v in inputs]
                merged = pa.concat_tables(tables)
                merged = merged.sort_by([("ingested_at", "ascending"), (key_col, "ascending")])
                merged = _first_by(merged, key_col)
                digest = hashlib.sha256("\n".join(sorted(k for k, _ in inputs)).encode()).hexdigest()[:16]
                out_key = f"{stream}/{_partition(hour)}/part-{hour.strftime('%Y%m%dT%H%M%S%fZ')}-compact-{digest}.parquet"
                with contextlib.suppress(PreconditionFailed):  # another compaction of these inputs wrote it
                    self.store.create(out_key, _parquet_bytes(merged))
                for key, version in inputs:
                    with contextlib.suppress(PreconditionFailed):  # already gone
                        self.store.delete(key, if_generation=version.generation)
                result.partitions += 1
                result.files_in += len(inputs)
                result.files_out += 1
                result.rows_in += sum(t.num_rows for t in tables)
                result.rows_out += merged.num_rows
        return result


def _event_id(
    prediction_id: str, corrected_text: str | None, flagged: bool, event_time: datetime, source: str
) -> str:
    """The same event sent twice has the same id; any difference makes another event."""
    body = orjson.dumps(
        [prediction_id, corrected_text, flagged, event_time.astimezone(UTC).isoformat(), source]
    )
    return hashlib.sha256(body).hexdigest()[:32]


def _us(t: datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def _hours(table: pa.Table) -> np.ndarray:
    """Each prediction's partition: the hour in its UUIDv7 id, else the hour of `predicted_at`."""
    at_hours = table["predicted_at"].cast(pa.int64()).to_numpy() // 3_600_000_000
    out = np.asarray(at_hours, dtype=np.int64).copy()
    for i, pid in enumerate(table["prediction_id"].to_pylist()):
        ms = id_ms(pid)
        if ms is not None:
            out[i] = ms // 3_600_000
    return out


def _text(row: Any) -> str:
    if isinstance(row, bytes):
        return row.decode(errors="replace")
    return row if isinstance(row, str) else orjson.dumps(row, default=str).decode()


def _reject(quarantined: list[QuarantineEntry], lineno: int, row: Any, reason: str, detail: str) -> None:
    quarantined.append(QuarantineEntry(lineno, reason, detail, *_kept(row)))


def _kept(row: Any) -> tuple[str, str | None]:
    """A rejected row as quarantine keeps it: readable text, and its exact bytes when it had any."""
    if isinstance(row, bytes):
        return _text(row), base64.b64encode(row).decode()
    return _text(row), None


@dataclass(frozen=True)
class Line:
    """One line of a source with its physical line number (blank lines counted)."""

    number: int
    data: bytes


def _lines(source: str | Path) -> list[Line]:
    """The non-blank lines of a local file, a `gs://` object, or standard input (`-`), numbered
    as an editor numbers them. Lines end at LF (a CR before it is dropped; a bare CR inside a line
    is the line's own byte, not a break), and a UTF-8 byte-order mark at the start is skipped."""
    if str(source) == "-":
        data = sys.stdin.buffer.read()
    elif is_remote(source):
        try:
            data = read_uri(source)
        except FileNotFoundError:
            raise InputNotFound(f"no such object: {source}") from None
    else:
        path = Path(source)
        if not path.is_file():
            raise InputNotFound(f"no such file: {path}")
        data = path.read_bytes()
    data = data.removeprefix(b"\xef\xbb\xbf")
    lines = [Line(n, line.removesuffix(b"\r")) for n, line in enumerate(data.split(b"\n"), 1)]
    return [line for line in lines if line.data.strip()]


def latest_kinds(events: pa.Table, predictions: pa.Table) -> pa.Table:
    """Per prediction in `predictions` with feedback in `events`: its latest event (latest
    `event_time`, then arrival, then event id) and its `kind`, computed column-wise; the same as
    `Resolution.kind`, without a Python loop over the rows."""
    cols = ["prediction_id", "corrected_text", "flagged", "event_time", "ingested_at", "event_id"]
    if events.num_rows == 0 or predictions.num_rows == 0:
        return pa.table(
            {**{c: events.select(cols)[c] for c in cols}, "kind": pa.array([], pa.string())}
        ).slice(0, 0)
    # an event sent again counts from its first arrival, as in `resolve`
    first = _first_by(
        events.select(cols).sort_by([("ingested_at", "ascending"), ("event_id", "ascending")]), "event_id"
    )
    ordered = first.sort_by(
        [
            ("prediction_id", "ascending"),
            ("event_time", "descending"),
            ("ingested_at", "descending"),
            ("event_id", "descending"),
        ]
    )
    latest = _first_by(ordered, "prediction_id")
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


def open_error_store(config: FlywheelConfig) -> ErrorStore:
    """The configured error store."""
    assert config.paths.error_store
    return ErrorStore(config.paths.error_store, pending_horizon=config.feedback.pending_horizon)
