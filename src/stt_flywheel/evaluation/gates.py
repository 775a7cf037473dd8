"""Promotion policy: the gates a candidate must pass. Every gate fails closed.

A gate with no threshold configured rejects, and so does a measurement that is missing, NaN or
computed on no data. Policy lives here, not in components, so it is tested without a pipeline.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from stt_flywheel.config import ValidationPolicy
from stt_flywheel.evaluation.metrics import HeldoutMetrics
from stt_flywheel.scoring.stats import holm

__all__ = [
    "Gate",
    "SuiteDecision",
    "StoredGate",
    "StoredVerdict",
    "SuiteEvidence",
    "Verdict",
    "curated_gates",
    "first_run_verdict",
    "regression_verdict",
    "slice_gates",
    "validation_verdict",
]


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    reason: str


@dataclass
class Verdict:
    stage: str
    gates: list[Gate] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates)

    @property
    def reasons(self) -> list[str]:
        if not self.gates:
            return ["no gates were evaluated"]
        return [g.reason for g in self.gates if not g.passed] or [g.reason for g in self.gates]

    policy: str = "paired"  # "paired" (against production) or "first_run_absolute"

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "policy": self.policy,
            "passed": self.passed,
            "reasons": self.reasons,
            "gates": [asdict(g) for g in self.gates],
        }


class StoredGate(BaseModel):
    """A gate as the verdict JSON keeps it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    passed: bool
    value: float | None
    threshold: float | None
    reason: str


class StoredVerdict(BaseModel):
    """A verdict as stages store it and the deployer re-checks it (the entry's other parts, such
    as its metrics, are read by their own contracts)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    stage: str
    policy: str = "paired"
    passed: bool
    reasons: list[str]
    gates: list[StoredGate]

    @classmethod
    def read(cls, stage: str, stored: Any) -> StoredVerdict:
        """The stored verdict; a missing or malformed one reads as a rejection of `stage`."""
        try:
            verdict = cls.model_validate(stored)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(map(str, problem["loc"])) or "verdict"
            return cls(
                stage=stage, passed=False, reasons=[f"no valid verdict ({where}: {problem['msg']})"], gates=[]
            )
        if verdict.passed and not (verdict.gates and all(g.passed for g in verdict.gates)):
            return verdict.model_copy(update={"passed": False, "reasons": ["passed without passing gates"]})
        return verdict

    def failed_gates(self) -> list[str]:
        return [g.name for g in self.gates if not g.passed]


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def check(name: str, value: float | None, threshold: float | None, ok: bool, describe: str) -> Gate:
    """A gate that rejects when the value or threshold is missing, else passes when `ok`."""
    if threshold is None:
        return Gate(name, False, value, None, f"{name}: no threshold configured")
    if _missing(value):
        return Gate(name, False, None, threshold, f"{name}: measurement missing or NaN")
    return Gate(name, ok, value, threshold, describe)


def validation_verdict(m: HeldoutMetrics, policy: ValidationPolicy) -> Verdict:
    """Gates on the held-out split against production.

    Superiority is decided on the interval: the upper bound of the bootstrap ΔWER interval must lie
    below −`min_wer_improvement`. Beside it: the paired test, the share of utterances that got
    worse, CER (WER alone can be gamed: where production inserts words, a model that answers with
    one junk word scores a *lower* WER; its CER gives it away), and the failure signatures of
    generative models (empty outputs, repetition loops, insertion bursts) against production's.
    """
    verdict = Verdict("validation")
    if not m.heldout_utterances:
        verdict.gates.append(
            Gate("heldout_size", False, 0, 1, "held-out split is empty: nothing to validate on")
        )
        return verdict
    high, low = m.delta_wer_high, m.delta_wer_low
    margin = -policy.min_wer_improvement if policy.min_wer_improvement is not None else None
    cer_rise = m.cer - m.production_cer
    p, worse, empty = m.p_value, m.worse_share, m.empty_share
    conf = f"{policy.confidence:.0%}"
    # (gate, measured value, threshold, passes(value, threshold), reason)
    rules: list[tuple[str, float, float | None, Callable[[float, float], bool], str]] = [
        (
            "min_wer_improvement",
            high,
            margin,
            operator.lt,
            f"ΔWER {m.delta_wer:+.4f}, {conf} interval [{low:+.4f}, {high:+.4f}] "
            f"(upper bound must be < {margin if margin is not None else 'unset'})",
        ),
        (
            "max_p_value",
            p,
            policy.max_p_value,
            operator.lt,
            f"paired {policy.significance_test} p = {p:.3g} (need < {policy.max_p_value})",
        ),
        (
            "max_worse_share",
            worse,
            policy.max_worse_share,
            operator.le,
            f"{worse:.1%} of held-out utterances got worse (allowed ≤ {policy.max_worse_share})",
        ),
        (
            "max_cer_increase",
            cer_rise,
            policy.max_cer_increase,
            operator.le,
            f"CER changed by {cer_rise:+.4f} (allowed ≤ +{policy.max_cer_increase})",
        ),
        (
            "max_formatting_error_increase",
            m.formatting_error_rate - m.production_formatting_error_rate,
            policy.max_formatting_error_increase,
            operator.le,
            f"formatting errors (raw WER − normalised WER) {m.formatting_error_rate:.4f} vs production "
            f"{m.production_formatting_error_rate:.4f} (allowed rise ≤ {policy.max_formatting_error_increase})",
        ),
        (
            "max_empty_share",
            empty,
            policy.max_empty_share,
            operator.le,
            f"{empty:.1%} of held-out utterances got an empty transcript (allowed ≤ {policy.max_empty_share})",
        ),
        (
            "max_loop_share_increase",
            m.loop_share - m.production_loop_share,
            policy.max_loop_share_increase,
            operator.le,
            f"repetition loops {m.loop_share:.1%} vs production {m.production_loop_share:.1%} "
            f"(allowed rise ≤ {policy.max_loop_share_increase})",
        ),
        (
            "max_burst_share_increase",
            m.burst_share - m.production_burst_share,
            policy.max_burst_share_increase,
            operator.le,
            f"insertion bursts {m.burst_share:.1%} vs production {m.production_burst_share:.1%} "
            f"(allowed rise ≤ {policy.max_burst_share_increase})",
        ),
    ]
    if policy.critical_terms:
        recall = _or_nan(m.critical_recall)
        production_recall = _or_nan(m.production_critical_recall)
        drop = production_recall - recall
        rules.append(
            (
                "max_critical_recall_drop",
                drop,
                policy.max_critical_recall_drop,
                operator.le,
                f"critical-term recall {recall:.1%} vs production "
                f"{production_recall:.1%} (allowed drop ≤ {policy.max_critical_recall_drop})",
            )
        )
    _apply(verdict, rules)
    return verdict


def _apply(
    verdict: Verdict, rules: list[tuple[str, float, float | None, Callable[[float, float], bool], str]]
) -> None:
    for name, value, threshold, passes, reason in rules:
        ok = threshold is not None and not _missing(value) and passes(value, threshold)
        verdict.gates.append(check(name, value, threshold, ok, reason))


def curated_gates(m: HeldoutMetrics, policy: ValidationPolicy) -> list[Gate]:
    """The curated eval set against production: no worse in WER, and, where the set holds
    critical terms, no drop in their recall. Poisoned corrections move the held-out split (drawn
    from them), not this set."""
    verdict = Verdict("validation")
    rise = _or_nan(m.eval_wer) - _or_nan(m.eval_production_wer)
    rules: list[tuple[str, float, float | None, Callable[[float, float], bool], str]] = [
        (
            "max_eval_wer_increase",
            rise,
            policy.max_eval_wer_increase,
            operator.le,
            f"curated eval set: WER {_or_nan(m.eval_wer):.4f} vs production {_or_nan(m.eval_production_wer):.4f} "
            f"(allowed rise ≤ {policy.max_eval_wer_increase})",
        )
    ]
    if policy.critical_terms and m.eval_critical_recall is not None:
        recall, before = _or_nan(m.eval_critical_recall), _or_nan(m.eval_production_critical_recall)
        rules.append(
            (
                "max_eval_critical_recall_drop",
                before - recall,
                policy.max_critical_recall_drop,
                operator.le,
                f"curated eval set: critical-term recall {recall:.1%} vs production {before:.1%} "
                f"(allowed drop ≤ {policy.max_critical_recall_drop})",
            )
        )
    _apply(verdict, rules)
    return verdict.gates


def first_run_verdict(m: HeldoutMetrics, policy: ValidationPolicy) -> Verdict:
    """No production model yet: absolute thresholds only, and the verdict records that policy."""
    verdict = Verdict("validation", policy="first_run_absolute")
    if not m.heldout_utterances:
        verdict.gates.append(
            Gate("heldout_size", False, 0, 1, "held-out split is empty: nothing to validate on")
        )
        return verdict
    wer, cer = m.wer, m.cer
    _apply(
        verdict,
        [
            (
                "first_run_max_wer",
                wer,
                policy.first_run_max_wer,
                operator.le,
                f"first run (no production model): WER {wer:.4f} (need ≤ {policy.first_run_max_wer})",
            ),
            (
                "first_run_max_cer",
                cer,
                policy.first_run_max_cer,
                operator.le,
                f"first run (no production model): CER {cer:.4f} (need ≤ {policy.first_run_max_cer})",
            ),
            (
                "max_empty_share",
                m.empty_share,
                policy.max_empty_share,
                operator.le,
                f"{m.empty_share:.1%} empty transcripts (allowed ≤ {policy.max_empty_share})",
            ),
        ],
    )
    return verdict


def slice_gates(slices: list[dict[str, Any]], policy: ValidationPolicy) -> list[Gate]:
    """One gate per slice big enough to judge: it fails when its ΔWER exceeds the bound and its
    interval lies wholly above zero (a degradation the data supports, not noise in a small slice)."""
    bound = policy.max_slice_degradation
    gates = []
    for sl in slices:
        if not sl.get("gated"):
            continue
        name = f"slice.{sl['field']}={sl['value']}"
        delta, low, high = sl.get("delta_wer", math.nan), sl.get("low", math.nan), sl.get("high", math.nan)
        ok = bound is not None and not _missing(delta) and not (delta > bound and low > 0)
        gates.append(
            check(
                name,
                None if _missing(delta) else delta,
                bound,
                ok,
                f"{sl['field']}={sl['value']} ({sl['utterances']} utts): ΔWER {delta:+.4f} "
                f"[{low:+.4f}, {high:+.4f}] "
                + (
                    f"(within: a slice fails only when ΔWER exceeds +{bound} and its interval lies above 0)"
                    if ok
                    else f"(degraded: ΔWER above +{bound} with the interval above 0)"
                ),
            )
        )
    return gates


@dataclass(frozen=True)
class SuiteEvidence:
    """What the regression gates judge for one suite, as `evaluation.regression` measured it.

    ΔWER is candidate minus reference; `deltas` are its bootstrap draws (None without data). The
    margin is the suite's allowance (reference × relative + absolute), NaN when it cannot be computed.
    """

    name: str
    candidate_wer: float
    reference_wer: float
    margin: float
    margin_configured: bool
    deltas: np.ndarray | None
    reference_missing: bool = False  # the suite compares with production and there is none
    must_pass_configured: bool = False
    must_pass_failures: tuple[str, ...] = ()
    must_pass_missing: tuple[str, ...] = ()

    @property
    def delta_wer(self) -> float:
        return self.candidate_wer - self.reference_wer

    @property
    def p_inferior(self) -> float:
        """One-sided bootstrap p-value of "ΔWER > margin" (NaN without draws or margin)."""
        if self.deltas is None or math.isnan(self.margin):
            return math.nan
        return float((1 + np.sum(self.deltas > self.margin)) / (len(self.deltas) + 1))


@dataclass(frozen=True)
class SuiteDecision:
    """One suite's interval, Holm-adjusted numbers and gates."""

    name: str
    low: float
    high: float
    adjusted_high: float
    p_inferior: float
    p_holm: float
    level: float
    gates: list[Gate]


def regression_verdict(
    evidence: Sequence[SuiteEvidence], confidence: float
) -> tuple[list[SuiteDecision], Verdict]:
    """Non-inferiority per suite at Holm-adjusted levels; fails closed when no suite is configured.

    Each suite's one-sided p-value is Holm-adjusted over the suites; a suite passes when its adjusted
    p-value is within α = (1 − confidence) / 2 and the upper bound of its ΔWER interval at its Holm
    level stays within the margin. A suite that needs production without one, and a must-pass
    utterance that is wrong or missing, reject as well.
    """
    verdict = Verdict("regression")
    if not evidence:
        verdict.gates.append(Gate("suites", False, None, None, "no regression suites configured"))
        return [], verdict
    alpha = (1 - confidence) / 2
    p_values = [e.p_inferior for e in evidence]
    adjusted = holm(p_values)
    order = sorted(range(len(evidence)), key=lambda k: (math.isnan(p_values[k]), p_values[k]))
    level = {k: alpha / (len(evidence) - rank) for rank, k in enumerate(order)}
    decisions = []
    for k, e in enumerate(evidence):
        if e.deltas is not None:
            low, high = np.quantile(e.deltas, [alpha, 1 - alpha]).tolist()
            adjusted_high = float(np.quantile(e.deltas, 1 - level[k]))
        else:
            low = high = adjusted_high = math.nan
        ok = adjusted[k] <= alpha and adjusted_high <= e.margin
        gates = [
            check(
                f"{e.name}.non_inferiority",
                adjusted_high,
                e.margin if e.margin_configured else None,
                ok,
                f"{e.name}: WER {e.candidate_wer:.4f} vs reference {e.reference_wer:.4f}; ΔWER {e.delta_wer:+.4f}, "
                f"upper bound {adjusted_high:+.4f} at Holm level {level[k]:.3g} (margin +{e.margin:.4f}, "
                f"Holm p = {adjusted[k]:.3g})",
            )
        ]
        if e.reference_missing:
            gates.append(
                Gate(
                    f"{e.name}.reference", False, None, None, f"{e.name}: no production model to compare with"
                )
            )
        if e.must_pass_configured:
            wrong = list(e.must_pass_failures) + list(e.must_pass_missing)
            gates.append(
                Gate(
                    f"{e.name}.must_pass",
                    not wrong,
                    float(len(wrong)),
                    0.0,
                    f"{e.name}: {len(e.must_pass_failures)} must-pass utterances wrong, "
                    f"{len(e.must_pass_missing)} missing from the suite"
                    + (f" ({', '.join(wrong[:5])})" if wrong else ""),
                )
            )
        decisions.append(
            SuiteDecision(e.name, low, high, adjusted_high, p_values[k], adjusted[k], level[k], gates)
        )
        verdict.gates.extend(gates)
    return decisions, verdict
