"""Stage 5: non-inferiority of the candidate on every regression suite, Holm-adjusted across suites."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from stt_flywheel.config import RegressionSuite, ValidationPolicy
from stt_flywheel.evaluation.comparison import compare_models, load_manifest_examples
from stt_flywheel.evaluation.gates import Gate, Verdict, check
from stt_flywheel.models import SpeechModel
from stt_flywheel.scoring.stats import bootstrap_deltas, holm

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
    """Non-inferiority per suite, decided on the ΔWER interval at Holm-adjusted levels.

    ΔWER is candidate minus reference: minus production's WER on the same utterances (paired
    bootstrap) when the suite's reference is `production`, else minus the configured number
    (bootstrap of the candidate alone). The margin is the suite's allowance: reference × relative +
    absolute. Each suite's one-sided bootstrap p-value for "ΔWER > margin" is Holm-adjusted over the suites;
    a suite passes when the upper bound of its interval at the adjusted level stays within the
    margin. The overall verdict fails closed when no suite is configured.
    """
    policy = policy or ValidationPolicy()
    alpha = (1 - policy.confidence) / 2
    verdict = Verdict("regression")
    if not suites:
        verdict.gates.append(Gate("suites", False, None, None, "no regression suites configured"))
        return [], verdict
    measured = []
    for suite in suites:
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
        cand_errors = [r["candidate_errors"] for r in comp.rows]
        ref_errors = [r["production_errors"] for r in comp.rows] if comp.production else [0] * len(comp.rows)
        lengths = [r["ref_words"] for r in comp.rows]
        deltas, _, _, _ = bootstrap_deltas(
            cand_errors, ref_errors, lengths, resamples=policy.bootstrap_resamples
        )
        observed = comp.candidate.wer - reference
        if deltas is not None and not needs_production:
            deltas = deltas - reference  # the bootstrap above resampled the candidate's WER alone
        p_inferior = (
            float((1 + np.sum(deltas > margin)) / (len(deltas) + 1))
            if deltas is not None and not math.isnan(margin)
            else math.nan
        )
        measured.append((suite, comp, reference, margin, deltas, observed, p_inferior))

    adjusted = holm([m[6] for m in measured])
    order = sorted(range(len(measured)), key=lambda k: (math.isnan(measured[k][6]), measured[k][6]))
    level = {k: alpha / (len(measured) - rank) for rank, k in enumerate(order)}
    results: list[SuiteResult] = []
    for k, (suite, comp, reference, margin, deltas, observed, p_inferior) in enumerate(measured):
        if deltas is not None:
            low, high = np.quantile(deltas, [alpha, 1 - alpha]).tolist()
            adjusted_high = float(np.quantile(deltas, 1 - level[k]))
        else:
            low = high = adjusted_high = math.nan
        allowed = reference + margin
        ok = adjusted[k] <= alpha and adjusted_high <= margin
        gates = [
            check(
                f"{suite.name}.non_inferiority",
                adjusted_high,
                margin if suite.max_relative_degradation is not None else None,
                ok,
                f"{suite.name}: WER {comp.candidate.wer:.4f} vs reference {reference:.4f}; ΔWER {observed:+.4f}, "
                f"upper bound {adjusted_high:+.4f} at Holm level {level[k]:.3g} (margin +{margin:.4f}, "
                f"Holm p = {adjusted[k]:.3g})",
            )
        ]
        if suite.reference == "production" and production is None:
            gates.append(
                Gate(
                    f"{suite.name}.reference",
                    False,
                    None,
                    None,
                    f"{suite.name}: no production model to compare with",
                )
            )
        must_pass = set(suite.must_pass)
        failures = [r["id"] for r in comp.rows if r["id"] in must_pass and r["candidate_errors"] > 0]
        missing = sorted(must_pass - {r["id"] for r in comp.rows})
        if suite.must_pass:
            gates.append(
                Gate(
                    f"{suite.name}.must_pass",
                    not failures and not missing,
                    float(len(failures) + len(missing)),
                    0.0,
                    f"{suite.name}: {len(failures)} must-pass utterances wrong, {len(missing)} missing from the suite"
                    + (f" ({', '.join((failures + missing)[:5])})" if failures or missing else ""),
                )
            )
        churn = comp.churn(0)
        results.append(
            SuiteResult(
                name=suite.name,
                kind=suite.kind,
                candidate_wer=comp.candidate.wer,
                candidate_cer=comp.candidate.cer,
                reference_wer=reference,
                allowed_wer=allowed,
                must_pass_failures=failures,
                gates=gates,
                utterances=comp.candidate.utterances,
                delta_wer=observed,
                low=low,
                high=high,
                adjusted_high=adjusted_high,
                p_inferior=p_inferior,
                p_holm=adjusted[k],
                newly_broken=churn["newly_broken"],
                newly_fixed=churn["newly_fixed"],
            )
        )
        verdict.gates.extend(gates)
    return results, verdict
