import math

import numpy as np
import pytest
from scipy import stats as sps

from stt_flywheel.config import RegressionSuite, ValidationPolicy
from stt_flywheel.gates import validation_verdict
from stt_flywheel.stats import paired_wilcoxon


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
}
POLICY = ValidationPolicy(
    min_wer_improvement=0.05, max_p_value=0.05, max_worse_share=0.2, max_empty_share=0.05
)

# (metric overrides, policy overrides, passes, failing gate)
GATE_CASES = [
    ({}, {}, True, None),
    ({"wer": 0.48}, {}, False, "min_wer_improvement"),
    ({"p_value": 0.2}, {}, False, "max_p_value"),
    ({"worse_share": 0.3}, {}, False, "max_worse_share"),
    ({"p_value": math.nan}, {}, False, "max_p_value"),
    ({"wer": math.nan}, {}, False, "min_wer_improvement"),
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
    }


def test_suite_config_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError):
        RegressionSuite(name="x", data="x.jsonl", kind="nightly")  # type: ignore[arg-type]
