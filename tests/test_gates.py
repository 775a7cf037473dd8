"""The validation gates: fail closed, first-run policy, slices."""

import math

import pytest
from pydantic import ValidationError

from stt_flywheel.config import ValidationPolicy
from stt_flywheel.evaluation.gates import first_run_verdict, slice_gates, validation_verdict
from stt_flywheel.evaluation.metrics import HeldoutMetrics

GOOD = {
    "heldout_utterances": 50.0,
    "wer": 0.2,
    "raw_wer": 0.3,
    "substitutions": 10.0,
    "deletions": 3.0,
    "insertions": 2.0,
    "hits": 60.0,
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
    "formatting_error_rate": 0.1,
    "production_formatting_error_rate": 0.08,
}


POLICY = ValidationPolicy(
    min_wer_improvement=0.05, max_p_value=0.05, max_worse_share=0.2, max_empty_share=0.05
)


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
    # lower case and no punctuation: normalised WER better, formatting errors up by 0.32
    ({"formatting_error_rate": 0.4}, {}, False, "max_formatting_error_increase"),
    ({"formatting_error_rate": 0.13}, {}, True, None),
    ({"formatting_error_rate": math.nan}, {}, False, "max_formatting_error_increase"),
    ({}, {"max_formatting_error_increase": None}, False, "max_formatting_error_increase"),
]


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


SLICE_CASES = [
    # delta, low, high, gated, passes
    (0.10, 0.02, 0.2, True, False),  # clearly worse, beyond the bound
    (0.10, -0.02, 0.2, True, True),  # worse by the point estimate, but the interval includes 0
    (0.03, 0.01, 0.05, True, True),  # significantly worse, within the bound
    (math.nan, math.nan, math.nan, True, False),  # nothing measured
    (0.5, 0.4, 0.6, False, True),  # too small to gate: reported only
]


@pytest.mark.parametrize(("metrics", "policy", "passes", "failing"), GATE_CASES)
def test_validation_gates_fail_closed(metrics: dict, policy: dict, passes: bool, failing: str | None) -> None:
    verdict = validation_verdict(HeldoutMetrics(**{**GOOD, **metrics}), POLICY.model_copy(update=policy))
    assert verdict.passed is passes
    failed = [g.name for g in verdict.gates if not g.passed]
    assert failed == ([failing] if failing else [])
    assert verdict.as_dict()["reasons"]


def test_missing_metrics_reject() -> None:
    verdict = validation_verdict(HeldoutMetrics(heldout_utterances=10.0), POLICY)
    assert not verdict.passed
    assert {g.name for g in verdict.gates if not g.passed} == {
        "min_wer_improvement",
        "max_p_value",
        "max_worse_share",
        "max_cer_increase",
        "max_formatting_error_increase",
        "max_empty_share",
        "max_loop_share_increase",
        "max_burst_share_increase",
    }


@pytest.mark.parametrize(
    "renamed", [("delta_wer_high", "delta_wer_upper"), ("p_value", "pvalue"), ("worse_share", "share_worse")]
)
def test_a_renamed_metric_key_fails_at_the_contract_not_at_a_gate(renamed: tuple[str, str]) -> None:
    """A producer that renames a key is refused where the metrics are read back (the ledger's
    JSON, a test's table), naming the key, instead of making a gate reject for a missing value."""
    old, new = renamed
    stored = HeldoutMetrics(**GOOD).model_dump_json()
    assert validation_verdict(HeldoutMetrics.model_validate_json(stored), POLICY).passed
    tampered = stored.replace(f'"{old}":', f'"{new}":')
    with pytest.raises(ValidationError) as refused:
        HeldoutMetrics.model_validate_json(tampered)
    assert new in str(refused.value) and "Extra inputs are not permitted" in str(refused.value)


def test_the_flat_metrics_round_trip_through_the_contract() -> None:
    """What KFP and the ledger get (`flat()`) reads back into the same metrics, slices included."""
    metrics = HeldoutMetrics(
        **GOOD, slices={"pharmacy": {"utterances": 12, "wer": 0.1, "production_wer": 0.4}}
    )
    flat = metrics.flat()
    assert flat["slice_pharmacy_production_wer"] == 0.4 and flat["delta_wer_high"] == -0.25
    assert set(GOOD) <= set(flat)
    assert HeldoutMetrics.model_validate_json(metrics.model_dump_json()) == metrics
    # the flat form reads back too (ledgers written before the metrics had a model kept it)
    assert HeldoutMetrics.model_validate(flat) == metrics
    with pytest.raises(ValidationError, match="slices_pharmacy_wer"):
        HeldoutMetrics.model_validate({**flat, "slices_pharmacy_wer": 0.1})


@pytest.mark.parametrize(("metrics", "policy", "passes"), FIRST_RUN_CASES)
def test_first_run_policy_is_explicit_and_absolute(metrics: dict, policy: dict, passes: bool) -> None:
    verdict = first_run_verdict(
        HeldoutMetrics(heldout_utterances=20.0, **metrics), POLICY.model_copy(update=policy)
    )
    assert verdict.passed is passes
    assert verdict.as_dict()["policy"] == "first_run_absolute"


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


def test_a_slice_reads_as_what_happened_to_it() -> None:
    """A passing slice says it is within its bound; only a degraded one says it failed."""
    base = {"gated": True, "field": "domain", "value": "pharmacy", "utterances": 40}
    passing, degraded = slice_gates(
        [
            {**base, "delta_wer": -0.10, "low": -0.20, "high": 0.01},
            {**base, "value": "general", "delta_wer": 0.12, "low": 0.04, "high": 0.2},
        ],
        ValidationPolicy(),
    )
    assert passing.passed and "(within:" in passing.reason and "degraded" not in passing.reason
    assert not degraded.passed and "(degraded: ΔWER above +0.05" in degraded.reason
