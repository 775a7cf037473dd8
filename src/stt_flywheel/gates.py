"""Promotion policy: the gates a candidate must pass. Every gate fails closed.

A gate with no threshold configured rejects, and so does a measurement that is missing, NaN or
computed on no data. Policy lives here, not in components, so it is tested without a pipeline.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from stt_flywheel.config import ValidationPolicy

__all__ = ["Gate", "Verdict", "validation_verdict"]


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "passed": self.passed,
            "reasons": self.reasons,
            "gates": [asdict(g) for g in self.gates],
        }


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def check(name: str, value: float | None, threshold: float | None, ok: bool, describe: str) -> Gate:
    """A gate that rejects when the value or threshold is missing, else passes when `ok`."""
    if threshold is None:
        return Gate(name, False, value, None, f"{name}: no threshold configured")
    if _missing(value):
        return Gate(name, False, None, threshold, f"{name}: measurement missing or NaN")
    return Gate(name, ok, value, threshold, describe)


def validation_verdict(metrics: dict[str, float], policy: ValidationPolicy) -> Verdict:
    """Gates on the held-out split: WER improvement, significance, share of regressions, CER, empty outputs.

    The last two exist because WER alone can be gamed: where production inserts words (WER > 1), a
    model that answers with nothing, or one junk word, scores a *lower* WER; its CER gives it away.
    """
    verdict = Verdict("validation")
    n = metrics.get("heldout_utterances", 0)
    if not n:
        verdict.gates.append(
            Gate("heldout_size", False, 0, 1, "held-out split is empty: nothing to validate on")
        )
        return verdict

    def get(key: str) -> float:
        return float(metrics.get(key, math.nan))

    improvement = get("production_wer") - get("wer")
    cer_rise = get("cer") - get("production_cer")
    p, worse, empty = get("p_value"), get("worse_share"), get("empty_share")
    # (gate, measured value, threshold, passes(value, threshold), reason)
    rules: list[tuple[str, float, float | None, Callable[[float, float], bool], str]] = [
        (
            "min_wer_improvement",
            improvement,
            policy.min_wer_improvement,
            operator.ge,
            f"WER improved by {improvement:+.4f} absolute (need ≥ {policy.min_wer_improvement})",
        ),
        (
            "max_p_value",
            p,
            policy.max_p_value,
            operator.lt,
            f"paired Wilcoxon p = {p:.3g} (need < {policy.max_p_value})",
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
            "max_empty_share",
            empty,
            policy.max_empty_share,
            operator.le,
            f"{empty:.1%} of held-out utterances got an empty transcript (allowed ≤ {policy.max_empty_share})",
        ),
    ]
    for name, value, threshold, passes, reason in rules:
        ok = threshold is not None and not _missing(value) and passes(value, threshold)
        verdict.gates.append(check(name, value, threshold, ok, reason))
    return verdict
