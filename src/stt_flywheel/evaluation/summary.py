"""A comparison summed up: the held-out metrics the gates read, and the details the reports show."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson

from stt_flywheel.config import ValidationPolicy
from stt_flywheel.evaluation.comparison import Comparison
from stt_flywheel.evaluation.metrics import DomainSlice, HeldoutMetrics
from stt_flywheel.scoring.stats import PairedTest

__all__ = ["TRANSCRIPTS", "bare", "summarize_comparison", "utterances_jsonl", "without_transcripts"]


def summarize_comparison(comp: Comparison, policy: ValidationPolicy) -> tuple[HeldoutMetrics, dict[str, Any]]:
    """Headline metrics (for the gates, KFP `Metrics` and the ledger) and the details the reports show."""
    interval = comp.interval(policy)
    tests = comp.tests()
    signatures = comp.signatures(policy) if comp.rows else {}
    details: dict[str, Any] = {
        "normalizer": comp.candidate.normalizer,
        "slice_margin": policy.max_slice_degradation,
        "interval": interval.as_dict(),
        "tests": {name: t.as_dict() for name, t in tests.items()},
        "signatures": signatures,
        "slices": comp.slices(policy) if comp.rows else [],
        "churn": comp.churn(policy.churn_examples) if comp.rows else {},
        "worst_regressions": comp.worst_regressions(policy.churn_examples) if comp.rows else [],
        "largest_improvements": comp.largest_improvements(policy.churn_examples) if comp.rows else [],
        "utterance_delta_wer": comp.utterance_delta_wer(),
    }
    measured: dict[str, Any] = {
        **_score_metrics(comp),
        "delta_wer": comp.delta_wer,
        "delta_wer_low": interval.low,
        "delta_wer_high": interval.high,
        "prob_improvement": interval.prob_improvement,
        **_test_metrics(tests, policy, len(comp.rows) or 1),
    }
    for model, sig in signatures.items():
        prefix = "" if model == "candidate" else "production_"
        measured |= {f"{prefix}{k}": float(v) for k, v in sig.items() if k.endswith("_share")}
    if comp.production is not None and comp.rows:
        measured["newly_broken"] = float(details["churn"]["newly_broken"])
        measured["newly_fixed"] = float(details["churn"]["newly_fixed"])
    if policy.critical_terms and comp.rows:
        recall = comp.critical_recall(policy.critical_terms)
        details["critical_terms"] = recall
        measured["critical_recall"] = recall["candidate"]["recall"]
        if "production" in recall:
            measured["production_critical_recall"] = recall["production"]["recall"]
    measured["slices"] = {
        sl["value"]: DomainSlice(
            utterances=float(sl["utterances"]),
            wer=sl["candidate_wer"],
            production_wer=sl.get("production_wer"),
        )
        for sl in details["slices"]
        if sl["field"] == "domain"
    }
    return HeldoutMetrics(**measured), details


def _score_metrics(comp: Comparison) -> dict[str, float]:
    cand, prod = comp.candidate, comp.production
    return {
        "heldout_utterances": float(len(comp.rows)),
        "wer": cand.wer,
        "cer": cand.cer,
        "raw_wer": cand.raw_wer,
        "substitutions": float(cand.substitutions),
        "deletions": float(cand.deletions),
        "insertions": float(cand.insertions),
        "hits": float(cand.hits),
        "production_wer": prod.wer if prod else math.nan,
        "production_cer": prod.cer if prod else math.nan,
        "production_raw_wer": prod.raw_wer if prod else math.nan,
        # errors that only the normaliser forgives: casing, punctuation, written-out numbers
        "formatting_error_rate": cand.raw_wer - cand.wer,
        "production_formatting_error_rate": prod.raw_wer - prod.wer if prod else math.nan,
    }


def _test_metrics(tests: dict[str, PairedTest], policy: ValidationPolicy, n: int) -> dict[str, float]:
    if not tests:
        return {}
    return {
        "p_value": tests[policy.significance_test].p_value,
        **{f"p_{name}": t.p_value for name, t in tests.items()},
        "worse_share": tests["wilcoxon"].worse / n,
        "better_share": tests["wilcoxon"].better / n,
    }


TRANSCRIPTS = ("ref", "production_hyp", "candidate_hyp", "candidate_alignment", "production_alignment")


def bare(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Examples without their text (ids and error counts stay)."""
    return [{k: v for k, v in e.items() if k not in TRANSCRIPTS} for e in entries]


def without_transcripts(details: dict[str, Any]) -> dict[str, Any]:
    """The report details with every example's text left out (ids and error counts stay):
    `reports.include_transcripts: false`."""
    out = dict(details)
    if out.get("churn"):
        out["churn"] = {
            **out["churn"],
            "broken": bare(out["churn"]["broken"]),
            "fixed": bare(out["churn"]["fixed"]),
        }
    for key in ("worst_regressions", "largest_improvements"):
        if key in out:
            out[key] = bare(out[key])
    return out


def utterances_jsonl(comparisons: Sequence[Comparison], texts: bool) -> bytes:
    """`utterances.jsonl`: every set's rows, their transcripts left out unless `texts`."""
    return b"".join(
        orjson.dumps({"set": c.name, **(r.as_dict() if texts else bare([r.as_dict()])[0])}) + b"\n"
        for c in comparisons
        for r in c.rows
    )
