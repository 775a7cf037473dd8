"""The store's files: hour partitions of Parquet per stream, quarantine lines, audio by content.

`Partitions` lists, reads and writes them; everything above it (ingest, resolution, export,
compaction) works on tables and never on keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stt_flywheel.data.identity import ANONYMOUS
from stt_flywheel.data.records import FEEDBACK_SCHEMA, PREDICTION_SCHEMA, ids_ms
from stt_flywheel.storage.objectstore import PreconditionFailed, join_uri, open_store

__all__ = [
    "HOUR_MS",
    "HOUR_US",
    "INDEX_COMPLETE",
    "INDEX_SCHEMA",
    "STREAMS",
    "UNOWNED",
    "Partitions",
    "arrived",
    "distinct_events",
    "first_by",
    "hour_of",
    "partition",
    "replace_file",
    "utc_now",
]

HOUR_US = 3_600_000_000  # an hour in microseconds (Arrow timestamps)
HOUR_MS = 3_600_000  # an hour in milliseconds (UUIDv7 ids)
STREAMS = {"predictions": PREDICTION_SCHEMA, "feedback": FEEDBACK_SCHEMA}

# The user index (`who`): which hour partitions hold whose rows, so a forget reads only those.
INDEX_SCHEMA = pa.schema([("key", pa.string()), ("stream", pa.string()), ("partition", pa.string())])
INDEX_NEW = "who/new/"  # a segment per write, before its rows; merged by compaction into shards
INDEX_COMPLETE = "who/complete.json"  # every row of the store is indexed (a new store, `store index`)
SHARED_AUDIO = "who/shared/"  # audio stored again: more than one prediction may name it
UNOWNED = "_unowned"  # feedback about a prediction the store did not hold when it arrived


def utc_now() -> datetime:
    return datetime.now(UTC)


def hour_of(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def partition(t: datetime) -> str:
    h = hour_of(t)
    return f"date={h.date().isoformat()}/hour={h.hour:02d}"


def partition_hour(key: str) -> datetime | None:
    """The hour of a key `<stream>/date=YYYY-MM-DD/hour=HH/<file>`, None for any other key."""
    parts = key.split("/")
    if len(parts) != 4 or not parts[1].startswith("date=") or not parts[2].startswith("hour="):
        return None
    try:
        return datetime.fromisoformat(f"{parts[1][5:]}T{parts[2][5:]}:00:00+00:00")
    except ValueError:
        return None


def file_name(now: datetime, ext: str) -> str:
    return f"part-{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}.{ext}"


def first_by(table: pa.Table, key: str) -> pa.Table:
    """The first row (in the table's order) of each value of `key`."""
    if table.num_rows == 0:
        return table
    indexed = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    first = indexed.group_by(key).aggregate([("_row", "min")])["_row_min"]
    return table.take(pc.take(first, pc.sort_indices(first)))


def distinct_events(events: pa.Table) -> int:
    """How many events, counting one stored twice (two ingests of one file at once) once."""
    return pc.count_distinct(events["event_id"]).as_py() if events.num_rows else 0


def arrived(events: pa.Table, after: datetime | None = None, upto: datetime | None = None) -> pa.Table:
    """The events with after < ingested_at <= upto, in arrival order."""
    arrival = events["ingested_at"]
    if after is not None:
        events = events.filter(pc.greater(arrival, pa.scalar(after, arrival.type)))
        arrival = events["ingested_at"]
    if upto is not None:
        events = events.filter(pc.less_equal(arrival, pa.scalar(upto, arrival.type)))
    return events.sort_by([("ingested_at", "ascending"), ("event_id", "ascending")])


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with `schema`'s columns in its order: a column that files written before it existed
    lack reads as nulls."""
    missing = [f for f in schema if f.name not in table.column_names]
    for f in missing:
        table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
    return table.select(schema.names).cast(schema) if missing or table.schema != schema else table


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def index_segment(
    stream: str, table: pa.Table, hours: np.ndarray, owners: Sequence[str | None] | None = None
) -> pa.Table:
    """The user index's rows for `table` (each row's hour since the epoch in `hours`): each user
    and hour partition once, and for feedback also the user whose prediction each event is about
    (`owners`; None: not in the store yet, `UNOWNED`)."""
    hour_col = pa.array(hours, pa.int64())
    keys = pa.table({"key": table["user"], "hour": hour_col})
    if owners is not None:
        named = pa.array([o if o is not None else UNOWNED for o in owners], pa.string())
        keys = pa.concat_tables([keys, pa.table({"key": named, "hour": hour_col})])
    keys = keys.filter(pc.is_valid(keys["key"])).group_by(["key", "hour"]).aggregate([])
    distinct = pc.unique(keys["hour"])
    names = pa.array([partition(datetime.fromtimestamp(h * 3600, UTC)) for h in distinct.to_pylist()])
    return pa.table(
        {
            "key": keys["key"],
            "stream": pa.array([stream] * keys.num_rows, pa.string()),
            "partition": names.take(pc.index_in(keys["hour"], distinct)),
        },
        schema=INDEX_SCHEMA,
    )


def epoch_us(t: datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def prediction_hours(table: pa.Table) -> np.ndarray:
    """Each prediction's partition: the hour in its UUIDv7 id, else the hour of `predicted_at`."""
    at_hours = np.asarray(table["predicted_at"].cast(pa.int64()).to_numpy(), np.int64) // HOUR_US
    ms = ids_ms(table["prediction_id"].combine_chunks())
    return np.where(ms >= 0, ms // HOUR_MS, at_hours)


class Partitions:
    """The files under `root`, a local directory or a `gs://` prefix (see `objectstore`), and
    the reads of whole streams and of predictions by id that the rest of the store builds on."""

    def __init__(self, root: str | Path) -> None:
        self.root = str(root)
        self.store = open_store(root)
        self._index_begun = False

    # -- files -------------------------------------------------------------------------------

    def list_files(
        self, stream: str, start: datetime | None = None, end: datetime | None = None, ext: str = ".parquet"
    ) -> list[tuple[datetime, str]]:
        """(partition hour, key) of the stream's files whose hour h has start-hour <= h < end.
        With a start, only the days from it on are listed (one prefix each)."""
        lo = hour_of(start) if start is not None else None
        if lo is not None:
            last = (end or utc_now() + timedelta(hours=1)) - timedelta(microseconds=1)
            days = (last.date() - lo.date()).days + 1
            if days <= 0:
                return []
            prefixes = [f"{stream}/date={(lo + timedelta(days=d)).date().isoformat()}/" for d in range(days)]
        else:
            prefixes = [f"{stream}/"]
        out = []
        for prefix in prefixes:
            for key in self.store.list(prefix):
                hour = partition_hour(key)
                if hour is None or not key.endswith(ext) or not key.rsplit("/", 1)[-1].startswith("part-"):
                    continue
                if (lo is None or hour >= lo) and (end is None or hour < end):
                    out.append((hour, key))
        return sorted(out)

    def read_file(self, key: str, columns: Sequence[str] | None = None) -> pa.Table | None:
        """One file (the given columns), or None when it is gone (merged by a compaction)."""
        stream = self.store.open_bytes(key)
        if stream is None:
            return None
        with stream:
            return pq.ParquetFile(stream).read(columns=list(columns) if columns else None)

    def tables(
        self, keys: Iterable[str], columns: Sequence[str] | None = None, seen: set[str] | None = None
    ) -> Iterator[tuple[str, pa.Table]]:
        """Each listed file's table. A file that a compaction removed after the listing is
        replaced by the partition's files not yet `seen` (the merged one among them)."""
        queue = list(keys)
        seen = seen if seen is not None else set()
        seen.update(queue)
        while queue:
            key = queue.pop(0)
            table = self.read_file(key, columns)
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

    def matching(self, stream: str, keys: Iterable[str], wanted: pa.Array) -> list[pa.Table]:
        """The rows whose prediction_id is in `wanted`: the id column of every file, the rest of
        a file only where it matches."""
        out = []
        seen: set[str] = set()
        for key, ids in self.tables(keys, ["prediction_id"], seen):
            mask = pc.is_in(ids["prediction_id"], value_set=wanted)
            if not pc.any(mask).as_py():
                continue
            full = self.read_file(key)
            if full is None:  # merged away between the two reads: the files that replaced it, whole
                out += [
                    conform(t, STREAMS[stream]).filter(pc.is_in(t["prediction_id"], value_set=wanted))
                    for _, t in self.tables([key], None, seen)
                ]
                continue
            out.append(conform(full, STREAMS[stream]).filter(mask))
        return out

    def read_many(self, stream: str, keys: Iterable[str], columns: Sequence[str] | None = None) -> pa.Table:
        schema = STREAMS[stream]
        if columns:
            schema = pa.schema([schema.field(c) for c in columns])
        # a column that an older file lacks is not read (Parquet skips it) but added by `conform`
        tables = [t for _, t in self.tables(keys, columns)]
        if not tables:
            return schema.empty_table()
        return pa.concat_tables([conform(t, schema) for t in tables])

    def write(
        self,
        stream: str,
        table: pa.Table,
        hours: np.ndarray,
        now: datetime,
        owners: Sequence[str | None] | None = None,
    ) -> list[str]:
        """One new file per hour partition (`hours`: each row's hour since the epoch), after the
        user index's segment for them (`index_segment`); returns the files' URIs."""
        self._begin_index()
        segment = index_segment(stream, table, hours, owners)
        if segment.num_rows:
            self.store.create(f"{INDEX_NEW}{file_name(now, 'parquet')}", parquet_bytes(segment))
        order = np.argsort(hours, kind="stable")
        ordered = hours[order]
        if len(order) and (order[1:] < order[:-1]).any():
            table = table.take(pa.array(order))
        starts = [0, *(np.flatnonzero(np.diff(ordered)) + 1).tolist()]
        written = []
        for start, stop in zip(starts, [*starts[1:], len(ordered)], strict=True):
            hour = datetime.fromtimestamp(int(ordered[start]) * 3600, UTC)
            key = f"{stream}/{partition(hour)}/{file_name(now, 'parquet')}"
            self.store.create(key, parquet_bytes(table.slice(start, stop - start)))
            written.append(join_uri(self.root, key))
        return written

    def write_feedback(
        self, events: list[dict[str, Any]], now: datetime, owners: Sequence[str | None] | None = None
    ) -> list[str]:
        """Feedback rows, all in the partition of their arrival hour; `owners`: the user of each
        event's prediction, where the store holds it (for the user index)."""
        if not events:
            return []
        table = pa.Table.from_pylist(events, schema=FEEDBACK_SCHEMA)
        return self.write("feedback", table, np.full(len(events), epoch_us(now) // HOUR_US), now, owners)

    def _begin_index(self) -> None:
        """A store's first write starts its user index complete: nothing came before it."""
        if self._index_begun:
            return
        if self.store.read(INDEX_COMPLETE) is None and not any(
            self.store.list(f"{stream}/") for stream in STREAMS
        ):
            with contextlib.suppress(PreconditionFailed):
                self.store.create(INDEX_COMPLETE, orjson.dumps({"since": utc_now().isoformat()}))
        self._index_begun = True

    def write_lines(self, stream: str, lines: list[bytes], now: datetime) -> None:
        """JSON lines into a new file of `stream`'s partition of `now` (the quarantine)."""
        if lines:
            self.store.create(
                f"{stream}/{partition(now)}/{file_name(now, 'jsonl')}", b"\n".join(lines) + b"\n"
            )

    def put_audio(self, data: bytes, ext: str = "wav") -> tuple[str, str]:
        """Store audio by the SHA-256 of its bytes (once); returns (uri, sha256)."""
        sha = hashlib.sha256(data).hexdigest()
        key = f"audio/{sha[:2]}/{sha}.{ext}"
        try:
            self.store.create(key, data)
        except PreconditionFailed:  # the same bytes are already there: mark them shared
            with contextlib.suppress(PreconditionFailed):
                self.store.create(f"{SHARED_AUDIO}{sha}", b"")
        return join_uri(self.root, key), sha

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
        keys = [k for _, k in self.list_files("predictions", start, end)]
        table = first_by(self.read_many("predictions", keys, cols), "prediction_id")
        if start is not None:
            table = table.filter(
                pc.greater_equal(table["predicted_at"], pa.scalar(start, table["predicted_at"].type))
            )
        if end is not None:
            table = table.filter(pc.less(table["predicted_at"], pa.scalar(end, table["predicted_at"].type)))
        return table

    def lookup(self, prediction_ids: Iterable[str] | pa.Array) -> pa.Table:
        """The visible predictions among these ids. A UUIDv7 id is looked for in its own hour; an
        id of another form costs a scan of the id column of every partition."""
        given = (
            prediction_ids
            if isinstance(prediction_ids, pa.Array)
            else pa.array(list(prediction_ids), pa.string())
        )
        wanted = pc.unique(given.drop_null())
        if not len(wanted):
            return PREDICTION_SCHEMA.empty_table()
        ms = ids_ms(wanted)
        hours = {datetime.fromtimestamp(int(h) * 3600, UTC) for h in np.unique(ms[ms >= 0] // HOUR_MS)}
        if (ms < 0).any():
            keys = [k for _, k in self.list_files("predictions")]
        else:
            keys = [
                k for h in sorted(hours) for _, k in self.list_files("predictions", h, h + timedelta(hours=1))
            ]
        if not keys:  # nothing stored in those hours: no id column to read
            return PREDICTION_SCHEMA.empty_table()
        tables = self.matching("predictions", keys, wanted)
        if not tables:
            return PREDICTION_SCHEMA.empty_table()
        return first_by(pa.concat_tables(tables), "prediction_id")

    def feedback(self, after: datetime | None = None, upto: datetime | None = None) -> pa.Table:
        """Events that arrived with after < ingested_at <= upto, in arrival order, repeats included."""
        end = hour_of(upto) + timedelta(hours=1) if upto else None
        keys = [k for _, k in self.list_files("feedback", after, end)]
        return arrived(self.read_many("feedback", keys), after, upto)

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
        end = hour_of(upto) + timedelta(hours=1) if upto else None
        tables = self.matching("feedback", [k for _, k in self.list_files("feedback", after, end)], wanted)
        return arrived(pa.concat_tables(tables) if tables else FEEDBACK_SCHEMA.empty_table(), after, upto)

    def sent_this_hour(self, now: datetime) -> Counter[str]:
        """Events each user (not as a reviewer) has sent that arrived in the hour of `now`."""
        hour = hour_of(now)
        keys = [k for _, k in self.list_files("feedback", hour, hour + timedelta(hours=1))]
        events = first_by(self.read_many("feedback", keys, ["event_id", "user", "reviewer"]), "event_id")
        return Counter(row["user"] or ANONYMOUS for row in events.to_pylist() if not row["reviewer"])

    def quarantine(self, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Lines rejected at ingest, oldest first."""
        for _, key in self.list_files("quarantine", since, ext=".jsonl"):
            found = self.store.read(key)
            if found is None:
                continue
            for line in found.data.splitlines():
                yield orjson.loads(line)


def replace_file(files: Partitions, key: str, generation: str, data: bytes | None) -> str | None:
    """The file at `key` (as read at `generation`) replaced by `data`: a new file first, then the
    old one goes. The new file is named by the old one alone, so whoever rewrites a file first
    names its successor: two forgets of one file never leave two copies of the rows both keep
    (the other finds its person's rows in the successor on its next pass), and a rerun after a
    `kill -9` finds its own. Returns the new file's key when this call wrote it."""
    made = None
    if data is not None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        folder, name = key.rsplit("/", 1)
        stem, ext = name.rsplit(".", 1)
        with contextlib.suppress(PreconditionFailed):  # someone rewrote this file first
            files.store.create(f"{folder}/{stem}-f{digest}.{ext}", data)
            made = f"{folder}/{stem}-f{digest}.{ext}"
    with contextlib.suppress(PreconditionFailed):  # gone already: merged, or rewritten by another forget
        files.store.delete(key, if_generation=generation)
    return made
