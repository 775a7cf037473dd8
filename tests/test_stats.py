"""Paired statistics against scipy and by construction: Wilcoxon, t, MAPSSWE, bootstrap, Holm."""

import math
import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from stt_flywheel.scoring.alignment import align_pairs
from stt_flywheel.scoring.stats import (
    bootstrap_ratio,
    cluster_sums,
    holm,
    mapsswe,
    mapsswe_segments,
    paired_bootstrap,
    paired_t_test,
    paired_wilcoxon,
    proportion_difference,
    ratio_difference,
)

PAIRED_CASES = [
    ([0, 0, 0], [0, 0, 0], 1.0),  # no differences: no evidence
    ([], [], math.nan),  # nothing measured
    ([3, 3, 3, 3, 3, 3], [0, 0, 0, 0, 0, 0], None),  # candidate worse: large p
]


SEGMENT_CASES = [
    # refs, hyps A, hyps B, expected segment differences
    (["a b c d e f"], ["a b x d e f"], ["a b c d e g"], [1, -1]),  # two segments cut by "d e"
    (["x y z"], ["x"], ["x y"], [1]),  # one segment: "x" alone is no anchor
    (["p q"], ["p q r"], ["p"], [0]),  # insertion after q vs deletion of q: one error each
    (["a b"], ["a b"], ["a b"], []),  # nothing wrong anywhere: no segment
    ([""], ["oops"], [""], [1]),  # an empty reference: its insertions
]


HOLM_CASES = [
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
    ([0.5], [0.5]),
    ([0.2, 0.9], [0.4, 0.9]),
    ([0.01, math.nan], [0.02, math.nan]),  # NaN still counts as a test; it stays NaN (rejected)
    ([0.3, 0.3, 0.3], [0.9, 0.9, 0.9]),
]


def test_wilcoxon_matches_scipy_on_nonzero_differences() -> None:
    rng = np.random.default_rng(0)
    prod = rng.integers(0, 6, 200)
    cand = np.clip(prod - rng.integers(-1, 3, 200), 0, None)
    test = paired_wilcoxon(cand, prod)
    diff = (cand - prod)[cand != prod]
    expected = sps.wilcoxon(diff, alternative="less")
    assert test.p_value == pytest.approx(expected.pvalue)
    assert test.better == int((cand < prod).sum())
    assert test.worse == int((cand > prod).sum())
    assert test.p_value < 1e-6


@pytest.mark.parametrize(("cand", "prod", "expected"), PAIRED_CASES)
def test_wilcoxon_edge_cases(cand: list[int], prod: list[int], expected: float | None) -> None:
    p = paired_wilcoxon(cand, prod).p_value
    if expected is None:
        assert p > 0.9
    elif math.isnan(expected):
        assert math.isnan(p)
    else:
        assert p == expected


def test_paired_t_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    prod = rng.integers(0, 5, 300)
    cand = np.clip(prod - rng.integers(-1, 2, 300), 0, None)
    test = paired_t_test(cand, prod)
    expected = sps.ttest_rel(cand, prod, alternative="less")
    assert test.p_value == pytest.approx(expected.pvalue)
    assert test.statistic == pytest.approx(expected.statistic)


def test_mapsswe_equals_a_z_test_when_each_utterance_is_one_segment() -> None:
    """No two adjacent words are right in both systems, so segments are whole utterances."""
    rng = np.random.default_rng(2)
    refs, hyp_a, hyp_b = [], [], []
    for k in range(120):
        words = [f"w{k}_{i}" for i in range(4)]
        refs.append(" ".join(words))
        # A errs on words 0 and 2 (sometimes also 3), B on words 1 and 3 (sometimes also 0)
        a = [w if i in (1, 3) else "x" for i, w in enumerate(words)]
        b = [w if i in (0, 2) else "y" for i, w in enumerate(words)]
        if rng.random() < 0.4:
            a[3] = "x"
        if rng.random() < 0.2:
            b[0] = "y"
        hyp_a.append(" ".join(a))
        hyp_b.append(" ".join(b))
    al_a, al_b = align_pairs(refs, hyp_a), align_pairs(refs, hyp_b)
    diffs = mapsswe_segments(al_a, al_b)
    assert len(diffs) == 120
    err_a = np.array([al.counts()["S"] for al in al_a])
    err_b = np.array([al.counts()["S"] for al in al_b])
    z = sps.ttest_rel(err_a, err_b)
    two_sided = mapsswe(al_a, al_b, alternative="two-sided")
    assert two_sided.statistic == pytest.approx(z.statistic)
    assert two_sided.p_value == pytest.approx(2 * sps.norm.sf(abs(z.statistic)))
    a_better = mapsswe(al_a, al_b)  # the gates' direction: A makes fewer errors (here it makes more)
    assert a_better.alternative == "less"
    assert a_better.p_value == pytest.approx(sps.norm.cdf(z.statistic))
    assert a_better.p_value > 0.5


@pytest.mark.parametrize(("refs", "a", "b", "expected"), SEGMENT_CASES)
def test_mapsswe_segments(refs: list[str], a: list[str], b: list[str], expected: list[int]) -> None:
    assert mapsswe_segments(align_pairs(refs, a), align_pairs(refs, b)).tolist() == expected


def test_bootstrap_agrees_with_a_row_gather_bootstrap() -> None:
    """Resampling counts over distinct rows is the same distribution as gathering rows."""
    rng = np.random.default_rng(3)
    n = 2000
    lengths = rng.integers(3, 20, n)
    prod = rng.binomial(lengths, 0.2)
    cand = rng.binomial(lengths, 0.17)
    fast = paired_bootstrap(cand, prod, lengths, resamples=4000, seed=5)
    diff = cand - prod
    slow = []
    for _ in range(4000):
        idx = rng.integers(0, n, n)
        slow.append(diff[idx].sum() / lengths[idx].sum())
    low, high = np.quantile(slow, [0.025, 0.975])
    assert fast.delta == pytest.approx(diff.sum() / lengths.sum())
    width = high - low
    assert abs(fast.low - low) < 0.05 * width
    assert abs(fast.high - high) < 0.05 * width
    assert fast.low < fast.delta < fast.high
    assert fast.unit == "utterance"
    assert fast.units == n


def test_speaker_blocked_bootstrap_is_wider_when_speakers_differ() -> None:
    """Errors that cluster by speaker make utterance resampling overconfident; speaker resampling is not."""
    rng = np.random.default_rng(4)
    speakers = np.repeat([f"s{i}" for i in range(20)], 50)
    effect = np.repeat(rng.normal(0, 2, 20), 50)  # per-speaker change in errors
    lengths = np.full(1000, 10)
    prod = rng.poisson(3, 1000)
    cand = np.clip(np.round(prod + effect + rng.normal(0, 0.5, 1000)), 0, None).astype(int)
    by_utt = paired_bootstrap(cand, prod, lengths)
    by_spk = paired_bootstrap(cand, prod, lengths, speakers=speakers.tolist())
    assert by_spk.unit == "speaker"
    assert by_spk.units == 20
    assert by_spk.delta == pytest.approx(by_utt.delta)
    assert (by_spk.high - by_spk.low) > 2 * (by_utt.high - by_utt.low)


@pytest.mark.parametrize(("cand", "prod", "lengths"), [([], [], []), ([1, 0], [0, 0], [0, 0])])
def test_bootstrap_without_data_is_nan(cand: list[int], prod: list[int], lengths: list[int]) -> None:
    result = paired_bootstrap(cand, prod, lengths)
    assert math.isnan(result.low)
    assert math.isnan(result.high)


@pytest.mark.parametrize(("p", "expected"), HOLM_CASES)
def test_holm(p: list[float], expected: list[float]) -> None:
    assert holm(p) == pytest.approx(expected, nan_ok=True)


SC_STATS_RESULT = re.compile(
    r"\(# segs: (\d+)\).*\(mean: (-?[\d.]+)\) \(std dev: ([\d.]+)\) \(Z Stat: (-?[\d.]+)\)"
)


def _noisy(rng: random.Random, words: list[str], vocab: list[str], error_rate: float) -> str:
    """A hypothesis: substitutions, deletions and insertions at about `error_rate`."""
    out = []
    for w in words:
        roll = rng.random()
        if roll < error_rate:
            out.append(rng.choice(vocab))
        elif roll >= error_rate * 1.4:
            out.append(w)
        if rng.random() < error_rate * 0.4:
            out.append(rng.choice(vocab))
    return " ".join(out)


def _sc_stats_mapsswe(
    tmp: Path, refs: list[str], a: list[str], b: list[str]
) -> tuple[int, float, float, float]:
    """(segments, mean, standard deviation, Z) as NIST's sc_stats prints them for A against B."""
    sctk = shutil.which("sctk")
    assert sctk, "sctk is required: `make test` installs it through apt"
    for name, lines in (("ref", refs), ("a", a), ("b", b)):
        (tmp / f"{name}.trn").write_text("".join(f"{s} (spk_{k:05d})\n" for k, s in enumerate(lines)))
    for system in ("a", "b"):
        cmd = [sctk, "sclite", "-r", str(tmp / "ref.trn"), "trn", "-h", str(tmp / f"{system}.trn"), "trn"]
        subprocess.run([*cmd, "-i", "rm", "-o", "sgml", "-O", str(tmp)], capture_output=True, check=True)
    sgml = (tmp / "a.trn.sgml").read_bytes() + (tmp / "b.trn.sgml").read_bytes()
    out = subprocess.run(
        [sctk, "sc_stats", "-p", "-t", "mapsswe", "-v", "-n", "-"],
        input=sgml,
        capture_output=True,
        check=True,
    ).stdout.decode()
    found = SC_STATS_RESULT.search(out)
    assert found, out[-2000:]
    return int(found[1]), float(found[2]), float(found[3]), float(found[4])


# (seed, utterances, error rate of A, of B): close systems, far apart, and insertion-heavy noise
SC_STATS_CORPORA = [(0, 400, 0.15, 0.25), (1, 300, 0.3, 0.3), (2, 500, 0.05, 0.4)]


@pytest.mark.sctk
@pytest.mark.parametrize(("seed", "n", "rate_a", "rate_b"), SC_STATS_CORPORA)
def test_mapsswe_equals_nist_sc_stats(
    tmp_path: Path, seed: int, n: int, rate_a: float, rate_b: float
) -> None:
    """The same segments, mean, standard deviation and Z as `sc_stats -t mapsswe`, to the decimals it prints."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(40)]
    words = [[rng.choice(vocab) for _ in range(rng.randint(1, 15))] for _ in range(n)]
    refs = [" ".join(w) for w in words]
    a = [_noisy(rng, w, vocab, rate_a) for w in words]
    b = [_noisy(rng, w, vocab, rate_b) for w in words]
    segments, mean, sd, z = _sc_stats_mapsswe(tmp_path, refs, a, b)
    diffs = mapsswe_segments(align_pairs(refs, a), align_pairs(refs, b))
    assert len(diffs) == segments
    assert round(float(diffs.mean()), 3) == pytest.approx(mean, abs=1e-9)
    assert round(float(diffs.std(ddof=1)), 3) == pytest.approx(sd, abs=1e-9)
    test = mapsswe(align_pairs(refs, a), align_pairs(refs, b), alternative="two-sided")
    assert test.n == segments
    assert round(test.statistic, 3) == pytest.approx(z, abs=1e-9)


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(("k_a", "n_a", "k_b", "n_b"), [(30, 300, 20, 300), (0, 50, 3, 40), (56, 70, 48, 80)])
def test_proportion_difference_is_newcombes_interval(k_a: int, n_a: int, k_b: int, n_b: int) -> None:
    # Newcombe (1998), method 10: the Wilson score limits of each proportion, combined
    z = 1.959963984540054
    (l1, u1), (l2, u2) = _wilson(k_a, n_a, z), _wilson(k_b, n_b, z)
    p1, p2 = k_a / n_a, k_b / n_b
    d = proportion_difference(k_a, n_a, k_b, n_b, confidence=0.95)
    assert d.delta == pytest.approx(p1 - p2)
    assert d.low == pytest.approx(p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2))
    assert d.high == pytest.approx(p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))
    assert not proportion_difference(1, 0, 1, 10).measured


def test_ratio_difference_resamples_each_arm() -> None:
    rng = np.random.default_rng(3)
    words_a, words_b = rng.integers(3, 12, 400), rng.integers(3, 12, 400)
    errors = rng.binomial(words_a, 0.2)
    same = ratio_difference(errors, words_a, errors, words_a)  # the same utterances in both arms
    assert same.delta == 0
    assert same.low < 0 < same.high
    worse = ratio_difference(rng.binomial(words_a, 0.3), words_a, rng.binomial(words_b, 0.2), words_b)
    assert 0 < worse.low < worse.delta < worse.high
    assert worse.delta == pytest.approx(worse.a - worse.b)
    # the interval narrows as the arms grow (its width shrinks about as 1/sqrt(n))
    big_a, big_b = np.tile(words_a, 4), np.tile(words_b, 4)
    wide = ratio_difference(rng.binomial(big_a, 0.3), big_a, rng.binomial(big_b, 0.2), big_b)
    assert (wide.high - wide.low) < 0.7 * (worse.high - worse.low)
    assert not ratio_difference([], [], [1], [3]).measured


def test_clusters_resample_whole_users_so_a_flood_widens_the_interval() -> None:
    """Twenty users with 2 predictions each and one with 400: the ratio is the same, but its
    interval is as wide as 21 users allow, not as narrow as 440 independent predictions would."""
    rng = np.random.default_rng(7)
    users = [f"u{i}" for i in range(20) for _ in range(2)] + ["flood"] * 400
    corrected = np.concatenate([rng.integers(0, 2, 40), np.zeros(400, np.int64)])
    ones = np.ones(len(users), np.int64)
    num, den = cluster_sums(corrected, ones, users)
    assert len(num) == 21 and num.sum() == corrected.sum() and den.sum() == 440
    unit = bootstrap_ratio(corrected, ones, seed=1)
    clustered = bootstrap_ratio(corrected, ones, clusters=users, seed=1)
    assert clustered.value == unit.value and clustered.units == unit.units == 440
    assert (clustered.high - clustered.low) > 3 * (unit.high - unit.low)
    baseline = rng.integers(0, 2, 400)
    d_unit = ratio_difference(corrected, ones, baseline, np.ones(400))
    d_users = ratio_difference(
        corrected, ones, baseline, np.ones(400), clusters_a=users, clusters_b=[f"b{i}" for i in range(400)]
    )
    assert d_users.delta == d_unit.delta and d_users.method == "cluster bootstrap"
    assert (d_users.high - d_users.low) > 2 * (d_unit.high - d_unit.low)
    with pytest.raises(ValueError, match="3 cluster labels for 440 units"):
        bootstrap_ratio(corrected, ones, clusters=["a", "b", "c"])
