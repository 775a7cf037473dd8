"""Ingest: untrusted lines in, Parquet rows and quarantine entries out, counts that balance."""

from __future__ import annotations

import base64
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from pydantic import ValidationError

from stt_flywheel.config import ServingLimits
from stt_flywheel.data.error_store.layout import (
    Partitions,
    epoch_us,
    hour_of,
    prediction_hours,
    utc_now,
)
from stt_flywheel.data.error_store.resolve import resolve_for
from stt_flywheel.data.identity import ANONYMOUS, Senders
from stt_flywheel.data.records import (
    PREDICTION_SCHEMA,
    TIMESTAMP,
    TRANSCRIPT_RECORD,
    FeedbackEvent,
    event_row,
)
from stt_flywheel.errors import InputNotFound, describe_validation_error
from stt_flywheel.storage.objectstore import is_remote, read_uri

__all__ = [
    "MAX_FUTURE",
    "MAX_ID_CHARS",
    "MAX_LINE_BYTES",
    "FeedbackIngestResult",
    "IngestResult",
    "Line",
    "QuarantineEntry",
    "ingest_feedback",
    "ingest_records",
    "read_lines",
]

MAX_FUTURE = timedelta(days=1)  # a record or event dated later than this after its arrival is refused
MAX_LINE_BYTES = 1 << 20  # a longer line is quarantined unparsed (`line_too_long`)
MAX_ID_CHARS = 256  # a longer prediction id is quarantined (`id_too_long`)


@dataclass(frozen=True)
class QuarantineEntry:
    line: int  # the physical line number in the source (blank lines counted)
    reason: str
    detail: str
    raw: str  # the line as text (undecodable bytes replaced), for people
    raw_base64: str | None = None  # the line's bytes exactly, when it came as bytes


@dataclass
class IngestResult:
    """One `errors ingest` batch of combined records: lines read = accepted + duplicates (a
    record that adds nothing new) + quarantined. An accepted record adds its prediction (the first
    under its id), a feedback event when it carries a correction or a flag, or both."""

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


@dataclass(frozen=True)
class Line:
    """One line of a source with its physical line number (blank lines counted)."""

    number: int
    data: bytes


def read_lines(source: str | Path) -> list[Line]:
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


def _text(row: Any) -> str:
    if isinstance(row, bytes):
        return row.decode(errors="replace")
    return row if isinstance(row, str) else orjson.dumps(row, default=str).decode()


def _reject(
    quarantined: list[QuarantineEntry], lineno: int, row: Any, reason: str, detail: str, parsed: Any = None
) -> None:
    """Quarantine a row as readable text, with its exact bytes when it had any. `parsed`: the row
    as parsed and redacted (no user id in the clear); kept instead of the row when given."""
    if parsed is not None:
        quarantined.append(QuarantineEntry(lineno, reason, detail, _text(parsed)))
        return
    exact = base64.b64encode(row).decode() if isinstance(row, bytes) else None
    quarantined.append(QuarantineEntry(lineno, reason, detail, _text(row), exact))


def _checked_time(when: datetime, time_field: str, latest: datetime) -> tuple[str, str] | None:
    """(reason, detail) when a record's time cannot be kept, else None."""
    try:
        utc = when.astimezone(UTC)
    except OverflowError:  # a zone offset past the ends of the calendar
        return "invalid_timestamp", f"{time_field} {when.isoformat()} is out of range in UTC"
    if utc > latest:  # it would count as recent traffic for years
        return "timestamp_in_future", f"{time_field} {utc.isoformat()} is after {latest.isoformat()}"
    return None


def parse_rows(
    rows: Iterable[Any],
    validate: Callable[[Any], Any],
    quarantined: list[QuarantineEntry],
    time_field: str,
    now: datetime,
    redact: Callable[[Any], Any] = lambda data: None,
) -> Iterator[tuple[int, Any, Any]]:
    """(line number, the row as given, validated value) of each good row; the others are quarantined, each with
    its reason and its bytes. Rows are dicts, JSON strings or bytes, or `Line`s (a source's
    lines with their physical numbers). `redact`: what of a rejected line may be kept (None: the
    line as it came), asked only of the lines rejected."""
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
            _reject(
                quarantined,
                lineno,
                row,
                "id_too_long",
                f"{len(rec_id)} characters > {MAX_ID_CHARS}",
                redact(data),
            )
            continue
        try:
            value = validate(data)
        except ValidationError as exc:
            _reject(quarantined, lineno, row, "invalid_record", describe_validation_error(exc), redact(data))
            continue
        when = value[time_field] if isinstance(value, dict) else getattr(value, time_field)
        refused = _checked_time(when, time_field, latest)
        if refused is not None:
            _reject(quarantined, lineno, row, *refused, redact(data))
            continue
        yield lineno, row, value


def write_quarantine(files: Partitions, stream: str, entries: list[QuarantineEntry], now: datetime) -> None:
    lines = [
        orjson.dumps({"stream": stream, **e.__dict__, "quarantined_at": now.isoformat()}) for e in entries
    ]
    files.write_lines("quarantine", lines, now)


def ingest_feedback(
    files: Partitions,
    rows: Iterable[Any],
    pending_horizon: timedelta,
    now: datetime | None = None,
    senders: Senders | None = None,
    max_per_user_hour: int | None = None,
) -> FeedbackIngestResult:
    """Append feedback events (dicts or raw JSON lines); invalid lines are quarantined with a
    reason, and so is an event about another user's prediction unless a reviewer source sent it
    (`not_the_requester`), and a user's events past `max_per_user_hour` in this hour of arrival
    (`rate_limited`). Returns the counts and the accepted events' states after the write."""
    now = now or utc_now()
    senders = senders or Senders()
    result = FeedbackIngestResult()
    rows = list(rows)
    result.read = len(rows)
    parsed = list(
        parse_rows(
            rows, FeedbackEvent.model_validate, result.quarantined, "event_time", now, senders.redact_line
        )
    )
    predictions = files.lookup({e.prediction_id for _, _, e in parsed})
    owners = dict(zip(predictions["prediction_id"].to_pylist(), predictions["user"].to_pylist(), strict=True))
    events = []
    sent = files.sent_this_hour(now) if max_per_user_hour is not None else Counter()
    for lineno, row, e in parsed:
        user, reviewer = senders.pseudonym(e.user), e.source in senders.reviewer_sources
        owner = owners.get(e.prediction_id, user) or ANONYMOUS
        if owner != user and not reviewer:
            detail = "another user's prediction: only the requester or a reviewer source may label it"
            _reject(result.quarantined, lineno, row, "not_the_requester", detail, senders.redact_line(row))
            continue
        if max_per_user_hour is not None and not reviewer:
            if sent[user] >= max_per_user_hour:
                detail = f"more than {max_per_user_hour} events from one user in the hour from {hour_of(now):%H:00} UTC"
                _reject(result.quarantined, lineno, row, "rate_limited", detail, senders.redact_line(row))
                continue
            sent[user] += 1
        events.append(
            event_row(
                e.prediction_id, e.corrected_text, e.flagged, e.event_time, e.source, now, user, reviewer
            )
        )
    result.accepted = len(events)
    result.files = files.write_feedback(events, now)
    write_quarantine(files, "feedback", result.quarantined, now)
    if events:
        resolution = resolve_for(
            files, {e["prediction_id"] for e in events}, pending_horizon, now=now, predictions=predictions
        )
        in_batch: set[str] = set()
        for e in events:
            sent_before = resolution.first_arrival.get(e["event_id"], now) < now
            duplicate = sent_before or e["event_id"] in in_batch
            state = "duplicate" if duplicate else resolution.states[e["event_id"]]
            in_batch.add(e["event_id"])
            result.states[state] = result.states.get(state, 0) + 1
    return result


def _within_bounds(
    parsed: list[tuple[int, Any, Any]],
    limits: ServingLimits,
    senders: Senders,
    quarantined: list[QuarantineEntry],
) -> list[tuple[int, Any, Any]]:
    """The records whose metadata a serving request could carry too (the rest quarantined,
    `metadata_too_large`), each with its user as the pseudonym."""
    bounded = []
    for lineno, row, rec in parsed:
        meta = rec.get("metadata")
        problem = limits.metadata_problem(meta) if meta else None
        if problem:
            _reject(quarantined, lineno, row, "metadata_too_large", problem, senders.redact_line(row))
            continue
        rec["user"] = senders.pseudonym(rec.get("user"))
        bounded.append((lineno, row, rec))
    return bounded


_RECORD_COLUMNS = (
    "prediction_id",
    "predicted_at",
    "model_version",
    "hypothesis",
    "metadata",
    "user",
    "audio_uri",
)
_SAME_PREDICTION = ("audio_uri", "hypothesis", "user")  # what one prediction id may never change


def _conflict(first: dict[str, Any], rec: dict[str, Any]) -> str | None:
    """How `rec` differs from the prediction already known under its id, or None."""
    changed = [f for f in _SAME_PREDICTION if first[f] != rec[f]]
    if not changed:
        return None
    return f"prediction {rec['id']!r} is already stored with another " + " and ".join(changed)


def ingest_records(
    files: Partitions,
    rows: Iterable[Any],
    now: datetime | None = None,
    senders: Senders | None = None,
    limits: ServingLimits | None = None,
) -> IngestResult:
    """Append combined records (a prediction with its correction or flag); bad lines are
    quarantined with a reason. An id seen before (in the batch or in the store) keeps its first
    prediction: a record that changes its audio or hypothesis is quarantined
    (`conflicting_prediction`), one that only brings another correction or flag adds that event
    (the latest by time applies), and one that adds nothing is a duplicate. Metadata beyond what
    a serving request may carry (`limits`) is quarantined (`metadata_too_large`).

    Column-wise: each line is checked by pydantic-core as a dict and lands in column lists,
    so the cost stays near that of parsing the lines and writing Parquet."""
    now = now or utc_now()
    senders = senders or Senders()
    result = IngestResult()
    rows = list(rows)
    result.read = len(rows)
    parsed = list(
        parse_rows(
            rows,
            TRANSCRIPT_RECORD.validator.validate_python,
            result.quarantined,
            "timestamp",
            now,
            senders.redact_line,
        )
    )
    parsed = _within_bounds(parsed, limits or ServingLimits(), senders, result.quarantined)
    stored = files.lookup({rec["id"] for _, _, rec in parsed}).select(["prediction_id", *_SAME_PREDICTION])
    known: dict[str, dict[str, Any]] = {
        r["prediction_id"]: {**r, "id": r["prediction_id"], "user": r["user"] or ANONYMOUS}
        for r in stored.to_pylist()
    }
    cols: dict[str, list[Any]] = {name: [] for name in _RECORD_COLUMNS}
    events: list[dict[str, Any]] = []
    event_ids: set[str] = set()
    for lineno, row, rec in parsed:
        pid = rec["id"]
        first = known.get(pid)
        conflict = _conflict(first, rec) if first is not None else None
        if conflict:
            _reject(
                result.quarantined, lineno, row, "conflicting_prediction", conflict, senders.redact_line(row)
            )
            continue
        corrected, flagged = rec.get("corrected_text"), rec.get("flagged", False)
        event = None
        if corrected is not None or flagged:
            event = event_row(pid, corrected, flagged, rec["timestamp"], "errors-ingest", now, rec["user"])
            if event["event_id"] in event_ids:
                event = None
        if first is not None and event is None:
            result.duplicates += 1
            continue
        result.accepted += 1
        if event is not None:
            events.append(event)
            event_ids.add(event["event_id"])
        if first is None:
            known[pid] = rec
            _append_prediction(cols, rec)
    if cols["prediction_id"]:
        table = _prediction_table(cols, now)
        result.files = files.write("predictions", table, prediction_hours(table), now)
    result.files += files.write_feedback(events, now)
    result.feedback_events = len(events)
    write_quarantine(files, "records", result.quarantined, now)
    return result


def _append_prediction(cols: dict[str, list[Any]], rec: dict[str, Any]) -> None:
    cols["prediction_id"].append(rec["id"])
    cols["predicted_at"].append(rec["timestamp"])
    cols["model_version"].append(rec.get("model_version"))
    cols["hypothesis"].append(rec["hypothesis"])
    cols["metadata"].append(rec.get("metadata") or {})
    cols["user"].append(rec["user"])
    cols["audio_uri"].append(rec["audio_uri"])


def _prediction_table(cols: dict[str, list[Any]], now: datetime) -> pa.Table:
    n = len(cols["prediction_id"])
    arrays = {
        "prediction_id": pa.array(cols["prediction_id"], pa.string()),
        "predicted_at": pa.array(cols["predicted_at"], TIMESTAMP),
        "model_version": pa.array(cols["model_version"], pa.string()),
        "endpoint": pa.nulls(n, pa.string()),
        "hypothesis": pa.array(cols["hypothesis"], pa.string()),
        "metadata": pa.array(cols["metadata"], PREDICTION_SCHEMA.field("metadata").type),
        "user": pa.array(cols["user"], pa.string()),
        "duration_s": pa.nulls(n, pa.float32()),
        "audio_uri": pa.array(cols["audio_uri"], pa.string()),
        "audio_sha256": pa.nulls(n, pa.string()),
        "signature": pa.nulls(n, pa.string()),  # no serving process made it: it never decides
        "ingested_at": pa.array(np.full(n, epoch_us(now), dtype="int64"), pa.int64()).cast(TIMESTAMP),
    }
    return pa.table(arrays, schema=PREDICTION_SCHEMA)
