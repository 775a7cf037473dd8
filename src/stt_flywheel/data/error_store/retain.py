"""Retention in the error store: whole partitions past their days, and audio that no younger
prediction names.

Predictions are partitioned by the hour they were made, feedback and quarantine lines by the hour
they arrived: a partition whose hour ended before the cutoff is deleted whole, file by file. Audio
is stored once per content (`audio/<sha256>`), shared by every prediction of the same bytes: an
object first stored before its cutoff goes unless a prediction made since (and kept) names it.
Audio younger than its days always stays, so audio that capture has stored and whose prediction
it is still writing is never taken.

The user index (`who`) loses its entries for the partitions deleted, as a compaction of it.

Beside a compaction: one that read an hour's files before they were deleted can write them back
merged; the next `store retain` deletes that file. Run it on a schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from stt_flywheel.config import RetentionSettings
from stt_flywheel.data.error_store.compact import compact_index
from stt_flywheel.data.error_store.layout import SHARED_AUDIO, STREAMS, Partitions, hour_of, partition

__all__ = ["STREAM_DAYS", "StoreRetention", "retain_store"]

# the retention setting of each stream, and its files' extension
STREAM_DAYS = {
    "predictions": ("predictions_days", ".parquet"),
    "feedback": ("feedback_days", ".parquet"),
    "quarantine": ("quarantine_days", ".jsonl"),
}


@dataclass
class StoreRetention:
    deleted: dict[str, int] = field(default_factory=dict)  # per stream, and audio: objects gone
    kept: dict[str, int] = field(default_factory=dict)  # past their days but still named


def retain_store(
    files: Partitions, settings: RetentionSettings, now: datetime, dry_run: bool = False
) -> StoreRetention:
    """Delete (with `dry_run`, only count) what expired in the store by `settings` at `now`."""
    out = StoreRetention()
    cutoffs: dict[str, str] = {}  # stream → its first partition kept, for the user index
    for stream, (name, ext) in STREAM_DAYS.items():
        days = getattr(settings, name)
        if days is None:
            continue
        cutoff = hour_of(now - timedelta(days=days))
        expired = [key for _, key in files.list_files(stream, end=cutoff, ext=ext)]
        out.deleted[stream] = len(expired)
        if stream in STREAMS:  # those in the user index
            cutoffs[stream] = partition(cutoff)
        if not dry_run:
            for key in expired:
                files.store.delete(key)
    if cutoffs and not dry_run:  # who was active in an hour goes with the hour's rows
        compact_index(files, now, before=cutoffs)
    if settings.audio_days is not None:
        cutoff = now - timedelta(days=settings.audio_days)
        old = [key for key, written in files.store.list_dated("audio/") if written < cutoff]
        named: set[str] = set()
        if old:
            since = cutoff
            if settings.predictions_days is not None:  # predictions older than theirs are gone
                since = max(since, hour_of(now - timedelta(days=settings.predictions_days)))
            shas = files.predictions(start=since, columns=["audio_sha256"])["audio_sha256"]
            named = {sha for sha in shas.to_pylist() if sha}
        gone = [key for key in old if _sha(key) not in named]
        out.deleted["audio"], out.kept["audio"] = len(gone), len(old) - len(gone)
        if not dry_run:
            marked = set(files.store.list(SHARED_AUDIO))  # few: audio stored more than once
            for key in gone:
                files.store.delete(key)
                if f"{SHARED_AUDIO}{_sha(key)}" in marked:
                    files.store.delete(f"{SHARED_AUDIO}{_sha(key)}")
    return out


def _sha(key: str) -> str:
    """The content hash an audio key is named by (`audio/ab/<sha256>.<ext>`)."""
    return key.rsplit("/", 1)[-1].split(".", 1)[0]
