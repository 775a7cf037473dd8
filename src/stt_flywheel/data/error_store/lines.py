"""Untrusted lines in: read them from a file, an object or standard input, parse and validate
each, and quarantine every line that breaks a rule with its reason and its exact bytes. What
`ingest` builds the store's rows from."""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from pydantic import ValidationError

from stt_flywheel.config import ServingLimits
from stt_flywheel.data.error_store.columns import RECORD_COLUMNS, Refused, fast_records, records_table
from stt_flywheel.data.records import bounded_records
from stt_flywheel.errors import InputNotFound, describe_validation_error
from stt_flywheel.storage.objectstore import is_remote, read_uri

__all__ = [
    "MAX_FUTURE",
    "MAX_ID_CHARS",
    "MAX_LINE_BYTES",
    "Line",
    "QuarantineEntry",
    "parse_records",
    "parse_rows",
    "read_lines",
    "record_reason",
    "reject",
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


def reject(
    quarantined: list[QuarantineEntry], lineno: int, row: Any, reason: str, detail: str, parsed: Any = None
) -> None:
    """Quarantine a row as readable text, with its exact bytes when it had any. `parsed`: the row
    as parsed and redacted (no user id in the clear); kept instead of the row when given."""
    if parsed is not None:
        quarantined.append(QuarantineEntry(lineno, reason, detail, _text(parsed)))
        return
    exact = base64.b64encode(row).decode() if isinstance(row, bytes) else None
    quarantined.append(QuarantineEntry(lineno, reason, detail, _text(row), exact))


def checked_time(when: datetime, time_field: str, latest: datetime) -> tuple[str, str] | None:
    """(reason, detail) when a record's time cannot be kept, else None."""
    if 1 < when.year < 9999 and when <= latest:  # no zone offset takes these out of range in UTC
        return None
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
    reason_of: Callable[[ValidationError, dict[str, Any]], tuple[str, str]] | None = None,
) -> Iterator[tuple[int, Any, Any]]:
    """(line number, the row as given, validated value) of each good row; the others are quarantined, each with
    its reason and its bytes. Rows are dicts, JSON strings or bytes, or `Line`s (a source's
    lines with their physical numbers). `redact`: what of a rejected line may be kept (None: the
    line as it came), asked only of the lines rejected. `reason_of`: the reason code and detail of
    a record `validate` refused (default: `invalid_record`)."""
    latest = now + MAX_FUTURE
    for index, item in enumerate(rows, 1):
        lineno, row = (item.number, item.data) if isinstance(item, Line) else (index, item)
        raw = isinstance(row, str | bytes)
        if raw and len(row) > MAX_LINE_BYTES:
            reject(quarantined, lineno, row, "line_too_long", f"{len(row)} bytes > {MAX_LINE_BYTES}")
            continue
        try:
            data = orjson.loads(row) if raw else row
        except orjson.JSONDecodeError as exc:
            reject(quarantined, lineno, row, "invalid_json", str(exc))
            continue
        if type(data) is not dict:
            reject(quarantined, lineno, row, "not_an_object", type(data).__name__)
            continue
        rec_id = data.get("id", data.get("prediction_id"))
        if isinstance(rec_id, str) and len(rec_id) > MAX_ID_CHARS:
            reject(
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
            reason = reason_of(exc, data) if reason_of else ("invalid_record", describe_validation_error(exc))
            reject(quarantined, lineno, row, *reason, redact(data))
            continue
        when = value[time_field] if isinstance(value, dict) else getattr(value, time_field)
        refused = checked_time(when, time_field, latest)
        if refused is not None:
            reject(quarantined, lineno, row, *refused, redact(data))
            continue
        yield lineno, row, value


EARLIEST = datetime(1, 1, 2, tzinfo=UTC)  # a time after this, and before LATEST, is one in UTC too
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


CHUNK = 1 << 16  # lines read as one block of columns
PROBE = 2048  # a chunk's first lines, read first: the rest is read as a block when most pass


def _vouched(
    raws: list[Any],
    at: np.ndarray,
    numbers: np.ndarray,
    bounds: tuple[int, int, int, int],
    times: tuple[datetime, datetime],
) -> tuple[list[pa.Table], np.ndarray]:
    """`fast_records` of the lines at `at`, halving a block Arrow refuses down to PROBE lines, so
    that one bad line sends few others one by one: (what was kept, which lines are left)."""
    try:
        table, left = fast_records([raws[k] for k in at.tolist()], at, numbers[at], bounds, times)
        return [table], left
    except Refused:
        if len(at) <= PROBE:
            return [], np.ones(len(at), bool)
        half = len(at) // 2
        first, left_first = _vouched(raws, at[:half], numbers, bounds, times)
        second, left_second = _vouched(raws, at[half:], numbers, bounds, times)
        return first + second, np.concatenate([left_first, left_second])


def _vouch_chunk(
    raws: list[Any],
    start: int,
    numbers: np.ndarray,
    bounds: tuple[int, int, int, int],
    times: tuple[datetime, datetime],
) -> tuple[list[pa.Table], np.ndarray]:
    """The lines of the chunk at `start` read as columns: its first PROBE lines, then the rest
    when the columns vouched for most of those (else the chunk goes line by line). (What was kept,
    which of the chunk's rows are left.)"""
    end = min(start + CHUNK, len(raws))
    left = np.ones(end - start, bool)
    whole = np.asarray([k for k in range(start, end) if type(raws[k]) is bytes], np.int64)
    probe, rest = whole[:PROBE], whole[PROBE:]
    tables: list[pa.Table] = []
    if len(probe):
        found, left[probe - start] = _vouched(raws, probe, numbers, bounds, times)
        tables += found
    if len(rest) and left[probe - start].mean() <= 0.5:
        found, left[rest - start] = _vouched(raws, rest, numbers, bounds, times)
        tables += found
    return tables, left


def parse_records(
    rows: Iterable[Any],
    limits: ServingLimits,
    quarantined: list[QuarantineEntry],
    now: datetime,
    redact: Callable[[Any], Any],
) -> pa.Table:
    """`parse_rows` for combined records, as columns (`RECORD_COLUMNS`, in the order given), the
    common case first: lines are read a block at a time as columns, where every rule is checked at
    once (`columns.fast_records`); a line the block cannot vouch for, and a row given as a dict or
    text, is kept when one validator with every bound in it accepts it, and any other goes through
    `parse_rows` alone, which finds its reason as it always did."""
    keys, chars = limits.max_metadata_keys, limits.max_metadata_chars
    bounds = (MAX_LINE_BYTES, MAX_ID_CHARS, keys, chars)
    times = (EARLIEST, min(now + MAX_FUTURE, LATEST))
    bounded = bounded_records(keys, chars, MAX_ID_CHARS, times).validator.validate_python
    slow = bounded_records(keys, chars).validator.validate_python
    reason_of = record_reason(limits)
    loads = orjson.loads
    rows = list(rows)
    numbers = np.fromiter(
        (r.number if type(r) is Line else k for k, r in enumerate(rows, 1)), np.int64, len(rows)
    )
    raws = [r.data if type(r) is Line else r for r in rows]
    starts = range(0, len(raws), CHUNK)
    # chunks are read as columns side by side (Arrow works without the GIL), then their lines
    # left over are parsed one by one, in order
    with ThreadPoolExecutor(max_workers=max(1, min(len(starts), os.cpu_count() or 1))) as pool:
        vouched = list(pool.map(lambda start: _vouch_chunk(raws, start, numbers, bounds, times), starts))
    tables: list[pa.Table] = []
    for start, (found, left) in zip(starts, vouched, strict=True):
        tables += found
        kept: list[tuple[int, int, Any]] = []
        for k in (start + np.flatnonzero(left)).tolist():
            raw, line = raws[k], int(numbers[k])
            try:  # one validator with every bound in it, then parse_rows to find the reason
                if isinstance(raw, str | bytes) and len(raw) <= MAX_LINE_BYTES:
                    raw = loads(raw)
                if type(raw) is dict:
                    kept.append((k, line, bounded(raw)))
                    continue
            except ValueError:  # orjson's and pydantic's errors
                pass
            one = Line(line, raws[k])
            kept += [
                (k, n, v)
                for n, _, v in parse_rows([one], slow, quarantined, "timestamp", now, redact, reason_of)
            ]
        if kept:
            tables.append(records_table(*zip(*kept, strict=True)))
    if not tables:
        return RECORD_COLUMNS.empty_table()
    return pa.concat_tables(tables).sort_by("item")


def record_reason(limits: ServingLimits) -> Callable[[ValidationError, dict[str, Any]], tuple[str, str]]:
    """A refused record's reason: `metadata_too_large` when its metadata's size is all that is
    wrong (more than a serving request may carry), else `invalid_record`."""

    def reason(exc: ValidationError, data: dict[str, Any]) -> tuple[str, str]:
        sizes = all(
            e["type"] in ("too_long", "string_too_long") and e["loc"][:1] == ("metadata",)
            for e in exc.errors()
        )
        problem = limits.metadata_problem(data["metadata"]) if sizes else None
        return (
            ("metadata_too_large", problem) if problem else ("invalid_record", describe_validation_error(exc))
        )

    return reason
