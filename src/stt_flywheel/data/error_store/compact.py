"""Compaction: a partition's small files merged into one, safe beside writers and readers."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stt_flywheel.data.error_store.forget import Forgotten, delete_unnamed_audio, replace_file
from stt_flywheel.data.error_store.layout import (
    INDEX_COMPLETE,
    INDEX_NEW,
    INDEX_SCHEMA,
    SHARED_AUDIO,
    STREAMS,
    Partitions,
    conform,
    file_name,
    first_by,
    hour_of,
    index_segment,
    parquet_bytes,
    partition,
    utc_now,
)
from stt_flywheel.data.error_store.who import INDEX_SHARDS, scrub_index
from stt_flywheel.storage.objectstore import PreconditionFailed, Versioned

__all__ = ["CompactResult", "build_index", "compact", "compact_index"]


@dataclass
class CompactResult:
    partitions: int = 0
    index_files: int = 0  # the user index's segments and shards merged
    files_in: int = 0
    files_out: int = 0
    rows_in: int = 0
    rows_out: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def compact(files: Partitions, now: datetime | None = None, min_files: int = 2) -> CompactResult:
    """Merge each partition's files into one, dropping repeated rows, then delete the inputs.

    Safe beside writers (a file written meanwhile is not an input and stays) and readers (who
    drop the rows a merge briefly shows twice); two compactions of one partition write the same
    file name, so the second finds it and only deletes what is left. Partitions of the
    current hour are left to their writers."""
    now = now or utc_now()
    result = CompactResult()
    forgotten = Forgotten.load(files)  # what a forget request covers is not merged back
    for stream in STREAMS:
        by_hour: dict[datetime, list[str]] = {}
        for hour, key in files.list_files(stream, end=hour_of(now)):
            by_hour.setdefault(hour, []).append(key)
        for hour, keys in by_hour.items():
            if len(keys) >= min_files:
                _merge(files, stream, hour, keys, min_files, result, forgotten)
    result.index_files = compact_index(files, now)
    return result


def _merge(
    files: Partitions,
    stream: str,
    hour: datetime,
    keys: list[str],
    min_files: int,
    result: CompactResult,
    forgotten: Forgotten,
) -> None:
    key_col = "prediction_id" if stream == "predictions" else "event_id"
    found = [(k, files.store.read(k)) for k in keys]
    inputs: list[tuple[str, Versioned]] = [(k, v) for k, v in found if v is not None]
    if len(inputs) < min_files:
        return
    tables = [conform(pq.read_table(pa.BufferReader(v.data)), STREAMS[stream]) for _, v in inputs]
    merged = pa.concat_tables(tables).sort_by([("ingested_at", "ascending"), (key_col, "ascending")])
    merged = first_by(merged, key_col)
    dropped: set[str] = set()  # audio of rows a forget request covers
    if forgotten:
        covered = forgotten.covers(merged["prediction_id"].combine_chunks(), merged["user"])
        dropped |= _audio(merged.filter(covered), stream)
        merged = merged.filter(pc.invert(covered))
    digest = hashlib.sha256("\n".join(sorted(k for k, _ in inputs)).encode()).hexdigest()[:16]
    out_key = f"{stream}/{partition(hour)}/part-{hour.strftime('%Y%m%dT%H%M%S%fZ')}-compact-{digest}.parquet"
    with contextlib.suppress(PreconditionFailed):  # another compaction of these inputs wrote it
        written = files.store.create(out_key, parquet_bytes(merged))
        later = Forgotten.load(files)  # a forget request that came while merging: its rows go
        if later.users - forgotten.users or later.predictions - forgotten.predictions:
            covered = later.covers(merged["prediction_id"].combine_chunks(), merged["user"])
            if pc.any(covered).as_py():
                dropped |= _audio(merged.filter(covered), stream)
                kept = merged.filter(pc.invert(covered))
                replace_file(files, out_key, written, parquet_bytes(kept) if kept.num_rows else None)
    if dropped:  # the forget that covers them may not see these rows: their audio goes here
        delete_unnamed_audio(files, dropped)
    for key, version in inputs:
        with contextlib.suppress(PreconditionFailed):  # already gone
            files.store.delete(key, if_generation=version.generation)
    result.partitions += 1
    result.files_in += len(inputs)
    result.files_out += 1
    result.rows_in += sum(t.num_rows for t in tables)
    result.rows_out += merged.num_rows


def _audio(rows: pa.Table, stream: str) -> set[str]:
    return set(rows["audio_sha256"].drop_null().to_pylist()) if stream == "predictions" else set()


def compact_index(
    files: Partitions, now: datetime | None = None, before: dict[str, str] | None = None
) -> int:
    """Merge the user index's segments into its shards (`data.error_store.who`), leaving out the
    users a tombstone names and, with `before` (stream → partition), the entries of the stream's
    partitions before it; how many index files went into shards."""
    now = now or utc_now()
    forgotten = Forgotten.load(files)
    segments = _read_all(files, [k for k in files.store.list(INDEX_NEW) if k.endswith(".parquet")])
    new = _index_table([t for _, _, t in segments])
    shards = set(pc.utf8_slice_codeunits(new["key"], 0, 1).to_pylist())
    if before:  # every shard has entries that may have expired
        shards |= {k[len(INDEX_SHARDS) :].split("/", 1)[0] for k in files.store.list(INDEX_SHARDS)}
    merged = 0
    for shard in sorted(shards):
        olds = _read_all(
            files, [k for k in files.store.list(f"{INDEX_SHARDS}{shard}/") if k.endswith(".parquet")]
        )
        mine = new.filter(pc.equal(pc.utf8_slice_codeunits(new["key"], 0, 1), shard))
        if not mine.num_rows and len(olds) < 2 and not before:
            continue
        rows = _index_table([mine, *(t for _, _, t in olds)])
        if forgotten.users:
            rows = rows.filter(
                pc.invert(pc.is_in(rows["key"], pa.array(sorted(forgotten.users), pa.string())))
            )
        for stream, cutoff in (before or {}).items():
            gone = pc.and_(pc.equal(rows["stream"], stream), pc.less(rows["partition"], cutoff))
            rows = rows.filter(pc.invert(gone))
        rows = rows.group_by(INDEX_SCHEMA.names).aggregate([]).select(INDEX_SCHEMA.names)
        inputs = sorted([k for k, _, _ in olds] + [k for k, _, _ in segments])
        digest = hashlib.sha256("\n".join(inputs).encode()).hexdigest()[:16]
        if rows.num_rows:
            with contextlib.suppress(PreconditionFailed):  # another compaction of these inputs wrote it
                files.store.create(
                    f"{INDEX_SHARDS}{shard}/part-{now:%Y%m%dT%H%M%S%fZ}-{digest}.parquet", parquet_bytes(rows)
                )
        _delete_read(files, olds)
        merged += len(olds)
    _delete_read(files, segments)
    later = Forgotten.load(files)  # a forget that came while merging: its entries go
    scrub_index(files, later.users - forgotten.users)
    return merged + len(segments)


def _read_all(files: Partitions, keys: list[str]) -> list[tuple[str, Versioned, pa.Table]]:
    found = [(k, files.store.read(k)) for k in keys]
    return [(k, v, pq.read_table(pa.BufferReader(v.data))) for k, v in found if v is not None]


def _index_table(tables: list[pa.Table]) -> pa.Table:
    tables = [conform(t, INDEX_SCHEMA) for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()


def _delete_read(files: Partitions, read: list[tuple[str, Versioned, pa.Table]]) -> None:
    for key, version, _ in read:
        with contextlib.suppress(PreconditionFailed):  # already gone
            files.store.delete(key, if_generation=version.generation)


def build_index(files: Partitions, now: datetime | None = None) -> dict[str, int]:
    """The user index of a store written before it existed: a segment per stream from every file,
    audio named by more than one prediction marked shared, merged into shards, then marked
    complete (forget trusts it from then on). Writers index their own rows meanwhile."""
    now = now or utc_now()
    owners = files.predictions(columns=["user", "audio_sha256"])
    owner_ids, owner_users = (owners[c].combine_chunks() for c in ("prediction_id", "user"))
    counts = {"predictions": 0, "feedback": 0, "shared_audio": 0}
    for stream in STREAMS:
        segments = []
        for hour, key in files.list_files(stream):
            table = files.read_file(key, columns=["prediction_id", "user"])
            if table is None or not table.num_rows:
                continue
            hours = np.full(table.num_rows, int(hour.timestamp()) // 3600)
            whose = None
            if stream == "feedback":
                whose = owner_users.take(pc.index_in(table["prediction_id"], value_set=owner_ids)).to_pylist()
            segments.append(index_segment(stream, table, hours, whose))
            counts[stream] += table.num_rows
        if segments:
            files.store.create(
                f"{INDEX_NEW}{file_name(now, 'parquet')}", parquet_bytes(pa.concat_tables(segments))
            )
    shas = pc.value_counts(owners["audio_sha256"].drop_null().combine_chunks())
    for sha in shas.filter(pc.greater(shas.field("counts"), 1)).field("values").to_pylist():
        with contextlib.suppress(PreconditionFailed):
            files.store.create(f"{SHARED_AUDIO}{sha}", b"")
        counts["shared_audio"] += 1
    compact_index(files, now)
    with contextlib.suppress(PreconditionFailed):
        files.store.create(INDEX_COMPLETE, orjson.dumps({"since": now.isoformat(), "built": True}))
    return counts
