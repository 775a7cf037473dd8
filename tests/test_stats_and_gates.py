import math

import numpy as np
import pytest
from scipy import stats as sps

from stt_flywheel.config import RegressionSuite, ValidationPolicy
from stt_flywheel.evaluation.gates import first_run_verdict, slice_gates, validation_verdict
from stt_flywheel.scoring.alignment import align_pairs
from stt_flywheel.scoring.stats import (
    holm,
    mapsswe,
    mapsswe_segments,
    paired_bootstrap,
    paired_t_test,
    paired_wilcoxon,
)


def test_wilcoxon_matches_scipy_on_nonzero_differences() -> None:
    rng = np.random.default_rng(0)
    prod = rng.integers(0, 6, 200)
    cand = np.clip(prod - rng.integers(-1, 3, 200), 0, None)
    test = paired_wilcoxon(cand, prod)
    diff = (cand - prod)[cand != prod]
    expected = sps.wilcoxon(diff, alternative="less")
    assert test.p_value == pytest.approx(expected.pvalue)
    assert test.better == int((cand < prod).sum()) and test.worse == int((cand > prod).sum())
    assert test.p_value < 1e-6


PAIRED_CASES = [
    ([0, 0, 0], [0, 0, 0], 1.0),  # no differences: no evidence
    ([], [], math.nan),  # nothing measured
    ([3, 3, 3, 3, 3, 3], [0, 0, 0, 0, 0, 0], None),  # candidate worse: large p
]


@pytest.mark.parametrize(("cand", "prod", "expected"), PAIRED_CASES)
def test_wilcoxon_edge_cases(cand: list[int], prod: list[int], expected: float | None) -> None:
    p = paired_wilcoxon(cand, prod).p_value
    if expected is None:
        assert p > 0.9
    elif math.isnan(expected):
        assert math.isnan(p)
    else:
        assert p == expected


GOOD = {
    "heldout_utterances": 50.0,
    "wer": 0.2,
    "production_wer": 0.5,
    "p_value": 0.001,
    "worse_share": 0.05,
    "empty_share": 0.0,
    "cer": 0.1,
    "production_cer": 0.3,
    "delta_wer": -0.3,
    "delta_wer_low": -0.35,
    "delta_wer_high": -0.25,
    "loop_share": 0.0,
    "production_loop_share": 0.0,
    "burst_share": 0.02,
    "production_burst_share": 0.04,
    "critical_recall": 0.9,
    "production_critical_recall": 0.8,
}
POLICY = ValidationPolicy(
    min_wer_improvement=0.05, max_p_value=0.05, max_worse_share=0.2, max_empty_share=0.05
)

# (metric overrides, policy overrides, passes, failing gate)
GATE_CASES = [
    ({}, {}, True, None),
    ({"delta_wer_high": -0.01}, {}, False, "min_wer_improvement"),  # the point estimate alone is not enough
    ({"delta_wer": -0.3, "delta_wer_high": -0.06}, {}, True, None),
    ({"p_value": 0.2}, {}, False, "max_p_value"),
    ({"worse_share": 0.3}, {}, False, "max_worse_share"),
    ({"p_value": math.nan}, {}, False, "max_p_value"),
    ({"delta_wer_high": math.nan}, {}, False, "min_wer_improvement"),
    ({"loop_share": 0.05}, {}, False, "max_loop_share_increase"),
    ({"burst_share": 0.07}, {}, False, "max_burst_share_increase"),
    ({"production_burst_share": math.nan}, {}, False, "max_burst_share_increase"),
    ({}, {"max_loop_share_increase": None}, False, "max_loop_share_increase"),
    ({"critical_recall": 0.7}, {"critical_terms": ["metformin"]}, False, "max_critical_recall_drop"),
    ({}, {"critical_terms": ["metformin"]}, True, None),
    ({"critical_recall": math.nan}, {"critical_terms": ["metformin"]}, False, "max_critical_recall_drop"),
    ({}, {"max_p_value": None}, False, "max_p_value"),
    ({}, {"min_wer_improvement": None}, False, "min_wer_improvement"),
    ({"heldout_utterances": 0.0}, {}, False, "heldout_size"),
    ({"empty_share": 0.5}, {}, False, "max_empty_share"),
    ({"cer": 0.31}, {}, False, "max_cer_increase"),
    ({"cer": 0.31}, {"max_cer_increase": 0.02}, True, None),
    ({}, {"max_empty_share": None}, False, "max_empty_share"),
]


@pytest.mark.parametrize(("metrics", "policy", "passes", "failing"), GATE_CASES)
def test_validation_gates_fail_closed(metrics: dict, policy: dict, passes: bool, failing: str | None) -> None:
    verdict = validation_verdict({**GOOD, **metrics}, POLICY.model_copy(update=policy))
    assert verdict.passed is passes
    failed = [g.name for g in verdict.gates if not g.passed]
    assert failed == ([failing] if failing else [])
    assert verdict.as_dict()["reasons"]


def test_missing_metrics_reject() -> None:
    verdict = validation_verdict({"heldout_utterances": 10.0}, POLICY)
    assert not verdict.passed and {g.name for g in verdict.gates if not g.passed} == {
        "min_wer_improvement",
        "max_p_value",
        "max_worse_share",
        "max_cer_increase",
        "max_empty_share",
        "max_loop_share_increase",
        "max_burst_share_increase",
    }


FIRST_RUN_CASES = [
    (
        {"wer": 0.1, "cer": 0.05, "empty_share": 0.0},
        {"first_run_max_wer": 0.2, "first_run_max_cer": 0.1},
        True,
    ),
    (
        {"wer": 0.3, "cer": 0.05, "empty_share": 0.0},
        {"first_run_max_wer": 0.2, "first_run_max_cer": 0.1},
        False,
    ),
    ({"wer": 0.1, "cer": 0.05, "empty_share": 0.0}, {}, False),  # no absolute thresholds configured
]


@pytest.mark.parametrize(("metrics", "policy", "passes"), FIRST_RUN_CASES)
def test_first_run_policy_is_explicit_and_absolute(metrics: dict, policy: dict, passes: bool) -> None:
    verdict = first_run_verdict({"heldout_utterances": 20.0, **metrics}, POLICY.model_copy(update=policy))
    assert verdict.passed is passes and verdict.as_dict()["policy"] == "first_run_absolute"


SLICE_CASES = [
    # delta, low, high, gated, passes
    (0.10, 0.02, 0.2, True, False),  # clearly worse, beyond the bound
    (0.10, -0.02, 0.2, True, True),  # worse by the point estimate, but the interval includes 0
    (0.03, 0.01, 0.05, True, True),  # significantly worse, within the bound
    (math.nan, math.nan, math.nan, True, False),  # nothing measured
    (0.5, 0.4, 0.6, False, True),  # too small to gate: reported only
]


@pytest.mark.parametrize(("delta", "low", "high", "gated", "passes"), SLICE_CASES)
def test_slice_gates(delta: float, low: float, high: float, gated: bool, passes: bool) -> None:
    sl = {
        "field": "speaker",
        "value": "s1",
        "utterances": 30,
        "gated": gated,
        "delta_wer": delta,
        "low": low,
        "high": high,
    }
    gates = slice_gates([sl], POLICY)
    assert all(g.passed for g in gates) is passes
    assert len(gates) == int(gated)
    assert (
        not all(
            g.passed for g in slice_gates([sl], POLICY.model_copy(update={"max_slice_degradation": None}))
        )
        or not gated
    )


def test_suite_config_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError):
        RegressionSuite(name="x", data="x.jsonl", kind="nightly")  # type: ignore[arg-type]


# --- paired t-test, MAPSSWE, bootstrap, Holm -------------------------------------------------------


def test_paired_t_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    prod = rng.integers(0, 5, 300)
    cand = np.clip(prod - rng.integers(-1, 2, 300), 0, None)
    test = paired_t_test(cand, prod)
    expected = sps.ttest_rel(cand, prod, alternative="less")
    assert test.p_value == pytest.approx(expected.pvalue) and test.statistic == pytest.approx(
        expected.statistic
    )


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
    result = mapsswe(al_a, al_b)
    assert result.statistic == pytest.approx(z.statistic)
    assert result.p_value == pytest.approx(2 * sps.norm.sf(abs(z.statistic)))


SEGMENT_CASES = [
    # refs, hyps A, hyps B, expected segment differences
    (["a b c d e f"], ["a b x d e f"], ["a b c d e g"], [1, -1]),  # two segments cut by "d e"
    (["x y z"], ["x"], ["x y"], [1]),  # one segment: "x" alone is no anchor
    (["p q"], ["p q r"], ["p"], [0]),  # insertion after q vs deletion of q: one error each
    (["a b"], ["a b"], ["a b"], []),  # nothing wrong anywhere: no segment
    ([""], ["oops"], [""], [1]),  # an empty reference: its insertions
]


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
    assert abs(fast.low - low) < 0.05 * width and abs(fast.high - high) < 0.05 * width
    assert fast.low < fast.delta < fast.high and fast.unit == "utterance" and fast.units == n


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
    assert by_spk.unit == "speaker" and by_spk.units == 20
    assert by_spk.delta == pytest.approx(by_utt.delta)
    assert (by_spk.high - by_spk.low) > 2 * (by_utt.high - by_utt.low)


@pytest.mark.parametrize(("cand", "prod", "lengths"), [([], [], []), ([1, 0], [0, 0], [0, 0])])
def test_bootstrap_without_data_is_nan(cand: list[int], prod: list[int], lengths: list[int]) -> None:
    result = paired_bootstrap(cand, prod, lengths)
    assert math.isnan(result.low) and math.isnan(result.high)


HOLM_CASES = [
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
    ([0.5], [0.5]),
    ([0.2, 0.9], [0.4, 0.9]),
    ([0.01, math.nan], [0.02, math.nan]),  # NaN still counts as a test; it stays NaN (rejected)
    ([0.3, 0.3, 0.3], [0.9, 0.9, 0.9]),
]


@pytest.mark.parametrize(("p", "expected"), HOLM_CASES)
def test_holm(p: list[float], expected: list[float]) -> None:
    assert holm(p) == pytest.approx(expected, nan_ok=True)
