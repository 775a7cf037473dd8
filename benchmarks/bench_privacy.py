"""Privacy at production volume: forgetting one user, and retention, each beside a full rewrite.

A store of N combined records (default 1M) over 30 days, 10,000 users (about 100 predictions each,
spread over the month), 10 % corrected, each day's records arriving at its end, compacted: one
file per hour and stream. Then:

1. `forget_rows` of one user (their predictions and events, file by file) led by the user index to
   the hours they touched; the same for another user with the index switched off (every file's
   user and id columns read); beside a full rewrite of the store without a third user (every file
   read, filtered and written again);
2. `store retain` with 7 days for predictions and feedback (23 days of partitions deleted whole),
   beside the same full rewrite.

Run with `make bench` (or `python benchmarks/bench_privacy.py [--records N]`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from bench_store import NOW, records  # noqa: E402 - the same records as the store bench

from stt_flywheel.config import RetentionSettings  # noqa: E402
from stt_flywheel.data.error_store import ErrorStore  # noqa: E402
from stt_flywheel.data.error_store.forget import forget_rows, request_id, write_tombstone  # noqa: E402
from stt_flywheel.data.error_store.layout import INDEX_COMPLETE, STREAMS, conform, parquet_bytes  # noqa: E402
from stt_flywheel.data.identity import Identity, Senders  # noqa: E402


def build(root: Path, n: int) -> ErrorStore:
    store = ErrorStore(root, senders=Senders(Identity(b"k" * 32)))
    first = NOW - timedelta(days=30)
    lines = records(n, first, timedelta(days=30) - timedelta(hours=2), seed=1)
    per_day = -(-n // 30)
    for day in range(30):
        store.ingest(
            lines[day * per_day : (day + 1) * per_day], now=min(first + timedelta(days=day + 1), NOW)
        )
    store.compact(now=NOW + timedelta(hours=2))
    return store


def full_rewrite(store: ErrorStore, user: str) -> int:
    """What a store without per-file rewrites does: every file read, filtered, written again."""
    files = 0
    for stream in STREAMS:
        for _, key in store.list_files(stream):
            found = store.store.read(key)
            if found is None:
                continue
            table = conform(pq.read_table(pa.BufferReader(found.data)), STREAMS[stream])
            kept = table.filter(pc.invert(pc.equal(table["user"], user).fill_null(False)))
            store.store.create(key.replace(".parquet", "-rewritten.parquet"), parquet_bytes(kept))
            store.store.delete(key)
            files += 1
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    console = Console()
    table = Table(title=f"Privacy in a store of {args.records:,} records over 30 days (10,000 users)")
    for col in ("operation", "stt-flywheel", "beside it: full rewrite", "ratio"):
        table.add_column(col)
    with tempfile.TemporaryDirectory() as tmp:
        store = build(Path(tmp) / "store", args.records)
        files = sum(len(store.list_files(s)) for s in STREAMS)
        timed = []
        for name in ("app-user-00042", "app-user-00044"):  # by the index, then without it
            user = store.senders.pseudonym(name)
            request = request_id({user}, [])
            started = time.perf_counter()
            write_tombstone(store, request, {"request": request, "users": [user], "predictions": []})
            timed.append((forget_rows(store, {user}, set()), time.perf_counter() - started))
            store.store.delete(INDEX_COMPLETE)
        started = time.perf_counter()
        rewritten = full_rewrite(store, store.senders.pseudonym("app-user-00043"))
        rewrite_s = time.perf_counter() - started
        for (counts, forget_s), how in zip(
            timed, ("led by the user index", "reading every file"), strict=True
        ):
            table.add_row(
                f"forget one user, {how}: {counts.predictions} predictions, {counts.feedback_events} events",
                f"{forget_s:.2f} s ({counts.files_read} files looked at, {counts.files_rewritten} of {files} rewritten)",
                f"{rewrite_s:.2f} s ({rewritten} files)",
                f"{forget_s / rewrite_s:.2f}×",
            )
        started = time.perf_counter()
        done = store.retain(RetentionSettings(predictions_days=7, feedback_days=7), NOW)
        retain_s = time.perf_counter() - started
        gone = done.deleted["predictions"] + done.deleted["feedback"]
        table.add_row(
            "store retain, 7 days of 30",
            f"{retain_s:.2f} s ({gone} files deleted whole)",
            f"{rewrite_s:.2f} s",
            f"{retain_s / rewrite_s:.2f}×",
        )
    console.print(table)


if __name__ == "__main__":
    main()
