"""The error store at production volume, and capture's cost at serving, each beside its anchor.

1. Ingest: 1M combined prediction records (JSONL, 10 % corrected) through `ErrorStore.ingest`,
   against the floor of parsing the same lines with orjson and writing them with pyarrow.
2. Trigger check: a store of 1M predictions over 30 days (10 % with feedback, each day's arriving
   at its end; compacted), then 1k new records; `check_trigger` (what arrived since the
   watermark, and the production version's traffic in the recent window) against a full scan of
   the store (every prediction and event, joined), with the peak memory of both (Python heap and Arrow buffers). The
   window is the policy's `recent_window_hours`: 1 h (which holds only the new records, so the
   check reads little more than what arrived since the watermark), 24 h and 168 h.
3. Capture: a real serving process answering the same requests with capture off and on: p50/p95
   latency and throughput, side by side.

Run with `make bench` (or `python benchmarks/bench_store.py [--records N] [--skip-serving]`).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from stt_flywheel.config import TriggerPolicy
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.identity import Identity, Senders
from stt_flywheel.data.records import new_prediction_id
from stt_flywheel.run.trigger import check_trigger

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WORDS = [
    "take",
    "two",
    "tablets",
    "of",
    "ibuprofen",
    "twice",
    "a",
    "day",
    "with",
    "water",
    "after",
    "food",
    "refill",
    "my",
    "lisinopril",
]


def records(n: int, start: datetime, span: timedelta, seed: int = 0, corrected: float = 0.1) -> list[bytes]:
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.uniform(0, span.total_seconds(), n))
    lines = []
    for i, off in enumerate(offsets):
        at = start + timedelta(seconds=float(off))
        hyp = " ".join(rng.choice(WORDS, rng.integers(4, 12)))
        rec: dict[str, Any] = {
            "id": new_prediction_id(at),
            "audio_uri": f"gs://bucket/audio/{i:08d}.wav",
            "hypothesis": hyp,
            "corrected_text": hyp + " please" if rng.random() < corrected else None,
            "model_version": "7",
            "timestamp": at.isoformat(),
            "metadata": {"domain": "pharmacy", "device": "android"},
            "user": f"app-user-{int(rng.integers(0, 10_000)):05d}",
        }
        lines.append(orjson.dumps(rec))
    return lines


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def peak_mib(fn: Callable[[], Any]) -> float:
    """Peak of the Python heap (tracemalloc) plus the peak of Arrow's buffers (a proxy pool)."""
    gc.collect()
    parent = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(parent)
    pa.set_memory_pool(pool)
    tracemalloc.start()
    try:
        fn()
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(parent)
    return (python_peak + pool.max_memory()) / 2**20


def floor_ingest(lines: list[bytes], out: Path) -> None:
    rows = [orjson.loads(line) for line in lines]
    pq.write_table(pa.Table.from_pylist(rows), out / "floor.parquet", compression="zstd")


def bench_ingest(n: int, console: Console) -> dict[str, float]:
    lines = records(n, NOW - timedelta(days=1), timedelta(days=1))
    with tempfile.TemporaryDirectory() as tmp:
        floor_s, _ = timed(lambda: floor_ingest(lines, Path(tmp)))
        # with identity: each user id becomes its keyed pseudonym, and every check of the ingest runs
        store = ErrorStore(Path(tmp) / "store", senders=Senders(Identity(b"k" * 32)))
        ours_s, result = timed(lambda: store.ingest(lines, now=NOW))
    assert result.accepted == n and result.balanced
    console.print(f"ingest: {n:,} records, {result.feedback_events:,} corrections, {len(result.files)} files")
    return {"floor_s": floor_s, "ingest_s": ours_s, "ratio": ours_s / floor_s}


def full_scan(store: ErrorStore) -> int:
    """What a store without partitions does: read every prediction and event and join them."""
    resolution = store.resolve(store.feedback(upto=NOW), now=NOW)
    return store.predictions().num_rows + len(resolution.applied)


def bench_trigger(n: int, console: Console) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        store = ErrorStore(Path(tmp) / "store")
        first = NOW - timedelta(days=30)
        old = records(n, first, timedelta(days=30) - timedelta(hours=2), seed=1)
        per_day = -(-n // 30)
        for day in range(30):  # each day's records arrive at the end of that day, as a daily import does
            arrival = min(first + timedelta(days=day + 1), NOW - timedelta(hours=2))
            store.ingest(old[day * per_day : (day + 1) * per_day], now=arrival)
        store.compact(now=NOW)
        watermark = NOW - timedelta(hours=2)
        new = records(1000, NOW - timedelta(minutes=50), timedelta(minutes=45), seed=2, corrected=0.5)
        store.ingest(new, now=NOW - timedelta(minutes=1))
        scan_s, _ = timed(lambda: full_scan(store), repeat=1)
        scan_peak = peak_mib(lambda: full_scan(store))
        for window_h in (1.0, 24.0, 168.0):
            policy = TriggerPolicy(min_error_cases=100, min_corrected_cases=50, recent_window_hours=window_h)

            def check(policy: TriggerPolicy = policy) -> Any:
                return check_trigger(
                    store,
                    policy,
                    production_watermark=watermark,
                    last_deployed_at=None,
                    production_version=7,
                    now=NOW,
                )

            check()  # warm the file cache, as a scheduled check finds it
            trigger_s, decision = timed(check, repeat=5)
            out.append(
                {
                    "window_h": window_h,
                    "trigger_ms": trigger_s * 1000,
                    "full_scan_ms": scan_s * 1000,
                    "trigger_peak_mib": peak_mib(check),
                    "full_scan_peak_mib": scan_peak,
                    "new_error_cases": decision.stats.new_error_cases,
                    "recent_requests": decision.stats.recent_requests,
                }
            )
    return out


def bench_capture(requests: int, console: Console, rounds: int = 6) -> dict[str, dict[str, float]]:
    """Two serving processes of the same model, one capturing and one not, answer the same
    requests in alternating rounds (the order flips each round); after a capturing round the
    writer gets its (short) flush interval to write the last batch, so that batch is not billed
    to the next round."""
    import base64
    import json
    import urllib.request

    from stt_flywheel.config import CaptureSettings
    from stt_flywheel.data.audio import encode_wav
    from stt_flywheel.deployment.serving import ServingProcess, capture_env

    model = Path(__file__).resolve().parents[1] / "src" / "stt_flywheel" / "assets" / "base_model"
    rng = np.random.default_rng(0)
    audio = [(rng.standard_normal(16000 * 2) * 0.1).astype(np.float32) for _ in range(8)]
    bodies = [
        json.dumps(
            {"instances": [{"b64": base64.b64encode(encode_wav(a)).decode(), "metadata": {"app": "bench"}}]}
        ).encode()
        for a in audio
    ]
    settings = None
    latencies: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        # a short flush interval: nearly every write happens inside the round it belongs to (and
        # more, smaller writes than the default 2 s would make, so this errs against capture)
        settings = CaptureSettings(spill_dir=Path(tmp) / "spill", flush_interval_s=0.25)
        servers = {
            "off": ServingProcess(str(model), env={"FLYWHEEL_MODEL_VERSION": "1"}),
            "on": ServingProcess(
                str(model),
                env=capture_env(
                    str(Path(tmp) / "store"),
                    settings,
                    version=1,
                    endpoint="bench",
                    identity=Identity(b"k" * 32),
                ),
            ),
        }
        try:

            def run(server: ServingProcess, n: int) -> list[float]:
                out = []
                for i in range(n):
                    request = urllib.request.Request(
                        server.url + "/predict",
                        data=bodies[i % len(bodies)],
                        headers={"content-type": "application/json"},
                    )
                    t = time.perf_counter()
                    with urllib.request.urlopen(request, timeout=60) as response:
                        response.read()
                    out.append(time.perf_counter() - t)
                return out

            for server in servers.values():
                run(server, 10)  # warm-up
            for r in range(rounds):
                for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                    latencies[mode] += run(servers[mode], requests)
                    if mode == "on":
                        time.sleep(settings.flush_interval_s + 0.5)
            health = servers["on"].health()["capture"]
        finally:
            for server in servers.values():
                server.stop()
    summary: dict[str, dict[str, float]] = {}
    for key, lat in latencies.items():
        lat = sorted(lat)
        summary[key] = {
            "p50_ms": statistics.median(lat) * 1000,
            "p95_ms": lat[int(0.95 * (len(lat) - 1))] * 1000,
            "throughput_rps": len(lat) / sum(lat),
        }
    summary["on"]["captured"] = health["captured"] + health["queued"]
    summary["on"]["overhead_p50"] = summary["on"]["p50_ms"] / summary["off"]["p50_ms"] - 1
    summary["on"]["overhead_throughput"] = (
        1 - summary["on"]["throughput_rps"] / summary["off"]["throughput_rps"]
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--requests", type=int, default=100, help="requests per capture mode and round (6 rounds)"
    )
    parser.add_argument("--skip-serving", action="store_true")
    parser.add_argument("--only", choices=["ingest", "trigger", "capture"], help="run one part")
    args = parser.parse_args()
    console = Console()

    if args.only in (None, "ingest"):
        show_ingest(args.records, console)
    if args.only in (None, "trigger"):
        show_trigger(args.records, console)
    if args.only == "capture" or (args.only is None and not args.skip_serving):
        show_capture(args.requests, console)


def show_ingest(records_n: int, console: Console) -> None:
    ing = bench_ingest(records_n, console)
    table = Table(title=f"Ingest {records_n:,} prediction records")
    for col in ("orjson + pyarrow floor", "ErrorStore.ingest", "ratio"):
        table.add_column(col)
    table.add_row(f"{ing['floor_s']:.2f} s", f"{ing['ingest_s']:.2f} s", f"{ing['ratio']:.2f}×")
    console.print(table)


def show_trigger(records_n: int, console: Console) -> None:
    trig = bench_trigger(records_n, console)
    table = Table(title=f"Trigger check: {records_n:,}-prediction store, 1k new records")
    for col in ("window", "trigger check", "full scan", "peak memory (check / scan)", "recent requests"):
        table.add_column(col)
    for t in trig:
        table.add_row(
            f"{t['window_h']:g} h",
            f"{t['trigger_ms']:.1f} ms",
            f"{t['full_scan_ms']:.0f} ms",
            f"{t['trigger_peak_mib']:.1f} / {t['full_scan_peak_mib']:.0f} MiB",
            f"{t['recent_requests']:,}",
        )
    console.print(table)


def show_capture(requests: int, console: Console) -> None:
    cap = bench_capture(requests, console)
    table = Table(
        title="Serving with capture off and on (one 2 s utterance per request, 6 alternating rounds)"
    )
    for col in ("capture", "p50", "p95", "throughput"):
        table.add_column(col)
    for key in ("off", "on"):
        c = cap[key]
        table.add_row(
            key, f"{c['p50_ms']:.1f} ms", f"{c['p95_ms']:.1f} ms", f"{c['throughput_rps']:.1f} req/s"
        )
    console.print(table)
    console.print(
        f"capture's cost: p50 {cap['on']['overhead_p50']:+.1%}, throughput {-cap['on']['overhead_throughput']:+.1%} "
        f"({cap['on']['captured']:.0f} predictions captured with their audio)"
    )


if __name__ == "__main__":
    main()
