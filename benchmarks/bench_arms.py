"""A canary's arm statistics as they were (every request independent, no cap per user) beside
what the monitor computes now (each user capped at `monitor.max_predictions_per_user`, users
resampled whole), on the same arms.

Three arms of candidate traffic against one default arm of 5,000 users (one request each, 20 %
corrected):

1. honest: 5,000 users, the candidate as good as the default;
2. flooded: the candidate is worse (30 % corrected, 300 users), and three accounts send 1,500
   confirmed requests each to wash its correction rate out;
3. few users: 25 users at the cap, five of whom correct everything (20 % in all).

For each, the correction-rate and live-WER verdicts of both computations, the correction-rate
interval, and the time of `measure_arm` + `compare_arms` for both arms (after one warm-up).

Run with `make bench` (or `python benchmarks/bench_arms.py`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
from rich.console import Console
from rich.table import Table

from stt_flywheel.config import MonitorSettings
from stt_flywheel.monitoring.canary import Arm, _verdict, compare_arms, measure_arm
from stt_flywheel.monitoring.live import LiveRow
from stt_flywheel.scoring.stats import proportion_difference, ratio_difference

RIGHT = "please open the kitchen window today"
WRONG = "please open the kitten window today"
NORMALIZER = "whisper-en/1"
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _rows(version: str, prefix: str, users: int, per_user: int, corrected: float, seed: int) -> list[LiveRow]:
    rng = np.random.default_rng(seed)
    out = []
    for u in range(users):
        for _ in range(per_user):
            fixed = bool(rng.random() < corrected)
            out.append(
                LiveRow(
                    version,
                    T0 + timedelta(seconds=len(out)),
                    WRONG if fixed else RIGHT,
                    {},
                    "corrected" if fixed else "confirmed",
                    RIGHT,
                    f"{prefix}{u}",
                    True,
                )
            )
    return out


def _before(candidate: Arm, baseline: Arm, settings: MonitorSettings) -> tuple[str, str, tuple[float, float]]:
    """The tests as the monitor ran them before: requests independent, utterances resampled."""
    rate = proportion_difference(
        candidate.corrected, candidate.requests, baseline.corrected, baseline.requests, confidence=0.95
    )
    wer = ratio_difference(
        candidate.word_errors, candidate.ref_words, baseline.word_errors, baseline.ref_words, resamples=2000
    )
    enough = min(candidate.scored, baseline.scored) >= settings.min_scored_per_arm
    return (
        _verdict(rate, settings.correction_rate_margin, True),
        _verdict(wer, settings.wer_margin, enough),
        (rate.low, rate.high),
    )


def main() -> None:
    settings = MonitorSettings()
    cap = settings.max_predictions_per_user
    default_rows = _rows("1", "d", 5000, 1, 0.2, 1)
    arms = {
        "honest (5,000 users)": _rows("2", "h", 5000, 1, 0.2, 2),
        "flooded (300 users + 3 × 1,500)": _rows("2", "h", 300, 1, 0.3, 3) + _rows("2", "f", 3, 1500, 0.0, 4),
        "few users (25 × 25)": [
            *_rows("2", "c", 5, 25, 1.0, 5),
            *_rows("2", "q", 20, 25, 0.0, 6),
        ],
    }
    table = Table(
        title="Canary arm statistics: before (independent, uncapped) vs now (capped, users resampled)"
    )
    for col in (
        "candidate arm",
        "computation",
        "requests",
        "rate",
        "rate Δ interval",
        "rate",
        "WER",
        "seconds",
    ):
        table.add_column(col)
    _before(
        measure_arm("2", arms["honest (5,000 users)"], NORMALIZER),
        measure_arm("1", default_rows, NORMALIZER),
        settings,
    )
    for name, rows in arms.items():
        start = time.perf_counter()
        cand, base = measure_arm("2", rows, NORMALIZER), measure_arm("1", default_rows, NORMALIZER)
        rate_v, wer_v, (low, high) = _before(cand, base, settings)
        before_s = time.perf_counter() - start
        table.add_row(
            name,
            "before",
            str(cand.requests),
            f"{cand.correction_rate:.3f}",
            f"[{low:+.3f}, {high:+.3f}]",
            rate_v,
            wer_v,
            f"{before_s:.2f}",
        )
        start = time.perf_counter()
        cand = measure_arm("2", rows, NORMALIZER, max_per_user=cap)
        base = measure_arm("1", default_rows, NORMALIZER, max_per_user=cap)
        rate_t, wer_t = compare_arms(
            cand,
            base,
            correction_margin=settings.correction_rate_margin,
            wer_margin=settings.wer_margin,
            min_scored=settings.min_scored_per_arm,
            confidence=0.95,
        )
        now_s = time.perf_counter() - start
        d = rate_t.difference
        table.add_row(
            "",
            f"now (cap {cap}, by user)",
            f"{cand.requests} ({cand.users} users)",
            f"{cand.correction_rate:.3f}",
            f"[{d.low:+.3f}, {d.high:+.3f}]",
            rate_t.verdict,
            wer_t.verdict,
            f"{now_s:.2f}",
        )
    console = Console(width=150)
    console.print(table)
    console.print(
        f"Margins: correction rate {settings.correction_rate_margin}, WER {settings.wer_margin}; "
        f"an arm also waits below {settings.min_distinct_users_per_arm} distinct users (not shown)."
    )


if __name__ == "__main__":
    main()
