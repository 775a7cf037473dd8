"""Ingest: untrusted lines in, Parquet rows and quarantine entries out, counts that balance."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from stt_flywheel.config import ServingLimits
from stt_flywheel.data.error_store.forget import Forgotten, hashed_id, settle
from stt_flywheel.data.error_store.layout import (
    Partitions,
    epoch_us,
    hour_of,
    prediction_hours,
    utc_now,
)
from stt_flywheel.data.error_store.lines import QuarantineEntry, parse_records, parse_rows, reject
from stt_flywheel.data.error_store.resolve import resolve_for
from stt_flywheel.data.identity import ANONYMOUS, Senders
from stt_flywheel.data.records import (
    PREDICTION_SCHEMA,
    TIMESTAMP,
    FeedbackEvent,
    event_row,
)
from stt_flywheel.storage.objectstore import join_uri

__all__ = ["FeedbackIngestResult", "IngestResult", "ingest_feedback", "ingest_records", "write_quarantine"]


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
    caller: str | None = None,
) -> FeedbackIngestResult:
    """Append feedback events (dicts or raw JSON lines); invalid lines are quarantined with a
    reason, and so is an event about another user's prediction unless a reviewer source sent it
    (`not_the_requester`), and a user's events past `max_per_user_hour` in this hour of arrival
    (`rate_limited`). With `caller` (the name a service authenticated), an event whose `source`
    names anyone else is quarantined (`source_not_the_caller`): no caller passes for a reviewer.
    Returns the counts and the accepted events' states after the write."""
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
    forgotten = Forgotten.load(files)
    for lineno, row, e in parsed:
        if caller is not None and e.source != caller:
            detail = f"sent by {caller!r}, but its source says another: a caller's events carry its own name"
            reject(result.quarantined, lineno, row, "source_not_the_caller", detail, senders.redact_line(row))
            continue
        user, reviewer = senders.pseudonym(e.user), e.source in senders.reviewer_sources
        if forgotten and (user in forgotten.users or hashed_id(e.prediction_id) in forgotten.predictions):
            reject(result.quarantined, lineno, "", "forgotten", FORGOTTEN)
            continue
        owner = owners.get(e.prediction_id, user) or ANONYMOUS
        if owner != user and not reviewer:
            detail = "another user's prediction: only the requester or a reviewer source may label it"
            reject(result.quarantined, lineno, row, "not_the_requester", detail, senders.redact_line(row))
            continue
        if max_per_user_hour is not None and not reviewer:
            if sent[user] >= max_per_user_hour:
                detail = f"more than {max_per_user_hour} events from one user in the hour from {hour_of(now):%H:00} UTC"
                reject(result.quarantined, lineno, row, "rate_limited", detail, senders.redact_line(row))
                continue
            sent[user] += 1
        events.append(
            event_row(
                e.prediction_id, e.corrected_text, e.flagged, e.event_time, e.source, now, user, reviewer
            )
        )
    result.accepted = len(events)
    result.files = files.write_feedback(events, now, [owners.get(e["prediction_id"]) for e in events])
    settle(files, result.files, forgotten)  # a forget that came while this batch was on its way
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


# a line about a forgotten user or prediction: quarantined by reason alone, nothing of it kept
FORGOTTEN = "its user or prediction was forgotten at their request; nothing of the line is kept"

_SAME_PREDICTION = ("audio_uri", "hypothesis", "user")  # what one prediction id may never change


def _pseudonyms(users: pa.ChunkedArray, senders: Senders) -> pa.Array:
    """Each record's user as its pseudonym, each distinct id hashed once."""
    distinct = pc.unique(users)
    hashed = pa.array([senders.pseudonym(u) for u in distinct.to_pylist()], pa.string())
    return hashed.take(pc.index_in(users, distinct, skip_nulls=False))


def _remembered(
    files: Partitions, parsed: pa.Table, quarantined: list[QuarantineEntry]
) -> tuple[pa.Table, Forgotten]:
    """The records no forget request covers (the others quarantined `forgotten`, nothing of them
    kept), and the tombstones as read."""
    forgotten = Forgotten.load(files)
    if not forgotten:
        return parsed, forgotten
    covered = np.asarray(forgotten.covers(parsed["id"].combine_chunks(), parsed["user"]))
    for line in parsed["line"].filter(pa.array(covered)).to_pylist():
        reject(quarantined, line, "", "forgotten", FORGOTTEN)
    return parsed.filter(pa.array(~covered)), forgotten


def _differs(a: pa.ChunkedArray, b: pa.ChunkedArray) -> np.ndarray:
    """Where two string columns differ, a null differing from any text."""
    same = pc.or_(pc.equal(a, b).fill_null(False), pc.and_(a.is_null(), b.is_null()))
    return ~np.asarray(same)


def _root_prefixes(files: Partitions, roots: Sequence[str]) -> list[str]:
    """Each root as the prefix an inside URI starts with: a `gs://` prefix as written, a local
    directory both as written (absolute) and with its links resolved; the store's own audio too."""
    out = [join_uri(files.root, "audio").rstrip("/") + "/"]
    for root in roots:
        if root.startswith("gs://"):
            out.append(root.rstrip("/") + "/")
        elif "://" not in root:
            out += [os.path.abspath(root).rstrip("/") + "/", os.path.realpath(root).rstrip("/") + "/"]
    return list(dict.fromkeys(out))


def _outside_roots(uris: pa.ChunkedArray, prefixes: list[str]) -> np.ndarray:
    """Which URIs lie outside every prefix, judged on the text alone: a `.` or `..` segment is
    outside wherever it points. The dataset stage judges again with links resolved, at the read."""
    inside = pa.array(np.zeros(len(uris), bool))
    for prefix in prefixes:
        inside = pc.or_(inside, pc.starts_with(uris, prefix))
    dotted = pc.match_substring_regex(uris, r"(^|/)\.\.?(/|$)")
    return np.asarray(pc.or_(pc.invert(inside), dotted).fill_null(True))


def _refuse_outside(
    files: Partitions, parsed: pa.Table, rows: list[Any], roots: Sequence[str], result: IngestResult
) -> pa.Table:
    outside = _outside_roots(parsed["audio_uri"], _root_prefixes(files, roots))
    for k in np.flatnonzero(outside).tolist():
        row, line = rows[parsed["item"][k].as_py()], parsed["line"][k].as_py()
        detail = "the audio is not under dataset.audio_roots (nor in the store): it could never be trained on"
        reject(result.quarantined, line, row, "audio_outside_roots", detail)
    return parsed.filter(pa.array(~outside)) if outside.any() else parsed


def _parsed(
    files: Partitions,
    rows: list[Any],
    limits: ServingLimits,
    result: IngestResult,
    now: datetime,
    senders: Senders,
    audio_roots: Sequence[str] | None,
) -> pa.Table:
    """The lines that parse and pass the checks of a line alone, users as pseudonyms."""
    parsed = parse_records(rows, limits, result.quarantined, now, senders.redact_line)
    if audio_roots is not None:
        parsed = _refuse_outside(files, parsed, rows, audio_roots, result)
    users = _pseudonyms(parsed["user"], senders)
    return parsed.set_column(parsed.schema.get_field_index("user"), "user", users)


def ingest_records(
    files: Partitions,
    rows: Iterable[Any],
    now: datetime | None = None,
    senders: Senders | None = None,
    limits: ServingLimits | None = None,
    audio_roots: Sequence[str] | None = None,
) -> IngestResult:
    """Append combined records (a prediction with its correction or flag); bad lines are
    quarantined with a reason. An id seen before (in the batch or in the store) keeps its first
    prediction: a record that changes its audio or hypothesis is quarantined
    (`conflicting_prediction`), one that only brings another correction or flag adds that event
    (the latest by time applies), and one that adds nothing is a duplicate. Metadata beyond what
    a serving request may carry (`limits`) is quarantined (`metadata_too_large`), and so is a
    record whose audio lies outside `audio_roots` and the store (`audio_outside_roots`), when
    roots are given: the dataset stage could never read it.

    Column-wise: lines are parsed and checked a block at a time (`parse_records`), and what each
    record adds is found on the columns; only the events are built one by one."""
    now = now or utc_now()
    senders = senders or Senders()
    limits = limits or ServingLimits()
    result = IngestResult()
    rows = list(rows)
    result.read = len(rows)
    parsed = _parsed(files, rows, limits, result, now, senders, audio_roots)
    parsed, forgotten = _remembered(files, parsed, result.quarantined)
    n = parsed.num_rows
    codes = pc.dictionary_encode(parsed["id"]).combine_chunks()  # codes in order of first sight
    code = np.asarray(codes.indices, np.int64)
    first = np.unique(code, return_index=True)[1][code]  # the row where each row's id first came
    stored = files.lookup(codes.dictionary).select(["prediction_id", *_SAME_PREDICTION])
    stored = stored.set_column(3, "user", pc.coalesce(stored["user"], ANONYMOUS))
    where = np.asarray(pc.index_in(codes.dictionary, stored["prediction_id"]).fill_null(-1), np.int64)[code]
    in_store = where >= 0
    again = np.flatnonzero((first != np.arange(n)) | in_store)  # rows whose id came before them
    differs = {}
    for name in _SAME_PREDICTION:  # each such row against the prediction its id already names
        earlier = parsed[name].take(pa.array(first[again]))
        if stored.num_rows:
            known = stored[name].take(pa.array(np.where(in_store[again], where[again], 0)))
            earlier = pc.if_else(pa.array(in_store[again]), known, earlier)
        differs[name] = np.zeros(n, bool)
        differs[name][again] = _differs(parsed[name].take(pa.array(again)), earlier)
    conflict = np.logical_or.reduce(list(differs.values()))
    for k in np.flatnonzero(conflict).tolist():
        row = rows[parsed["item"][k].as_py()]
        changed = " and ".join(name for name in _SAME_PREDICTION if differs[name][k])
        reason = f"prediction {parsed['id'][k].as_py()!r} is already stored with another {changed}"
        line = parsed["line"][k].as_py()
        reject(result.quarantined, line, row, "conflicting_prediction", reason, senders.redact_line(row))
    new = (first == np.arange(n)) & ~in_store
    adds = new.copy()  # what each row adds: its prediction, an event, or nothing (a duplicate)
    says = np.asarray(pc.or_(parsed["corrected_text"].is_valid(), parsed["flagged"]))
    candidates = np.flatnonzero(says & ~conflict)
    fields = parsed.select(["id", "corrected_text", "flagged", "timestamp", "user"]).take(
        pa.array(candidates)
    )
    events: list[dict[str, Any]] = []
    event_ids: set[str] = set()
    values = zip(*(c.to_pylist() for c in fields.columns), strict=True)
    for k, (pid, corrected, flagged, when, user) in zip(candidates.tolist(), values, strict=True):
        event = event_row(pid, corrected, flagged, when, "errors-ingest", now, user)
        if event["event_id"] not in event_ids:  # the same event twice in one batch is one
            events.append(event)
            event_ids.add(event["event_id"])
            adds[k] = True
    result.accepted = int(adds.sum())
    result.duplicates = int((~adds & ~conflict).sum())
    if new.any():
        table = _prediction_table(parsed.filter(pa.array(new)), now)
        result.files = files.write("predictions", table, prediction_hours(table), now)
    result.files += files.write_feedback(events, now)
    settle(files, result.files, forgotten)  # a forget that came while this batch was on its way
    result.feedback_events = len(events)
    write_quarantine(files, "records", result.quarantined, now)
    return result


def _prediction_table(records: pa.Table, now: datetime) -> pa.Table:
    """The predictions of new records, column by column."""
    n = records.num_rows
    arrays = {
        "prediction_id": records["id"],
        "predicted_at": records["timestamp"],
        "model_version": records["model_version"],
        "endpoint": pa.nulls(n, pa.string()),
        "hypothesis": records["hypothesis"],
        "metadata": records["metadata"],
        "user": records["user"],
        "duration_s": pa.nulls(n, pa.float32()),
        "audio_uri": records["audio_uri"],
        "audio_sha256": pa.nulls(n, pa.string()),
        "signature": pa.nulls(n, pa.string()),  # no serving process made it: it never decides
        "confidence": pa.nulls(n, pa.float32()),
        "words": pa.nulls(n, PREDICTION_SCHEMA.field("words").type),
        "ingested_at": pa.array(np.full(n, epoch_us(now), dtype="int64"), pa.int64()).cast(TIMESTAMP),
    }
    return pa.table(arrays, schema=PREDICTION_SCHEMA)
