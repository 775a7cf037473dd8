"""Stage 4: the candidate against production on the held-out split and on the curated eval set."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stt_flywheel.config import ValidationPolicy
from stt_flywheel.evaluation.comparison import Comparison, compare_models
from stt_flywheel.evaluation.gates import (
    Verdict,
    curated_gates,
    first_run_verdict,
    slice_gates,
    validation_verdict,
)
from stt_flywheel.evaluation.metrics import HeldoutMetrics
from stt_flywheel.evaluation.summary import summarize_comparison
from stt_flywheel.models import SpeechModel

__all__ = ["ValidationResult", "validate_candidate"]


@dataclass
class ValidationResult:
    metrics: HeldoutMetrics
    verdict: Verdict
    comparisons: list[Comparison]
    details: dict[str, Any] = field(default_factory=dict)


def validate_candidate(
    candidate: SpeechModel,
    production: SpeechModel | None,
    heldout: Sequence[dict[str, Any]],
    policy: ValidationPolicy,
    eval_examples: Sequence[dict[str, Any]] = (),
) -> ValidationResult:
    """The held-out split and the curated eval set, both gated (the eval set against production)."""
    held = compare_models("heldout", heldout, candidate, production, policy.batch_size, policy.normalizer)
    metrics, details = summarize_comparison(held, policy)
    comparisons = [held]
    if eval_examples:
        ev = compare_models(
            "eval", eval_examples, candidate, production, policy.batch_size, policy.normalizer
        )
        comparisons.append(ev)
        recall = ev.critical_recall(policy.critical_terms) if policy.critical_terms else {}
        measured = recall.get("candidate", {}).get("occurrences", 0) > 0
        metrics = metrics.model_copy(
            update={
                "eval_wer": ev.candidate.wer,
                "eval_cer": ev.candidate.cer,
                "eval_production_wer": ev.production.wer if ev.production else math.nan,
                "eval_production_cer": ev.production.cer if ev.production else math.nan,
                "eval_critical_recall": recall["candidate"]["recall"] if measured else None,
                "eval_production_critical_recall": (
                    recall["production"]["recall"] if measured and ev.production else None
                ),
            }
        )
    if production is None:
        verdict = first_run_verdict(metrics, policy)
    else:
        verdict = validation_verdict(metrics, policy)
        verdict.gates.extend(slice_gates(details["slices"], policy))
        if eval_examples:
            verdict.gates.extend(curated_gates(metrics, policy))
    return ValidationResult(metrics, verdict, comparisons, details)
