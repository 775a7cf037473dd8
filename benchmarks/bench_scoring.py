"""Scoring and bootstrap speed, each beside the thing it is measured against, in one run.

Scoring: 100k synthetic utterance pairs (Zipf vocabulary, 3-30 words, ~15 % errors), already
normalised, given as the same two lists of strings to
- `jiwer.process_words` (the usual tool),
- a bare rapidfuzz floor: `Levenshtein.distance(ref.split(), hyp.split())` per pair (no S/D/I split),
- stt-flywheel `count_word_errors`, sclite weights (what the validator uses), and with unit weights
  so its totals can be checked against jiwer's.
Bootstrap: 1M utterances × 1000 resamples, distinct-row multinomial vs a row-gather bootstrap.

Run with `make bench`. Compiled kernels are warmed up first (numba caches them on disk); the
warm-up time is printed too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jiwer
import numpy as np
from rapidfuzz.distance import Levenshtein
from rich.console import Console
from rich.table import Table

from stt_flywheel.scoring.alignment import LEVENSHTEIN_WEIGHTS, SCLITE_WEIGHTS, count_word_errors
from stt_flywheel.scoring.stats import paired_bootstrap


def make_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(5000)])
    p = 1 / np.arange(1, 5001)
    p /= p.sum()
    refs, hyps = [], []
    for _ in range(n):
        ref = rng.choice(5000, rng.integers(3, 31), p=p)
        hyp: list[int] = []
        for w in ref:
            u = rng.random()
            if u < 0.05:
                continue  # deletion
            hyp.append(int(rng.integers(5000)) if u < 0.12 else int(w))  # substitution or hit
            if rng.random() < 0.03:
                hyp.append(int(rng.integers(5000)))  # insertion
        refs.append(" ".join(vocab[ref]))
        hyps.append(" ".join(vocab[hyp]))
    return refs, hyps


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_scoring(console: Console, n: int = 100_000) -> None:
    refs, hyps = make_pairs(n)
    t0 = time.perf_counter()
    count_word_errors(refs[:10], hyps[:10])
    warm = time.perf_counter() - t0

    t_jiwer, out = timed(lambda: jiwer.process_words(refs, hyps))
    jiwer_errors = out.substitutions + out.deletions + out.insertions
    t_floor, floor_errors = timed(
        lambda: sum(Levenshtein.distance(r.split(), h.split()) for r, h in zip(refs, hyps, strict=True)), 3
    )
    t_sclite, sclite = timed(lambda: count_word_errors(refs, hyps, SCLITE_WEIGHTS), 3)
    t_unit, unit = timed(lambda: count_word_errors(refs, hyps, LEVENSHTEIN_WEIGHTS), 3)

    table = Table(
        title=f"Scoring {n:,} utterance pairs ({sum(len(r.split()) for r in refs):,} reference words)"
    )
    for col in ("scorer", "seconds", "pairs/s", "vs jiwer", "vs floor", "S", "D", "I", "errors"):
        table.add_column(col, justify="right" if col != "scorer" else "left")

    def row(name: str, seconds: float, s: Any, d: Any, i: Any, errors: int) -> None:
        table.add_row(
            name,
            f"{seconds:.3f}",
            f"{n / seconds:,.0f}",
            f"{t_jiwer / seconds:.1f}×",
            f"{seconds / t_floor:.2f}×",
            str(s),
            str(d),
            str(i),
            f"{errors:,}",
        )

    row("jiwer.process_words", t_jiwer, out.substitutions, out.deletions, out.insertions, jiwer_errors)
    row("rapidfuzz distance (floor)", t_floor, "-", "-", "-", floor_errors)
    us, ud, ui = (int(unit[:, k].sum()) for k in (1, 2, 3))
    row("stt-flywheel, unit weights", t_unit, us, ud, ui, us + ud + ui)
    ss, sd, si = (int(sclite[:, k].sum()) for k in (1, 2, 3))
    row("stt-flywheel, sclite weights", t_sclite, ss, sd, si, ss + sd + si)
    console.print(table)
    same = us + ud + ui == jiwer_errors == floor_errors
    console.print(
        f"totals: unit-weight errors {'equal' if same else 'DIFFER FROM'} jiwer and the floor "
        f"({jiwer_errors:,}); H+S+D (reference words) agree across all three: "
        f"{int(sclite[:, :3].sum()) == int(unit[:, :3].sum()) == out.hits + out.substitutions + out.deletions}; "
        f"sclite weights count {ss + sd + si - jiwer_errors:+,} errors against unit weights. "
        f"Kernel warm-up (compile or load from cache): {warm:.2f} s."
    )
    if not same:
        raise SystemExit("error totals differ")


def bench_bootstrap(console: Console, n: int = 1_000_000, resamples: int = 1000) -> None:
    rng = np.random.default_rng(1)
    lengths = rng.integers(3, 30, n)
    prod = rng.binomial(lengths, 0.12)
    cand = rng.binomial(lengths, 0.11)
    paired_bootstrap(cand[:100], prod[:100], lengths[:100])
    t_fast, fast = timed(lambda: paired_bootstrap(cand, prod, lengths, resamples=resamples), 3)

    def gather() -> tuple[float, float]:
        g = np.random.default_rng(2)
        diff = cand - prod
        deltas = np.empty(resamples)
        for b in range(resamples):
            idx = g.integers(0, n, n)
            deltas[b] = diff[idx].sum() / lengths[idx].sum()
        low, high = np.quantile(deltas, [0.025, 0.975])
        return float(low), float(high)

    t_gather, (low, high) = timed(gather)
    table = Table(title=f"Paired bootstrap of ΔWER: {n:,} utterances × {resamples} resamples")
    for col in ("method", "seconds", "95% interval"):
        table.add_column(col)
    table.add_row("row gather (numpy fancy indexing)", f"{t_gather:.2f}", f"[{low:+.5f}, {high:+.5f}]")
    table.add_row(
        "distinct rows × multinomial (stt-flywheel)", f"{t_fast:.3f}", f"[{fast.low:+.5f}, {fast.high:+.5f}]"
    )
    console.print(table)
    console.print(f"speed-up {t_gather / t_fast:.0f}×; ΔWER {fast.delta:+.5f}")


def main() -> None:
    console = Console(width=140)
    bench_scoring(console)
    bench_bootstrap(console)


if __name__ == "__main__":
    main()
