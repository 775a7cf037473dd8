"""The store's whole-store reads at production volume, each engine beside the DuckDB floor.

A store of N predictions over 30 days (N/720 an hour; versions 7, the default, and 8 on a 10 %
canary over the last 3 days; 10 000 users), 10 % of them with a feedback event that arrives within
the hour after, 2 % of those sent twice, written as a compacted store is: a file per hour and
stream. Each path runs alone in a fresh process (its own imports included), timed wall-clock, with
the process's peak resident memory:

- `stats`: the store's counts (what `status` shows);
- `export --since 24h`: the last day's predictions with their latest feedback, consumed;
- `errors`: the dataset's candidate list (every prediction whose latest feedback says it was wrong).

Each by the `duckdb` engine (the default), the `arrow` engine (tables joined in Python; skipped
above `--arrow-max` predictions, where it takes hours), and the floor: a bare DuckDB query that
reads the same columns and counts without the project's rules. Growth with the store, not the
window, shows as the ratio between sizes.

Run with `make bench-scale` (`python benchmarks/bench_scale.py --sizes 1000000,10000000`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOURS = 720
USERS = 10_000
PHRASES = [
    "take two tablets of ibuprofen twice a day",
    "refill my lisinopril prescription",
    "is amoxicillin safe with food",
    "what is the dose of metformin",
    "call the pharmacy after lunch",
]


def _ids(ms: np.ndarray, rng: np.random.Generator) -> list[str]:
    """UUIDv7 strings for these millisecond times (what serving mints)."""
    rand = rng.integers(0, 2**62, size=(len(ms), 2), dtype=np.int64)
    out = []
    for t, (a, b) in zip(ms.tolist(), rand.tolist(), strict=True):
        h = f"{t:012x}7{a & 0xFFF:03x}{(b & 0x3FFFFFFFFFFFFFFF) | 0x8000000000000000:016x}"
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def _metadata(n: int, rng: np.random.Generator) -> pa.Array:
    keys = pa.array(["domain", "device"] * n)
    domains = np.array(["pharmacy", "general"])[rng.integers(0, 2, n)]
    devices = np.array(["android", "ios", "web"])[rng.integers(0, 3, n)]
    items = pa.array(np.stack([domains, devices], axis=1).reshape(-1))
    return pa.MapArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)), keys, items)


def build(root: Path, n: int, seed: int = 0) -> None:
    """The store described above, under `root`."""
    from stt_flywheel.data.error_store.layout import parquet_bytes, partition
    from stt_flywheel.data.records import FEEDBACK_SCHEMA, PREDICTION_SCHEMA

    rng = np.random.default_rng(seed)
    start = NOW - timedelta(hours=HOURS)
    per_hour = n // HOURS
    phrases = np.array(PHRASES)
    for h in range(HOURS):
        hour = start + timedelta(hours=h)
        base_ms = int(hour.timestamp() * 1000)
        ms = np.sort(base_ms + rng.integers(0, 3_600_000, per_hour))
        at = pa.array(ms * 1000, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        canary = h >= HOURS - 72
        versions = np.where(canary & (rng.random(per_hour) < 0.1), "8", "7")
        hyp = phrases[rng.integers(0, len(phrases), per_hour)]
        users = np.char.add("u-", rng.integers(0, USERS, per_hour).astype(str))
        ids = _ids(ms, rng)
        predictions = pa.table(
            {
                "prediction_id": pa.array(ids),
                "predicted_at": at,
                "model_version": pa.array(versions),
                "endpoint": pa.array(["stt"] * per_hour),
                "hypothesis": pa.array(hyp),
                "metadata": _metadata(per_hour, rng),
                "user": pa.array(users),
                "duration_s": pa.array(rng.uniform(1, 8, per_hour).astype(np.float32)),
                "audio_uri": pa.array([f"gs://bucket/audio/{i}.wav" for i in ids]),
                "audio_sha256": pa.nulls(per_hour, pa.string()),
                "signature": pa.nulls(per_hour, pa.string()),
                "confidence": pa.array(rng.random(per_hour).astype(np.float32)),
                "words": pa.nulls(per_hour, PREDICTION_SCHEMA.field("words").type),
                "ingested_at": at,
            },
            schema=PREDICTION_SCHEMA,
        )
        key = f"predictions/{partition(hour)}/part-{hour:%Y%m%dT%H%M%S}000000Z-bench.parquet"
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(parquet_bytes(predictions))
        # feedback on 10 % of this hour's predictions, arriving in the next hour (2 % of it twice)
        chosen = np.flatnonzero(rng.random(per_hour) < 0.1)
        repeat = chosen[rng.random(len(chosen)) < 0.02]
        rows = np.concatenate([chosen, repeat])
        arrive = hour + timedelta(hours=1)
        arrival = pa.array(
            np.full(len(rows), int(arrive.timestamp() * 1_000_000))
            + rng.integers(0, 3_600_000_000, len(rows)),
            pa.int64(),
        ).cast(pa.timestamp("us", tz="UTC"))
        corrected = rng.random(len(rows)) < 0.8
        text = np.where(corrected, np.char.add(hyp[rows], " please"), hyp[rows])
        events = pa.table(
            {
                "event_id": pa.array([f"{x:032x}" for x in rng.integers(0, 2**63, len(chosen))] * 1).take(
                    pa.array(np.concatenate([np.arange(len(chosen)), np.searchsorted(chosen, repeat)]))
                ),
                "prediction_id": pa.array(ids).take(pa.array(rows)),
                "corrected_text": pa.array(text),
                "flagged": pa.array(corrected),
                "event_time": at.take(pa.array(rows)),
                "source": pa.array(["app"] * len(rows)),
                "user": pa.array(users[rows]),
                "reviewer": pa.array(np.zeros(len(rows), bool)),
                "ingested_at": arrival,
            },
            schema=FEEDBACK_SCHEMA,
        )
        key = f"feedback/{partition(arrive)}/part-{arrive:%Y%m%dT%H%M%S}000000Z-bench.parquet"
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(parquet_bytes(events))


# Each path, run in a fresh process: `python -c CODE ROOT ENGINE`; prints what it counted.
PATHS = {
    "stats": "s = store.stats(now=NOW); print(s['predictions'], s['labels']['corrected'])",
    "export --since 24h": "print(sum(1 for r in store.export(since=NOW - timedelta(hours=24), now=NOW)))",
    "errors (candidates)": "print(sum(1 for _ in store.errors(upto=NOW)))",
}
FLOORS = {
    "stats": "SELECT (SELECT count(*) FROM read_parquet('{p}')), (SELECT count(*) FROM read_parquet('{f}'))",
    "export --since 24h": "SELECT count(*) FROM read_parquet('{p}') WHERE predicted_at >= TIMESTAMPTZ '{since}'",
    "errors (candidates)": "SELECT count(*) FROM (SELECT prediction_id, arg_max(corrected_text, event_time) "
    "FROM read_parquet('{f}') GROUP BY prediction_id) JOIN read_parquet('{p}') USING (prediction_id)",
}
PRELUDE = (
    "import sys; from datetime import UTC, datetime, timedelta; "
    "from stt_flywheel.data.error_store import ErrorStore; "
    f"NOW = datetime.fromisoformat('{NOW.isoformat()}'); "
    "store = ErrorStore(sys.argv[1], engine=sys.argv[2]); "
)


def run(code: str, *args: str) -> tuple[float, float, str]:
    """(seconds, peak RSS in MiB, what it printed) of `python -c code args` in a fresh process;
    what it printed is `failed (status N)` when it failed."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t
    if status != 0:
        return elapsed, usage.ru_maxrss / 1024, f"failed (status {status})"
    return elapsed, usage.ru_maxrss / 1024, out.strip()


def floor(root: Path, question: str) -> tuple[float, float, str]:
    since = (NOW - timedelta(hours=24)).isoformat()
    sql = FLOORS[question].format(
        p=root / "predictions/*/*/*.parquet", f=root / "feedback/*/*/*.parquet", since=since
    )
    return run(f"import duckdb; print(duckdb.sql({sql!r}).fetchall())")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", default="1000000,10000000", help="store sizes in predictions, comma-separated"
    )
    parser.add_argument(
        "--arrow-max", type=int, default=1_000_000, help="largest store the arrow engine reads"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="where the stores are built (a temporary dir)"
    )
    args = parser.parse_args()
    console = Console()
    table = Table(title="Whole-store reads: wall time / peak RSS (each in a fresh process)")
    table.add_column("path")
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[tuple[str, str], dict[int, str]] = {}
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        for n in sizes:
            root = Path(tmp) / f"store-{n}"
            t = time.perf_counter()
            build(root, n)
            size = sum(f.stat().st_size for f in root.rglob("*.parquet")) / 2**20
            console.print(
                f"built a store of {n:,} predictions in {time.perf_counter() - t:.0f} s ({size:.0f} MiB)"
            )
            for question, code in PATHS.items():
                engines = ["duckdb", "arrow"] if n <= args.arrow_max else ["duckdb"]
                answers = set()
                for engine in engines:
                    s, mib, out = run(PRELUDE + code, str(root), engine)
                    failed = out.startswith("failed")
                    answers |= set() if failed else {out}
                    figure = (
                        f"{out} after {s:.2f} s / {mib:.0f} MiB" if failed else f"{s:.2f} s / {mib:.0f} MiB"
                    )
                    results.setdefault((question, engine), {})[n] = figure
                    console.print(f"  {question} ({engine}): {s:.2f} s, {mib:.0f} MiB → {out}")
                if len(answers) > 1:
                    raise SystemExit(f"{question}: the engines disagree: {answers}")
                s, mib, _ = floor(root, question)
                results.setdefault((question, "DuckDB floor"), {})[n] = f"{s:.2f} s / {mib:.0f} MiB"
    for n in sizes:
        table.add_column(f"{n:,}", justify="right")
    for (question, engine), by_size in results.items():
        table.add_row(f"{question} ({engine})", *(by_size.get(n, "not run") for n in sizes))
    console.print(table)


if __name__ == "__main__":
    main()
