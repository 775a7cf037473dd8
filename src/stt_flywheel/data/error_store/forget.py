"""Forgetting a person in the error store: a tombstone first, then every row, line and audio
object that names them.

A request is a set of user pseudonyms and prediction ids. Its tombstone (`tombstones/<id>.json`,
the id a hash of the request) holds the pseudonyms and the SHA-256 of every prediction id it
covers, never a raw id: ingest and compaction read tombstones and keep nothing they cover.

The predictions, feedback and quarantine files that hold the person's rows are rewritten without
them (and without any other request's): the new file is written first (named after the old one
alone, so a rerun, or another forget of the same file, finds it), then the old one is deleted at
the generation read. A `kill -9` anywhere
leaves the old file, or both (readers drop the rows shown twice); a rerun finishes the job. A
compaction that merged an old file before it went can write the person's rows back: a pass
ends with a scan, and passes repeat until one finds nothing. Audio goes when no prediction of
anyone else names the same bytes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stt_flywheel.data.error_store.layout import (
    INDEX_COMPLETE,
    SHARED_AUDIO,
    STREAMS,
    UNOWNED,
    Partitions,
    conform,
    parquet_bytes,
    replace_file,
)
from stt_flywheel.data.error_store.who import locate, scrub_index, shared_audio
from stt_flywheel.errors import StateError
from stt_flywheel.storage.objectstore import PreconditionFailed

__all__ = [
    "ForgetCounts",
    "Forgotten",
    "forget_rows",
    "delete_unnamed_audio",
    "replace_file",
    "settle",
    "hashed_id",
    "request_id",
    "write_tombstone",
]

TOMBSTONES = "tombstones/"
MAX_PASSES = 5


def hashed_id(prediction_id: str) -> str:
    """How a tombstone names a prediction id."""
    return hashlib.sha256(prediction_id.encode()).hexdigest()


def request_id(users: Iterable[str], prediction_ids: Iterable[str]) -> str:
    """The same request, the same id: a rerun finds its tombstone."""
    body = orjson.dumps([sorted(set(users)), sorted(hashed_id(p) for p in set(prediction_ids))])
    return hashlib.sha256(body).hexdigest()[:32]


@dataclass
class Forgotten:
    """Every tombstone's users and hashed prediction ids: what the store keeps nothing of."""

    users: set[str] = field(default_factory=set)
    predictions: set[str] = field(default_factory=set)  # SHA-256 of the ids

    @classmethod
    def load(cls, files: Partitions) -> Forgotten:
        out = cls()
        for key in files.store.list(TOMBSTONES):
            found = files.store.read(key)
            if found is None or not key.endswith(".json"):
                continue
            stone = orjson.loads(found.data)
            out.users.update(stone.get("users", []))
            out.predictions.update(stone.get("predictions", []))
        return out

    def __bool__(self) -> bool:
        return bool(self.users or self.predictions)

    def covers(self, prediction_ids: pa.Array, users: pa.Array) -> pa.Array:
        """Which rows (by prediction id and user pseudonym) a tombstone covers. Ids are hashed to be
        compared only when a tombstone names ids."""
        by_user = pc.is_in(users, value_set=pa.array(sorted(self.users), pa.string())).fill_null(False)
        if not self.predictions:
            return by_user
        hashed = pa.array(
            [hashed_id(p) if p is not None else None for p in prediction_ids.to_pylist()], pa.string()
        )
        by_id = pc.is_in(hashed, value_set=pa.array(sorted(self.predictions), pa.string()))
        return pc.or_(by_id.fill_null(False), by_user)


def write_tombstone(files: Partitions, request: str, stone: dict[str, Any]) -> dict[str, Any]:
    """Write (or widen: the ids and audio found so far are added) a request's tombstone; returns it."""
    key = f"{TOMBSTONES}{request}.json"
    for _ in range(10):
        found = files.store.read(key)
        if found is None:
            with contextlib.suppress(PreconditionFailed):
                files.store.create(key, orjson.dumps(stone))
                return stone
            continue
        old = orjson.loads(found.data)
        merged = {**old, **stone}
        for name in ("predictions", "audio"):
            merged[name] = sorted(set(old.get(name, [])) | set(stone.get(name, [])))
        with contextlib.suppress(PreconditionFailed):
            files.store.replace(key, orjson.dumps(merged), found.generation)
            return merged
    raise StateError(f"could not write the tombstone {key}: it kept changing")


@dataclass
class ForgetCounts:
    predictions: int = 0
    feedback_events: int = 0
    quarantine_lines: int = 0
    audio_objects: int = 0
    files_rewritten: int = 0
    files_read: int = 0  # predictions and feedback files whose user and id columns were read
    passes: int = 0
    prediction_ids: set[str] = field(default_factory=set)  # found: the datasets' business

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if k != "prediction_ids"}


def forget_rows(
    files: Partitions,
    users: set[str],
    prediction_ids: set[str],
    dry_run: bool = False,
    found: Callable[[set[str], set[str]], None] | None = None,
    audio: Iterable[str] = (),
) -> ForgetCounts:
    """Remove the rows of these users and prediction ids (and the events and quarantine lines
    about those predictions, and their audio that nobody else's prediction names); with `dry_run`
    only count. `found` hears of the prediction ids and audio hashes in each file before it is
    rewritten (a tombstone keeps them, so a rerun after a `kill -9` still knows the audio to
    delete: `audio`). Passes repeat until one finds nothing (at most MAX_PASSES)."""
    counts = ForgetCounts()
    shas: set[str] = set(audio)
    clean: dict[str, set[str]] = {}  # files found without them, per stream and what was looked for
    # the partitions that hold them, by the user index; a request that names ids reads every file
    where = locate(files, users | {UNOWNED}) if users and not prediction_ids else None
    parts = {s: where.get(s, set()) if where is not None else None for s in STREAMS}
    for _ in range(MAX_PASSES):
        counts.passes += 1
        rows = _forget_stream(
            files,
            "predictions",
            users,
            prediction_ids,
            counts,
            dry_run,
            clean,
            shas,
            found,
            parts["predictions"],
        )
        about = counts.prediction_ids | prediction_ids
        rows += _forget_stream(
            files, "feedback", users, about, counts, dry_run, clean, partitions=parts["feedback"]
        )
        rows += _forget_quarantine(files, users, about, counts, dry_run)
        if dry_run or not rows:
            break
    counts.audio_objects = delete_unnamed_audio(
        files, shas, users, counts.prediction_ids | prediction_ids, dry_run
    )
    if not dry_run:
        scrub_index(files, users)
    return counts


def delete_unnamed_audio(
    files: Partitions,
    shas: set[str],
    users: Iterable[str] = (),
    ids: Iterable[str] = (),
    dry_run: bool = False,
) -> int:
    """Delete the audio of these hashes that no prediction still names, apart from those of these
    users and ids and those a tombstone covers (they are on their way out); how many objects."""
    if not shas:
        return 0
    alone: set[str] = set()  # stored once: no other prediction names them
    if files.store.read(INDEX_COMPLETE) is not None:
        alone = shas - shared_audio(files, shas)
    deleted = _delete_audio(files, alone, dry_run, marked=False)
    shas = shas - alone
    if not shas:
        return deleted
    everyone = files.predictions(columns=["user", "audio_sha256"])
    going = _hit(everyone, pa.array(sorted(users), pa.string()), pa.array(sorted(ids), pa.string()))
    stones = Forgotten.load(files)
    if stones:
        going = pc.or_(going, stones.covers(everyone["prediction_id"].combine_chunks(), everyone["user"]))
    named = set(everyone.filter(pc.invert(going))["audio_sha256"].drop_null().to_pylist())
    return deleted + _delete_audio(files, shas - named, dry_run)


def _delete_audio(files: Partitions, shas: set[str], dry_run: bool, marked: bool = True) -> int:
    """Delete the audio of these hashes, and (`marked`: they may have one) their marks of being
    stored again; how many objects."""
    deleted = 0
    for sha in sorted(shas):
        for key in files.store.list(f"audio/{sha[:2]}/{sha}"):
            deleted += 1
            if not dry_run:
                files.store.delete(key)
        if marked and not dry_run:
            files.store.delete(f"{SHARED_AUDIO}{sha}")  # nothing there: nothing to do
    return deleted


def _forget_stream(
    files: Partitions,
    stream: str,
    users: set[str],
    ids: set[str],
    counts: ForgetCounts,
    dry_run: bool,
    clean: dict[str, set[str]],
    shas: set[str] | None = None,
    heard: Callable[[set[str], set[str]], None] | None = None,
    partitions: set[str] | None = None,
) -> int:
    """Rewrite the stream's files that hold rows of these users or prediction ids; how many rows.
    Only the files of `partitions` are looked at (None: every file). A file is read whole only when
    its user and id columns name them; one found without them (`clean`, for the same search) is
    not read again: files are written once."""
    wanted_users = pa.array(sorted(users), pa.string())
    wanted_ids = pa.array(sorted(ids), pa.string())
    search = f"{stream}:{len(users)}:{len(ids)}"
    checked = clean.setdefault(search, set())
    removed = 0
    for key in _keys(files, stream, partitions):
        if key in checked:
            continue
        counts.files_read += 1
        data = files.store.open_bytes(key)
        if data is None:  # merged or rewritten since it was listed: its successor is listed next pass
            continue
        with data:
            holds = _holds(data.read(), wanted_users, wanted_ids)
        if not holds:
            checked.add(key)
            continue
        found = files.store.read(key)  # again, with its generation
        if found is None:
            continue
        table = conform(pq.read_table(pa.BufferReader(found.data)), STREAMS[stream])
        hit = _hit(table, wanted_users, wanted_ids)
        drop = hit
        stones = Forgotten.load(files)  # another request's rows in this file go with ours
        if stones:
            drop = pc.or_(hit, stones.covers(table["prediction_id"].combine_chunks(), table["user"]))
        n = pc.sum(hit).as_py() or 0
        gone = table.filter(hit)
        if stream == "predictions":
            new_ids = set(gone["prediction_id"].to_pylist())
            # the audio of every row dropped, another request's too: deleted at the end
            new_shas = {s for s in table.filter(drop)["audio_sha256"].to_pylist() if s}
            if heard is not None:
                heard(new_ids, new_shas)
            counts.prediction_ids.update(new_ids)
            if shas is not None:
                shas.update(new_shas)
            counts.predictions += n
        else:
            counts.feedback_events += n
        removed += n
        if not dry_run:
            made = replace_file(
                files,
                key,
                found.generation,
                parquet_bytes(table.filter(pc.invert(drop)))
                if pc.sum(drop).as_py() < table.num_rows
                else None,
            )
            if made is not None:  # written here without them: not read again
                checked.add(made)
            counts.files_rewritten += 1
    return removed


def _keys(files: Partitions, stream: str, partitions: set[str] | None) -> list[str]:
    """The stream's files, or those of these partitions alone."""
    if partitions is None:
        return [key for _, key in files.list_files(stream)]
    found = (key for p in sorted(partitions) for key in files.store.list(f"{stream}/{p}/"))
    return [k for k in found if k.endswith(".parquet") and k.rsplit("/", 1)[-1].startswith("part-")]


def _hit(table: pa.Table, users: pa.Array, ids: pa.Array) -> pa.Array:
    by_user = pc.is_in(table["user"], value_set=users) if "user" in table.column_names else None
    by_id = pc.is_in(table["prediction_id"], value_set=ids).fill_null(False)
    return pc.or_(by_user.fill_null(False), by_id) if by_user is not None else by_id


def _holds(data: bytes, users: pa.Array, ids: pa.Array) -> bool:
    """Whether a Parquet file has rows of these users or ids (its two columns read alone)."""
    names = set(pq.ParquetFile(pa.BufferReader(data)).schema_arrow.names)
    table = pq.read_table(pa.BufferReader(data), columns=[c for c in ("prediction_id", "user") if c in names])
    return bool(pc.any(_hit(table, users, ids)).as_py())


def _forget_quarantine(
    files: Partitions, users: set[str], ids: set[str], counts: ForgetCounts, dry_run: bool
) -> int:
    """Rewrite the quarantine files with lines that name these users or prediction ids."""
    needles = [n.encode() for n in users | ids]
    removed = 0
    for _, key in files.list_files("quarantine", ext=".jsonl"):
        found = files.store.read(key)
        if found is None:
            continue
        lines = found.data.splitlines()
        kept = [line for line in lines if not _names(line, needles)]
        n = len(lines) - len(kept)
        if not n:
            continue
        counts.quarantine_lines += n
        removed += n
        if not dry_run:
            replace_file(files, key, found.generation, b"\n".join(kept) + b"\n" if kept else None)
            counts.files_rewritten += 1
    return removed


def _names(line: bytes, needles: list[bytes]) -> bool:
    """Whether a quarantine line names one of these: in its text, or in the exact bytes it kept."""
    if any(n in line for n in needles):
        return True
    exact = orjson.loads(line).get("raw_base64")
    if not exact:
        return False
    raw = base64.b64decode(exact)
    return any(n in raw for n in needles)


def settle(files: Partitions, written: Iterable[str], before: Forgotten) -> int:
    """After a writer wrote these files (URIs or keys) having read the tombstones as `before`: if a
    forget request came meanwhile, its rows leave the files (and their audio, unless someone
    else's prediction names it), since its forget may have looked before they were there. How
    many rows left."""
    later = Forgotten.load(files)
    if not (later.users - before.users or later.predictions - before.predictions):
        return 0
    prefix = str(files.root).rstrip("/") + "/"
    dropped, shas = 0, set()
    for name in written:
        key = name[len(prefix) :] if name.startswith(prefix) else name
        found = files.store.read(key)
        if found is None or not key.endswith(".parquet"):
            continue
        stream = key.split("/", 1)[0]
        table = conform(pq.read_table(pa.BufferReader(found.data)), STREAMS[stream])
        covered = later.covers(table["prediction_id"].combine_chunks(), table["user"])
        n = pc.sum(covered).as_py() or 0
        if not n:
            continue
        dropped += n
        if stream == "predictions":
            shas |= set(table.filter(covered)["audio_sha256"].drop_null().to_pylist())
        kept = table.filter(pc.invert(covered))
        replace_file(files, key, found.generation, parquet_bytes(kept) if kept.num_rows else None)
    delete_unnamed_audio(files, shas)
    scrub_index(files, later.users - before.users, segments_only=True)  # what it wrote after the forget
    return dropped
