"""Stage 5: non-inferiority of the candidate on every regression suite, Holm-adjusted across suites."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from stt_flywheel.config import RegressionSuite, ValidationPolicy
from stt_flywheel.evaluation.comparison import Comparison, compare_models, load_manifest_examples
from stt_flywheel.evaluation.gates import Gate, SuiteEvidence, Verdict, regression_verdict
from stt_flywheel.models import SpeechModel
from stt_flywheel.scoring.stats import bootstrap_deltas

__all__ = ["SuiteResult", "run_regression_suites"]


@dataclass
class SuiteResult:
    name: str
    kind: str
    candidate_wer: float
    candidate_cer: float
    reference_wer: float
    allowed_wer: float
    must_pass_failures: list[str]
    gates: list[Gate]
    utterances: int
    delta_wer: float = math.nan
    low: float = math.nan
    high: float = math.nan
    adjusted_high: float = math.nan
    p_inferior: float = math.nan
    p_holm: float = math.nan
    newly_broken: int = 0
    newly_fixed: int = 0
    broken_examples: list[dict[str, Any]] = field(default_factory=list)  # the first newly broken, aligned

    @property
    def passed(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def run_regression_suites(
    candidate: SpeechModel,
    production: SpeechModel | None,
    suites: Sequence[RegressionSuite],
    batch_size: int = 16,
    policy: ValidationPolicy | None = None,
) -> tuple[list[SuiteResult], Verdict]:
    """Measure every suite and let `gates.regression_verdict` decide (non-inferiority, Holm-adjusted).

    ΔWER is candidate minus reference: minus production's WER on the same utterances (paired
    bootstrap) when the suite's reference is `production`, else minus the configured number
    (bootstrap of the candidate alone). The margin is the suite's allowance: reference × relative +
    absolute.
    """
    policy = policy or ValidationPolicy()
    measured = [_measure(suite, candidate, production, batch_size, policy) for suite in suites]
    decisions, verdict = regression_verdict([e for _, e in measured], policy.confidence)
    results = []
    for suite, (comp, e), d in zip(suites, measured, decisions, strict=True):
        churn = comp.churn(policy.churn_examples)
        results.append(
            SuiteResult(
                name=e.name,
                kind=suite.kind,
                candidate_wer=comp.candidate.wer,
                candidate_cer=comp.candidate.cer,
                reference_wer=e.reference_wer,
                allowed_wer=e.reference_wer + e.margin,
                must_pass_failures=list(e.must_pass_failures),
                gates=d.gates,
                utterances=comp.candidate.utterances,
                delta_wer=e.delta_wer,
                low=d.low,
                high=d.high,
                adjusted_high=d.adjusted_high,
                p_inferior=d.p_inferior,
                p_holm=d.p_holm,
                newly_broken=churn["newly_broken"],
                newly_fixed=churn["newly_fixed"],
                broken_examples=churn["broken"],
            )
        )
    return results, verdict


def _measure(
    suite: RegressionSuite,
    candidate: SpeechModel,
    production: SpeechModel | None,
    batch_size: int,
    policy: ValidationPolicy,
) -> tuple[Comparison, SuiteEvidence]:
    """Transcribe one suite and turn it into the evidence its gates judge."""
    examples = load_manifest_examples(str(suite.data))
    needs_production = suite.reference == "production"
    comp = compare_models(
        suite.name,
        examples,
        candidate,
        production if needs_production else None,
        batch_size,
        policy.normalizer,
    )
    if needs_production:
        reference = comp.production.wer if comp.production else math.nan
    else:
        reference = float(suite.reference)
    rel = suite.max_relative_degradation
    margin = reference * rel + suite.max_absolute_degradation if rel is not None else math.nan
    cand_errors = [r.candidate_errors for r in comp.rows]
    ref_errors = [r.production_errors for r in comp.rows] if comp.production else [0] * len(comp.rows)
    lengths = [r.ref_words for r in comp.rows]
    deltas, _, _, _ = bootstrap_deltas(cand_errors, ref_errors, lengths, resamples=policy.bootstrap_resamples)
    if deltas is not None and not needs_production:
        deltas = deltas - reference  # the bootstrap above resampled the candidate's WER alone
    must_pass = set(suite.must_pass)
    return comp, SuiteEvidence(
        name=suite.name,
        candidate_wer=comp.candidate.wer,
        reference_wer=reference,
        margin=margin,
        margin_configured=rel is not None,
        deltas=deltas,
        reference_missing=needs_production and production is None,
        must_pass_configured=bool(suite.must_pass),
        must_pass_failures=tuple(r.id for r in comp.rows if r.id in must_pass and r.candidate_errors > 0),
        must_pass_missing=tuple(sorted(must_pass - {r.id for r in comp.rows})),
    )
