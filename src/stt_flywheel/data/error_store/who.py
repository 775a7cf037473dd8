"""The user index: which hour partitions hold a person's rows, so that `forget` reads only those.

Every write of predictions or feedback (`Partitions.write`) first writes an index segment
(`who/new/part-….parquet`): one row per user pseudonym and hour partition it writes to, and for a
feedback event also the user whose prediction it is about (`_unowned` when the store did not hold
that prediction yet). The segment lands before the rows it indexes, so a `kill -9` between the two
leaves an entry too many, never a row without one. `store compact` merges the segments into
sixteen shards by the key's first character (`who/shard=<c>/`), leaving out the users a tombstone
names and, with retention, the partitions past their days. A forget reads the shard of each
person and the segments not merged yet, then the partitions they name; afterwards the person's
entries leave the index as their rows left the store.

Audio stored again (the same bytes in another prediction) is marked `who/shared/<sha256>`: a
forget deletes a person's unmarked audio at once, and looks for other names of marked audio in
the whole store.

The index is trusted once `who/complete.json` exists: a store's first write makes it (nothing came
before), and `store index` builds the index of a store written before it existed, then makes it.
Without it, forget reads every file.
"""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stt_flywheel.data.error_store.layout import (
    INDEX_COMPLETE,
    INDEX_NEW,
    INDEX_SCHEMA,
    SHARED_AUDIO,
    UNOWNED,
    Partitions,
    conform,
    parquet_bytes,
    replace_file,
)
from stt_flywheel.errors import StateError

__all__ = ["INDEX_SHARDS", "index_files", "locate", "scrub_index", "shard_of", "shared_audio"]

INDEX_SHARDS = "who/shard="


def shard_of(key: str) -> str:
    """The shard of an index key: its first character (hex for pseudonyms, `_` for `_unowned`)."""
    return key[:1] or "_"


def index_files(files: Partitions, keys: set[str] | None = None, segments_only: bool = False) -> list[str]:
    """The index's files: the segments not merged yet, and (unless `segments_only`) the shards of
    `keys` (all: None)."""
    if segments_only:
        shards = []
    elif keys is None:
        shards = [INDEX_SHARDS]
    else:
        shards = [f"{INDEX_SHARDS}{s}/" for s in sorted({shard_of(k) for k in keys})]
    return [k for prefix in (INDEX_NEW, *shards) for k in files.store.list(prefix) if k.endswith(".parquet")]


def locate(files: Partitions, keys: set[str]) -> dict[str, set[str]] | None:
    """stream → the hour partitions (`date=…/hour=…`) the index says hold rows of these keys; None
    when the index is not complete. A file merged away while read is read again from its merge."""
    if files.store.read(INDEX_COMPLETE) is None:
        return None
    wanted = pa.array(sorted(keys), pa.string())
    for _ in range(10):
        found: dict[str, set[str]] = defaultdict(set)
        complete = True
        for key in index_files(files, keys):
            data = files.store.read(key)
            if data is None:  # merged by a compaction since it was listed: list again
                complete = False
                break
            table = pq.read_table(pa.BufferReader(data.data))
            table = table.filter(pc.is_in(table["key"], value_set=wanted))
            for stream, part in zip(table["stream"].to_pylist(), table["partition"].to_pylist(), strict=True):
                found[stream].add(part)
        if complete:
            return dict(found)
    raise StateError("the user index kept changing while it was read: run forget again")


def scrub_index(files: Partitions, keys: set[str], segments_only: bool = False) -> int:
    """Take these keys' entries out of the index (their rows left the store); how many files
    were written again. Passes repeat until one finds nothing: a file another scrub or a
    compaction wrote again meanwhile may still hold them. `segments_only`: what a writer may
    have added (serving may write segments, not shards)."""
    keys = {k for k in keys if k != UNOWNED}
    rewritten = 0
    for _ in range(10):
        done = _scrub_pass(files, keys, segments_only) if keys else 0
        if not done:
            return rewritten
        rewritten += done
    raise StateError("the user index kept changing while it was scrubbed: run forget again")


def _scrub_pass(files: Partitions, keys: set[str], segments_only: bool) -> int:
    wanted = pa.array(sorted(keys), pa.string())
    rewritten = 0
    for key in index_files(files, keys, segments_only):
        found = files.store.read(key)
        if found is None:
            continue
        table = conform(pq.read_table(pa.BufferReader(found.data)), INDEX_SCHEMA)
        hit = pc.is_in(table["key"], value_set=wanted)
        if not pc.any(hit).as_py():
            continue
        kept = table.filter(pc.invert(hit))
        replace_file(files, key, found.generation, parquet_bytes(kept) if kept.num_rows else None)
        rewritten += 1
    return rewritten


def shared_audio(files: Partitions, shas: set[str]) -> set[str]:
    """Of these audio hashes, those stored again (another prediction may name the same bytes)."""
    return {sha for sha in shas if files.store.read(f"{SHARED_AUDIO}{sha}") is not None}
