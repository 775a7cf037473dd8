"""Churn, slices, failure signatures and critical-term recall, on texts (no models needed)."""

import math

import pytest

from stt_flywheel.config import ValidationPolicy
from stt_flywheel.evaluation.comparison import (
    Comparison,
    comparison_from_texts,
    duration_bucket,
)
from stt_flywheel.evaluation.summary import summarize_comparison

POLICY = ValidationPolicy(normalizer="basic-en/1", min_slice_size=2, critical_terms=["metformin", "Warfarin"])


def _comp(rows: list[tuple[str, str, str, dict]]) -> Comparison:
    examples = [{"id": f"u{k}", "text": ref, **meta} for k, (ref, _, _, meta) in enumerate(rows)]
    return comparison_from_texts(
        "t", examples, [c for _, _, c, _ in rows], [p for _, p, _, _ in rows], POLICY.normalizer
    )


ROWS = [
    # reference, production, candidate, metadata
    ("refill my metformin", "refill my met for men", "refill my metformin", {"speaker": "a", "domain": "rx"}),
    ("take warfarin daily", "take warfarin daily", "take war farin daily", {"speaker": "a", "domain": "rx"}),
    ("turn the lights on", "turn the lights on", "turn the lights on", {"speaker": "b", "domain": "home"}),
    ("open the garage", "open garage", "open the garage", {"speaker": "b", "domain": "home"}),
]


def test_churn_lists_newly_broken_and_fixed_with_alignments() -> None:
    churn = _comp(ROWS).churn(limit=10)
    assert (churn["newly_broken"], churn["newly_fixed"]) == (1, 2)
    broken = churn["broken"][0]
    assert broken["id"] == "u1"
    ref_line, hyp_line, eval_line = broken["candidate_alignment"]
    assert "WARFARIN" in ref_line
    assert "WAR" in hyp_line
    assert "FARIN" in hyp_line
    assert eval_line.split() == ["S", "I"] or sorted(eval_line.split()) == ["I", "S"]
    assert {e["id"] for e in churn["fixed"]} == {"u0", "u3"}
    assert _comp(ROWS).churn(limit=1)["fixed"][0]["id"] == "u0"  # most production errors first


def test_critical_term_recall_per_model() -> None:
    recall = _comp(ROWS).critical_recall(POLICY.critical_terms)
    assert recall["production"]["recall"] == 0.5
    assert recall["candidate"]["recall"] == 0.5
    assert recall["production"]["per_term"] == {"metformin": 0.0, "warfarin": 1.0}
    assert recall["candidate"]["per_term"] == {"metformin": 1.0, "warfarin": 0.0}
    assert math.isnan(_comp(ROWS[2:]).critical_recall(["metformin"])["candidate"]["recall"])


def test_slices_by_metadata_with_intervals() -> None:
    slices = _comp(ROWS).slices(POLICY)
    by_key = {(s["field"], s["value"]): s for s in slices}
    assert set(by_key) == {("domain", "rx"), ("domain", "home"), ("speaker", "a"), ("speaker", "b")}
    home = by_key[("domain", "home")]
    assert home["utterances"] == 2
    assert home["candidate_wer"] == 0.0
    assert home["production_wer"] == pytest.approx(1 / 7)
    assert home["low"] <= home["delta_wer"] <= home["high"]
    assert home["gated"]


@pytest.mark.parametrize(
    ("seconds", "bucket"), [(0.5, "<2s"), (2.0, "2-5s"), (4.99, "2-5s"), (7, "5-10s"), (10, "≥10s")]
)
def test_duration_buckets(seconds: float, bucket: str) -> None:
    assert duration_bucket(seconds) == bucket


SIGNATURE_CASES = [
    # reference, hypothesis, (empty, loop, burst)
    ("call mom", "", (1, 0, 0)),
    ("call mom", "call mom mom mom", (0, 1, 0)),
    ("call mom", "call me call me call me", (0, 1, 1)),
    ("call mom", "a b c d call mom", (0, 0, 1)),
    ("call mom", "a b c call mom", (0, 0, 0)),  # three insertions: below the burst length
    ("no no no", "no no no", (0, 0, 0)),  # a repetition the reference has is not a loop
]


@pytest.mark.parametrize(("ref", "hyp", "expected"), SIGNATURE_CASES)
def test_failure_signatures(ref: str, hyp: str, expected: tuple[int, int, int]) -> None:
    sig = _comp([(ref, ref, hyp, {})]).signatures(POLICY)["candidate"]
    assert (sig["empty"], sig["loops"], sig["bursts"]) == expected


def test_summary_metrics_and_details() -> None:
    metrics, details = summarize_comparison(_comp(ROWS), POLICY)
    assert metrics.newly_broken == 1
    assert metrics.newly_fixed == 2
    assert metrics.delta_wer_low <= metrics.delta_wer <= metrics.delta_wer_high
    assert set(details["tests"]) == {"wilcoxon", "t_test", "mapsswe"}
    assert details["normalizer"] == "basic-en/1"
    assert details["interval"]["unit"] == "speaker"
    assert metrics.critical_recall == metrics.production_critical_recall == 0.5
    assert len(details["utterance_delta_wer"]) == 4
