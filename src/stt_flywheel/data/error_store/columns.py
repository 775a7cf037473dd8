"""Combined records parsed a block at a time: Arrow's JSON reader turns many lines into columns at
once, and every rule of the record (`records.bounded_records`) is checked on the columns. A line
the columns cannot vouch for is not judged here: it goes back to be parsed line by line, which
keeps it or finds its reason. So this path only ever keeps what the line-by-line rules keep.

What the columns cannot tell apart, they leave to the lines: a key sent as `null` and a key left
out read the same, so a line with a `null` anywhere but as the value of one of the record's
optional keys goes back; so does a line that is not one plain object, a time not written in
RFC 3339 (a space for its T allowed), and every line of a block Arrow refuses (a repeated key, a value of two types).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from stt_flywheel.data.identity import MAX_USER_CHARS
from stt_flywheel.data.records import PREDICTION_SCHEMA, TIMESTAMP

__all__ = ["RECORD_COLUMNS", "Refused", "fast_records", "records_table"]

METADATA = PREDICTION_SCHEMA.field("metadata").type
# what a parsed record is, column by column: `item` is its place among the rows given, `line` its line
RECORD_COLUMNS = pa.schema(
    [
        ("item", pa.int64()),
        ("line", pa.int64()),
        ("id", pa.string()),
        ("audio_uri", pa.string()),
        ("hypothesis", pa.string()),
        ("corrected_text", pa.string()),
        ("flagged", pa.bool_()),
        ("model_version", pa.string()),
        ("timestamp", TIMESTAMP),
        ("metadata", METADATA),
        ("user", pa.string()),
    ]
)
_VALUES = pa.schema(list(RECORD_COLUMNS)[2:])
_OPTIONAL = ("corrected_text", "model_version", "user")  # keys whose `null` means "not given"
_TEXT = ("id", "audio_uri", "hypothesis", *_OPTIONAL, "timestamp")
_READ = pa.schema([*((name, pa.string()) for name in _TEXT), ("flagged", pa.bool_())])
_WS = "[ \t\r\n]*"
_NULL = f":{_WS}null"
_OPTIONAL_NULL = f'"(?:{"|".join(_OPTIONAL)})"{_WS}{_NULL}'
_RFC3339 = (
    r"^\d{4}-\d{2}-\d{2}[T ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)


class Refused(Exception):
    """Arrow refused a block of lines as a whole: one of them is not what the block can read."""


def _plain_objects(raws: pa.Array, max_bytes: int) -> np.ndarray:
    """Which lines may be read as a block: each starts with `{` and ends with `}` (so it is at
    least one row of the block or spoils it: `fast_records` counts the rows), within the size limit."""
    ok = pc.and_(pc.starts_with(raws, "{"), pc.ends_with(raws, "}"))
    ok = pc.and_(ok, pc.less_equal(pc.binary_length(raws), max_bytes))
    # every null is the value of an optional key (where it means the key was left out)
    nulls = pc.equal(pc.count_substring_regex(raws, _NULL), pc.count_substring_regex(raws, _OPTIONAL_NULL))
    return np.asarray(pc.and_(ok, nulls).fill_null(False))


def _metadata(
    column: pa.ChunkedArray | None, raws: pa.Array, keys: int, chars: int
) -> tuple[np.ndarray, pa.Array]:
    """(which rows' metadata holds, the metadata as a map of strings; `raws`: the rows' lines).
    Absent or `{}` → empty."""
    n = len(raws)
    if column is None or pa.types.is_null(column.type):
        return np.ones(n, bool), pa.array([[]] * n, METADATA)
    array = column.combine_chunks()
    if not pa.types.is_struct(array.type):
        return np.asarray(array.is_null()), pa.array([[]] * n, METADATA)
    ok = np.ones(n, bool)
    valid = np.asarray(array.is_valid())
    names, present, values = [], [], []
    for k, field in enumerate(array.type):
        child = array.field(k)
        given = np.asarray(child.is_valid())
        if field.name in _OPTIONAL:  # a `null` of this name may be its own, not the optional key's
            named = pc.count_substring_regex(raws, f'"{field.name}"{_WS}{_NULL}')
            ok &= given | ~valid | (np.asarray(named) == 0)
        if pa.types.is_null(field.type):
            continue
        if not pa.types.is_string(field.type):  # a number, a list, an object: the line decides
            ok &= ~given
            continue
        if len(field.name) > chars:
            ok &= ~given
        ok &= np.asarray(pc.less_equal(pc.utf8_length(child), chars).fill_null(True))
        names.append(field.name)
        present.append(given)
        values.append(child)
    if not names:
        return ok, pa.array([[]] * n, METADATA)
    mask = np.column_stack(present) & valid[:, None]
    counts = mask.sum(axis=1)
    ok &= counts <= keys
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    row_major = np.flatnonzero(mask.ravel())  # (row, key) in row order, keys in the block's order
    key_of = row_major % len(names)
    row_of = row_major // len(names)
    flat = pa.concat_arrays([v.cast(pa.string()) for v in values])
    items = flat.take(pa.array(key_of * n + row_of))
    keys_array = pa.array(np.asarray(names, dtype=object)[key_of], pa.string())
    return ok, pa.MapArray.from_arrays(pa.array(offsets), keys_array, items)


def fast_records(
    raws: Sequence[bytes],
    items: np.ndarray,
    lines: np.ndarray,
    limits: tuple[int, int, int, int],
    times: tuple[datetime, datetime],
) -> tuple[pa.Table, np.ndarray]:
    """(the records of these lines that every rule keeps, as RECORD_COLUMNS; which lines are left
    to be parsed one by one). `limits`: the longest line, the longest id, the most metadata keys
    and the longest metadata key or value; `times`: the open lower and closed upper bound of a
    record's time. `Refused` when the block cannot be read as a whole."""
    max_bytes, max_id, keys, chars = limits
    block = pa.array(raws, pa.binary())
    plain = _plain_objects(block, max_bytes)
    left = ~plain
    chosen = np.flatnonzero(plain)
    if not len(chosen):
        return RECORD_COLUMNS.empty_table(), left
    try:
        table = pj.read_json(
            io.BytesIO(b"\n".join([raws[i] for i in chosen.tolist()])),
            read_options=pj.ReadOptions(block_size=max(1 << 20, 2 * max_bytes)),
            parse_options=pj.ParseOptions(explicit_schema=_READ, newlines_in_values=False),
        )
        table.validate(full=True)  # text is valid UTF-8
    except (pa.ArrowException, UnicodeDecodeError) as exc:  # one bad line spoils the block
        raise Refused(str(exc)) from None
    # a line held more than one object (none holds less: a line that opens and closes with braces
    # and would end a block's row early, or join the next, leaves text the reader refuses)
    if table.num_rows != len(chosen):
        raise Refused(f"{table.num_rows} objects in {len(chosen)} lines")
    m = len(chosen)
    ok = np.ones(m, bool)
    for name in table.column_names:
        if name not in _READ.names and name != "metadata":  # an extra key
            ok &= np.asarray(table[name].is_null())
    for name in ("id", "audio_uri", "hypothesis", "timestamp"):
        ok &= np.asarray(table[name].is_valid())
    ok &= np.asarray(
        pc.and_(
            pc.greater_equal(pc.utf8_length(table["id"]), 1),
            pc.less_equal(pc.utf8_length(table["id"]), max_id),
        ).fill_null(False)
    )
    ok &= np.asarray(pc.greater_equal(pc.utf8_length(table["audio_uri"]), 1).fill_null(False))
    ok &= np.asarray(pc.less_equal(pc.utf8_length(table["user"]), MAX_USER_CHARS).fill_null(True))
    ok &= np.asarray(pc.match_substring_regex(table["timestamp"], _RFC3339).fill_null(False))
    meta = table["metadata"] if "metadata" in table.column_names else None
    meta_ok, metadata = _metadata(meta, block.take(pa.array(chosen)), keys, chars)
    ok &= meta_ok
    stamps = pc.if_else(pa.array(ok), table["timestamp"], pa.scalar(None, pa.string()))
    try:
        when = stamps.cast(TIMESTAMP)
    except pa.ArrowInvalid as exc:  # a date the calendar lacks (30 February)
        raise Refused(str(exc)) from None
    low, high = (pa.scalar(t, TIMESTAMP) for t in times)
    ok &= np.asarray(pc.and_(pc.greater(when, low), pc.less_equal(when, high)).fill_null(False))
    left[chosen[~ok]] = True
    keep = pa.array(ok)
    out = pa.table(
        {
            "item": pa.array(items[chosen]),
            "line": pa.array(lines[chosen]),
            **{name: table[name] for name in ("id", "audio_uri", "hypothesis", "corrected_text")},
            "flagged": table["flagged"].fill_null(False),
            "model_version": table["model_version"],
            "timestamp": when,
            "metadata": metadata,
            "user": table["user"],
        },
        schema=RECORD_COLUMNS,
    )
    return out.filter(keep), left


def records_table(items: Sequence[int], lines: Sequence[int], records: Sequence[dict[str, Any]]) -> pa.Table:
    """RECORD_COLUMNS of records validated one by one."""
    for record in records:  # no metadata is empty metadata, as in a block
        record.setdefault("metadata", {})
    values = pa.Table.from_pylist(list(records), schema=_VALUES)
    flagged = values["flagged"].fill_null(False)
    values = values.set_column(values.schema.get_field_index("flagged"), "flagged", flagged)
    return values.add_column(0, "line", pa.array(lines, pa.int64())).add_column(
        0, "item", pa.array(items, pa.int64())
    )
