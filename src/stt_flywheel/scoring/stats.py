"""Paired statistics on per-utterance error counts (candidate vs production, same audio).

- `paired_bootstrap`: confidence interval on ΔWER = WER(candidate) − WER(production) (Bisani & Ney,
  2004), resampling utterances, or whole speakers when speaker labels exist. A resample is a vector
  of counts over the *distinct* (candidate errors, production errors, length) rows, drawn from a
  multinomial, so a million utterances cost what a few thousand distinct rows cost.
- `paired_wilcoxon`, `paired_t_test`: one-sided, "the candidate makes fewer errors per utterance".
- `mapsswe`: NIST's matched-pair sentence-segment word error test (Gillick & Cox, 1989) on segments
  cut at runs of words both systems got right.
- `holm`: Holm's step-down adjustment when several hypotheses are tested at once.
- `proportion_difference`, `ratio_difference`: two *independent* groups (a canary and the default on the
  same window of traffic): a difference of proportions with Newcombe's hybrid score interval, and a
  difference of ratios of sums (WER) by a percentile bootstrap that resamples each group. Given `clusters`
  (the requester of each prediction), `bootstrap_ratio` and `ratio_difference` resample whole clusters
  (Field & Welsh, 2007): one user's many predictions are one draw, so a flood from a few users widens the
  interval. `cluster_sums` makes a cluster bootstrap of the unit one: a ratio of sums is the same over
  per-cluster sums, and resampling those rows resamples clusters.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # numba (the alignments), like scipy.stats (`_sps`), loads where a test runs
    from stt_flywheel.scoring.alignment import Alignment

Counts = Sequence[int] | np.ndarray

__all__ = [
    "Difference",
    "RatioInterval",
    "proportion_difference",
    "ratio_difference",
    "bootstrap_ratio",
    "cluster_sums",
    "Alternative",
    "BootstrapInterval",
    "PairedTest",
    "holm",
    "mapsswe",
    "mapsswe_segments",
    "paired_bootstrap",
    "paired_t_test",
    "paired_wilcoxon",
]


Alternative = Literal["less", "two-sided"]


@dataclass(frozen=True)
class PairedTest:
    """One paired test of system A (the candidate) against B. `better` / `worse` count the pairs
    (utterances, or MAPSSWE segments) where A made fewer / more errors; `n` counts all pairs.

    `alternative` says what the p-value is of: "less" (A makes fewer errors: a gate's direction) or
    "two-sided" (the systems differ, either way: what a comparison that privileges neither reports).
    """

    name: str
    p_value: float
    statistic: float
    n: int
    n_nonzero: int
    better: int
    worse: int
    alternative: Alternative = "less"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sps() -> Any:
    return importlib.import_module("scipy.stats")


def _result(
    name: str, p_value: float, statistic: float, diff: np.ndarray, alternative: Alternative
) -> PairedTest:
    """A test's outcome with its pair counts read off the differences (A − B per pair)."""
    better, worse = int((diff < 0).sum()), int((diff > 0).sum())
    return PairedTest(name, p_value, statistic, len(diff), better + worse, better, worse, alternative)


def _diff(candidate_errors: Counts, production_errors: Counts) -> np.ndarray:
    cand, prod = np.asarray(candidate_errors, dtype=float), np.asarray(production_errors, dtype=float)
    if cand.shape != prod.shape:
        raise ValueError("candidate and production error lists differ in length")
    return cand - prod


def paired_wilcoxon(
    candidate_errors: Counts, production_errors: Counts, alternative: Alternative = "less"
) -> PairedTest:
    """Wilcoxon signed-rank test on per-utterance error counts; by default one-sided (the candidate
    makes fewer errors), two-sided with `alternative="two-sided"`.

    Utterances where both models make the same number of errors carry no evidence (Wilcox's zero method).
    With no differing utterance at all the p-value is 1: nothing supports a change. An empty input
    gives NaN, which every gate treats as a rejection.
    """
    diff = _diff(candidate_errors, production_errors)
    if len(diff) == 0:
        return _result("wilcoxon_signed_rank", math.nan, math.nan, diff, alternative)
    if not diff.any():
        return _result("wilcoxon_signed_rank", 1.0, 0.0, diff, alternative)
    res = _sps().wilcoxon(diff[diff != 0], alternative=alternative, zero_method="wilcox")
    return _result("wilcoxon_signed_rank", float(res.pvalue), float(res.statistic), diff, alternative)


def paired_t_test(
    candidate_errors: Counts, production_errors: Counts, alternative: Alternative = "less"
) -> PairedTest:
    """Paired t-test on per-utterance error counts; one-sided by default, like `paired_wilcoxon`."""
    diff = _diff(candidate_errors, production_errors)
    if len(diff) < 2:
        return _result("paired_t", math.nan, math.nan, diff, alternative)
    if not diff.any():
        return _result("paired_t", 1.0, 0.0, diff, alternative)
    res = _sps().ttest_1samp(diff, 0.0, alternative=alternative)
    return _result("paired_t", float(res.pvalue), float(res.statistic), diff, alternative)


def _word_and_gap_errors(al: Alignment) -> tuple[np.ndarray, np.ndarray]:
    """Per reference word, its substitution or deletion (0/1); per gap between words (n + 1 of them:
    before the first, between each pair, after the last), the insertions in it."""
    words: list[int] = []
    gaps = [0]
    for op, _, _ in al.steps:
        if op == "I":
            gaps[-1] += 1
        else:
            words.append(int(op != "C"))
            gaps.append(0)
    return np.asarray(words, dtype=np.int64), np.asarray(gaps, dtype=np.int64)


def _utterance_segments(
    words_a: np.ndarray, gaps_a: np.ndarray, words_b: np.ndarray, gaps_b: np.ndarray, min_good: int
) -> list[tuple[int, int]]:
    """(errors of A, errors of B) per segment of one utterance, segments neither system erred in left out."""
    n = len(words_a)
    good = (words_a == 0) & (words_b == 0)
    broken = (gaps_a + gaps_b) > 0  # an insertion in a gap separates the words on either side
    anchor = np.zeros(n, dtype=bool)
    start = 0
    while start < n:
        if not good[start]:
            start += 1
            continue
        end = start + 1
        while end < n and good[end] and not broken[end]:
            end += 1
        if end - start >= min_good:
            anchor[start:end] = True
        start = end
    segments: list[tuple[int, int]] = []
    seg_a = seg_b = 0
    for gap in range(n + 1):
        # the gap before word `gap` (after the last word when gap == n), then the word itself
        seg_a += int(gaps_a[gap])
        seg_b += int(gaps_b[gap])
        if gap == n or anchor[gap]:
            if seg_a or seg_b:
                segments.append((seg_a, seg_b))
            seg_a = seg_b = 0
            continue
        seg_a += int(words_a[gap])
        seg_b += int(words_b[gap])
    return segments


def mapsswe_segments(a: Sequence[Alignment], b: Sequence[Alignment], min_good: int = 2) -> np.ndarray:
    """Per segment, errors of system A minus errors of system B, segmented as NIST's sc_stats does.

    Anchors are runs of at least `min_good` reference words that both systems got right with no
    insertion between them (an insertion beside a run, before or after it, leaves the run whole
    and belongs to the neighbouring segment). Everything between anchors — the other words and the
    insertions in the gaps — is one segment; insertions in a gap between two anchors are a segment
    of their own. A segment where neither system erred carries no evidence and is left out.
    """
    if len(a) != len(b):
        raise ValueError("the two systems were aligned on different numbers of utterances")
    diffs: list[int] = []
    for al_a, al_b in zip(a, b, strict=True):
        words_a, gaps_a = _word_and_gap_errors(al_a)
        words_b, gaps_b = _word_and_gap_errors(al_b)
        if len(words_a) != len(words_b):
            raise ValueError("the two alignments have different references")
        diffs.extend(
            e_a - e_b for e_a, e_b in _utterance_segments(words_a, gaps_a, words_b, gaps_b, min_good)
        )
    return np.asarray(diffs, dtype=float)


def mapsswe(a: Sequence[Alignment], b: Sequence[Alignment], alternative: Alternative = "less") -> PairedTest:
    """MAPSSWE: the mean segment error difference (A − B) over its standard error, normal p-value;
    one-sided (A makes fewer errors) by default, two-sided as NIST's sc_stats reports it."""
    z = mapsswe_segments(a, b)
    if len(z) < 2:
        return _result("mapsswe", math.nan, math.nan, z, alternative)
    sd = z.std(ddof=1)
    if sd == 0:
        w = math.copysign(math.inf, z.mean()) if z.mean() else 0.0
    else:
        w = float(z.mean() / (sd / math.sqrt(len(z))))
    norm = _sps().norm
    p = float(2 * norm.sf(abs(w))) if alternative == "two-sided" else float(norm.cdf(w))
    if sd == 0 and w == 0.0:
        p = 1.0  # every segment equal: nothing supports a difference
    return _result("mapsswe", p, w, z, alternative)


@dataclass(frozen=True)
class BootstrapInterval:
    """Percentile interval of ΔWER (candidate − production; negative is better)."""

    delta: float
    low: float
    high: float
    confidence: float
    resamples: int
    unit: str  # "utterance" or "speaker"
    units: int
    prob_improvement: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_bootstrap(
    candidate_errors: Counts,
    production_errors: Counts,
    ref_lengths: Counts,
    *,
    speakers: Sequence[str] | None = None,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapInterval:
    """Bootstrap interval on ΔWER. With `speakers`, whole speakers are resampled (blocked bootstrap).

    An empty input, or one with no reference words, gives NaN bounds (a gate then rejects).
    """
    deltas, delta, unit, units = bootstrap_deltas(
        candidate_errors, production_errors, ref_lengths, speakers=speakers, resamples=resamples, seed=seed
    )
    if deltas is None:
        return BootstrapInterval(math.nan, math.nan, math.nan, confidence, resamples, unit, units, math.nan)
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    return BootstrapInterval(
        delta, float(low), float(high), confidence, resamples, unit, units, float((deltas < 0).mean())
    )


def bootstrap_deltas(
    candidate_errors: Counts,
    production_errors: Counts,
    ref_lengths: Counts,
    *,
    speakers: Sequence[str] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[np.ndarray | None, float, str, int]:
    """The resampled ΔWERs, the observed ΔWER, the resampling unit and the number of units."""
    cand = np.asarray(candidate_errors, dtype=np.int64)
    prod = np.asarray(production_errors, dtype=np.int64)
    length = np.asarray(ref_lengths, dtype=np.int64)
    if not cand.shape == prod.shape == length.shape:
        raise ValueError("error and length lists differ in length")
    unit = "utterance"
    if speakers is not None:
        if len(speakers) != len(cand):
            raise ValueError("one speaker label per utterance is needed")
        unit = "speaker"
        _, group = np.unique(np.asarray(speakers, dtype=object).astype(str), return_inverse=True)
        cand, prod, length = (np.bincount(group, weights=x).astype(np.int64) for x in (cand, prod, length))
    units = len(cand)
    if units == 0 or length.sum() == 0:
        return None, math.nan, unit, units
    delta = float((cand.sum() - prod.sum()) / length.sum())
    # one integer key per (Δerrors, length) row, so finding the distinct rows is a 1-D sort
    diff = cand - prod
    low, span = diff.min(), int(length.max()) + 1
    keys, counts = np.unique((diff - low) * span + length, return_counts=True)
    rows = np.stack([keys // span + low, keys % span], axis=1)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(units, counts / units, size=resamples)  # (resamples, distinct rows)
    num = draws @ rows[:, 0]
    den = draws @ rows[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        deltas = np.where(den > 0, num / np.maximum(den, 1), 0.0)
    return deltas, delta, unit, units


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1). NaN stays NaN and ranks last."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(np.where(np.isnan(p), np.inf, p), kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, idx in enumerate(order):
        if np.isnan(p[idx]):
            adjusted[idx] = math.nan
            continue
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted.tolist()


@dataclass(frozen=True)
class RatioInterval:
    """A ratio of sums over units (errors / words, corrected / requests) with a percentile
    bootstrap interval from resampling the units."""

    value: float
    low: float
    high: float
    units: int
    confidence: float = 0.95

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cluster_sums(
    numerators: Counts, denominators: Counts, clusters: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Numerators and denominators summed per cluster (unchanged without `clusters`)."""
    num, den = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    if clusters is None:
        return num, den
    if len(clusters) != len(num):
        raise ValueError(f"{len(clusters)} cluster labels for {len(num)} units")
    _, index = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    size = int(index.max()) + 1 if len(index) else 0
    return np.bincount(index, num, size), np.bincount(index, den, size)


def bootstrap_ratio(
    numerators: Counts,
    denominators: Counts,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    clusters: Sequence[str] | None = None,
) -> RatioInterval:
    """sum(numerators) / sum(denominators), and its interval (resampling `clusters` whole when
    given); NaN where the denominator is 0. `units` counts the units, not the clusters."""
    n = len(numerators)
    num, den = cluster_sums(numerators, denominators, clusters)
    if n == 0 or den.sum() == 0:
        return RatioInterval(math.nan, math.nan, math.nan, n, confidence)
    value = float(num.sum() / den.sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), size=(resamples, len(num)))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    ratios = ratios[np.isfinite(ratios)]
    tail = (1 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail]) if len(ratios) else (math.nan, math.nan)
    return RatioInterval(value, float(low), float(high), n, confidence)


@dataclass(frozen=True)
class Difference:
    """`a − b` for two independent groups, with a two-sided interval at `confidence`. NaN bounds
    when either group has nothing to measure (a gate or a monitor then decides nothing from it)."""

    a: float
    b: float
    delta: float
    low: float
    high: float
    confidence: float
    method: str
    n_a: int
    n_b: int

    @property
    def measured(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def proportion_difference(k_a: int, n_a: int, k_b: int, n_b: int, *, confidence: float = 0.95) -> Difference:
    """k_a/n_a − k_b/n_b with Newcombe's hybrid score interval (the Wilson intervals of each
    proportion combined; well behaved at small counts and at 0 %, unlike the Wald interval)."""
    from statsmodels.stats.proportion import confint_proportions_2indep

    if n_a == 0 or n_b == 0:
        return Difference(math.nan, math.nan, math.nan, math.nan, math.nan, confidence, "newcombe", n_a, n_b)
    low, high = confint_proportions_2indep(
        k_a, n_a, k_b, n_b, method="newcomb", compare="diff", alpha=1 - confidence
    )
    a, b = k_a / n_a, k_b / n_b
    return Difference(a, b, a - b, float(low), float(high), confidence, "newcombe", n_a, n_b)


def _resampled_ratios(
    num: np.ndarray, den: np.ndarray, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Ratios of sums over `resamples` bootstrap samples of the units, drawn as multinomial counts
    over the distinct (numerator, denominator) rows (few, for error counts), not as index arrays."""
    rows, counts = np.unique(np.stack([num, den], axis=1), axis=0, return_counts=True)
    draws = rng.multinomial(len(num), counts / len(num), size=resamples)
    top, bottom = draws @ rows[:, 0], draws @ rows[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bottom > 0, top / np.maximum(bottom, 1), np.nan)


def ratio_difference(
    numerators_a: Counts,
    denominators_a: Counts,
    numerators_b: Counts,
    denominators_b: Counts,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    clusters_a: Sequence[str] | None = None,
    clusters_b: Sequence[str] | None = None,
) -> Difference:
    """sum(num_a)/sum(den_a) − sum(num_b)/sum(den_b) (e.g. WER of two arms), with a percentile
    interval from resampling the units of each group independently (the groups are different
    requests, so nothing pairs them), or each group's clusters whole where they are given."""
    n_a, n_b = len(numerators_a), len(numerators_b)
    num_a, den_a = cluster_sums(numerators_a, denominators_a, clusters_a)
    num_b, den_b = cluster_sums(numerators_b, denominators_b, clusters_b)
    method = "cluster bootstrap" if clusters_a is not None or clusters_b is not None else "bootstrap"
    if n_a == 0 or n_b == 0 or den_a.sum() == 0 or den_b.sum() == 0:
        return Difference(math.nan, math.nan, math.nan, math.nan, math.nan, confidence, method, n_a, n_b)
    a, b = float(num_a.sum() / den_a.sum()), float(num_b.sum() / den_b.sum())
    rng = np.random.default_rng(seed)
    deltas = _resampled_ratios(num_a, den_a, resamples, rng) - _resampled_ratios(num_b, den_b, resamples, rng)
    deltas = deltas[np.isfinite(deltas)]
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    return Difference(a, b, a - b, float(low), float(high), confidence, method, n_a, n_b)
