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


def make_english_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Transcript pairs as people and models write them: cased, punctuated English (a Zipf-weighted
    vocabulary of the normaliser's British and American spellings behind common function words),
    one utterance in ten with a number or an amount, one in ten with a contraction or a title,
    fillers; the hypothesis with about 12 % of the words changed and its own formatting."""
    import importlib.resources

    import orjson

    spellings = orjson.loads(
        importlib.resources.files("whisper_normalizer").joinpath("normalizers/english.json").read_bytes()
    )
    function = " ".join(
        [
            "the of and to a in is it you that he was for on are with as i his they be at one have this",
            "from or had by not word but what some we can out other were all there when up use your how",
        ]
    ).split()
    vocab = np.array(function + sorted(set(spellings) | set(spellings.values())))
    p = 1 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    extras = [
        "twenty five", "3", "$10", "1,500", "7.5 percent", "nineteen ninety", "the 2nd", "half past",
        "don't", "it's", "we'll", "I'm", "Mr.", "Dr.", "St.", "gonna", "uh", "um", "(laughs)", "[noise]",
    ]  # fmt: skip
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 25, n)
    drawn = vocab[rng.choice(len(vocab), int(lengths.sum()), p=p)].tolist()  # all at once: fast
    ends = np.cumsum(lengths).tolist()
    refs, hyps = [], []
    for k in range(n):
        words = drawn[ends[k] - int(lengths[k]) : ends[k]]
        if rng.random() < 0.2:
            words.insert(int(rng.integers(len(words))), extras[int(rng.integers(len(extras)))])
        hyp: list[str] = []
        for w in words:
            u = rng.random()
            if u < 0.05:
                continue  # deletion
            hyp.append(str(vocab[rng.integers(len(vocab))]) if u < 0.12 else w)
            if rng.random() < 0.03:
                hyp.append(str(vocab[rng.integers(len(vocab))]))  # insertion
        refs.append(" ".join(words).capitalize() + "." if rng.random() < 0.8 else " ".join(words) + "?")
        hyps.append(" ".join(hyp).capitalize() + ("," if rng.random() < 0.3 else ""))
    return refs, hyps


def bench_score_command(console: Console, n: int = 1_000_000, others: int = 50_000) -> None:
    """`stt-flywheel score` end to end (read two trn files, normalise with whisper-en/1, align words
    and characters) on `n` pairs, beside the same steps done with jiwer and with the normaliser
    package called directly, on `others` pairs of the same corpus."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from stt_flywheel.scoring.corpus import read_transcripts
    from stt_flywheel.scoring.whisper_en import reference_whisper_english

    refs, hyps = make_english_pairs(n)
    with tempfile.TemporaryDirectory() as tmp:
        ref_file, hyp_file = Path(tmp) / "ref.trn", Path(tmp) / "hyp.trn"
        ref_file.write_text("".join(f"{t} (utt{i:07d})\n" for i, t in enumerate(refs)))
        hyp_file.write_text("".join(f"{t} (utt{i:07d})\n" for i, t in enumerate(hyps)))
        small_ref, small_hyp = Path(tmp) / "ref-small.trn", Path(tmp) / "hyp-small.trn"
        small_ref.write_text("".join(ref_file.read_text().splitlines(keepends=True)[:others]))
        small_hyp.write_text("".join(hyp_file.read_text().splitlines(keepends=True)[:others]))
        cli = [sys.executable, "-m", "flywheel_pipelines.cli", "score", "--json"]
        started = time.perf_counter()
        done = subprocess.run(
            [*cli, "--ref", str(ref_file), "--hyp", str(hyp_file)], capture_output=True, text=True, check=True
        )
        t_cli = time.perf_counter() - started
        cli_result = orjson_loads(done.stdout)

        reference = reference_whisper_english()

        def jiwer_end_to_end() -> Any:
            r, h = read_transcripts(small_ref), read_transcripts(small_hyp)
            return jiwer.process_words([reference(r[k]) for k in r], [reference(h[k]) for k in r])

        def package_end_to_end() -> Any:
            from stt_flywheel.scoring.alignment import count_char_errors

            r, h = read_transcripts(small_ref), read_transcripts(small_hyp)
            nr, nh = [reference(r[k]) for k in r], [reference(h[k]) for k in r]
            return count_word_errors(nr, nh, SCLITE_WEIGHTS), count_char_errors(nr, nh)

        t_jiwer, out = timed(jiwer_end_to_end)
        t_package, _ = timed(package_end_to_end)
        started = time.perf_counter()
        small = subprocess.run(
            [*cli, "--ref", str(small_ref), "--hyp", str(small_hyp)],
            capture_output=True,
            text=True,
            check=True,
        )
        t_cli_small = time.perf_counter() - started
    table = Table(title="Scoring end to end with the whisper-en/1 normaliser (read, normalise, align)")
    for col in ("what", "pairs", "seconds", "pairs/s"):
        table.add_column(col, justify="left" if col == "what" else "right")
    table.add_row("stt-flywheel score (a fresh process)", f"{n:,}", f"{t_cli:.1f}", f"{n / t_cli:,.0f}")
    table.add_row(
        "stt-flywheel score (a fresh process)",
        f"{others:,}",
        f"{t_cli_small:.1f}",
        f"{others / t_cli_small:,.0f}",
    )
    table.add_row(
        "jiwer.process_words, normaliser package", f"{others:,}", f"{t_jiwer:.1f}", f"{others / t_jiwer:,.0f}"
    )
    table.add_row(
        "stt-flywheel alignment, normaliser package",
        f"{others:,}",
        f"{t_package:.1f}",
        f"{others / t_package:,.0f}",
    )
    console.print(table)
    small_result = orjson_loads(small.stdout)
    jiwer_wer = (out.substitutions + out.deletions + out.insertions) / (
        out.hits + out.substitutions + out.deletions
    )
    console.print(
        f"{n:,} pairs: WER {cli_result['wer']:.4f}, CER {cli_result['cer']:.4f}. On the first {others:,}: "
        f"stt-flywheel WER {small_result['wer']:.4f} (sclite weights), jiwer {jiwer_wer:.4f} (unit weights); "
        f"reference words {small_result['ref_words']:,} and {out.hits + out.substitutions + out.deletions:,}."
    )
    if small_result["ref_words"] != out.hits + out.substitutions + out.deletions:
        raise SystemExit("the normalised reference word counts differ from the package's")


def orjson_loads(text: str) -> Any:
    import orjson

    return orjson.loads(text)


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
    bench_score_command(console)
    bench_bootstrap(console)


if __name__ == "__main__":
    main()
