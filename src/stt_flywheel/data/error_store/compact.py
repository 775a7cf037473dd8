"""Compaction: a partition's small files merged into one, safe beside writers and readers."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stt_flywheel.data.error_store.forget import Forgotten, delete_unnamed_audio, replace_file
from stt_flywheel.data.error_store.layout import (
    STREAMS,
    Partitions,
    conform,
    first_by,
    hour_of,
    parquet_bytes,
    partition,
    utc_now,
)
from stt_flywheel.storage.objectstore import PreconditionFailed, Versioned

__all__ = ["CompactResult", "compact"]


@dataclass
class CompactResult:
    partitions: int = 0
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
