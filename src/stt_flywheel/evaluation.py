"""Stages 4 and 5: score the candidate against production on the same utterances.

`compare_models` transcribes a set with both models and keeps per-utterance results; the validator
(`validate_candidate`) and the regression tester (`run_regression_suites`) build on it and hand the
numbers to the gates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from stt_flywheel.audio import load_audio
from stt_flywheel.config import RegressionSuite, ValidationPolicy
from stt_flywheel.gates import Gate, Verdict, check, validation_verdict
from stt_flywheel.manifest import read_manifest
from stt_flywheel.models import SpeechModel
from stt_flywheel.scoring import CorpusScore, score_corpus
from stt_flywheel.stats import paired_wilcoxon

__all__ = [
    "Comparison",
    "SuiteResult",
    "compare_models",
    "load_manifest_examples",
    "run_regression_suites",
    "validate_candidate",
]


@dataclass
class Comparison:
    """Candidate and production scored on the same utterances, with per-utterance rows."""

    name: str
    candidate: CorpusScore
    production: CorpusScore | None
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def delta_wer(self) -> float:
        return self.candidate.wer - self.production.wer if self.production else math.nan

    def domain_rows(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for r in self.rows:
            if r.get("domain"):
                out.setdefault(r["domain"], []).append(r)
        return out

    def paired_metrics(self) -> dict[str, float]:
        if self.production is None:
            return {"p_value": math.nan, "worse_share": math.nan, "better_share": math.nan}
        test = paired_wilcoxon(
            [r["candidate_errors"] for r in self.rows], [r["production_errors"] for r in self.rows]
        )
        n = len(self.rows) or 1
        return {"p_value": test.p_value, "worse_share": test.worse / n, "better_share": test.better / n}

    @property
    def empty_share(self) -> float:
        """Share of utterances with a non-empty reference that the candidate answered with nothing."""
        if not self.rows:
            return math.nan
        return sum(1 for r in self.rows if r["ref"] and not r["candidate_hyp"]) / len(self.rows)


def load_manifest_examples(path: str) -> list[dict[str, Any]]:
    return [
        {
            "id": u.id,
            "text": u.text,
            "audio": load_audio(u.audio).samples,
            "speaker": u.speaker or "",
            "domain": u.domain or "",
        }
        for u in read_manifest(path)
    ]


def compare_models(
    name: str,
    examples: Sequence[dict[str, Any]],
    candidate: SpeechModel,
    production: SpeechModel | None,
    batch_size: int = 16,
) -> Comparison:
    audios = [np.asarray(e["audio"], dtype=np.float32) for e in examples]
    refs = [e["text"] for e in examples]
    cand_hyps = candidate.transcribe(audios, batch_size=batch_size)
    cand_score, cand_utts = score_corpus(refs, cand_hyps)
    prod_score = None
    prod_utts = None
    if production is not None:
        prod_hyps = production.transcribe(audios, batch_size=batch_size)
        prod_score, prod_utts = score_corpus(refs, prod_hyps)
    rows = []
    for i, ex in enumerate(examples):
        row = {
            "id": ex["id"],
            "domain": ex.get("domain", ""),
            "ref": cand_utts[i].ref,
            "ref_words": cand_utts[i].ref_words,
            "candidate_hyp": cand_utts[i].hyp,
            "candidate_errors": cand_utts[i].word_errors,
        }
        if prod_utts is not None:
            row |= {"production_hyp": prod_utts[i].hyp, "production_errors": prod_utts[i].word_errors}
        rows.append(row)
    return Comparison(name, cand_score, prod_score, rows)


@dataclass
class ValidationResult:
    metrics: dict[str, float]
    verdict: Verdict
    comparisons: list[Comparison]


def validate_candidate(
    candidate: SpeechModel,
    production: SpeechModel | None,
    heldout: Sequence[dict[str, Any]],
    policy: ValidationPolicy,
    eval_examples: Sequence[dict[str, Any]] = (),
) -> ValidationResult:
    """Held-out new-domain split (gated) and the standard eval set (reported)."""
    held = compare_models("heldout", heldout, candidate, production, policy.batch_size)
    metrics: dict[str, float] = {
        "heldout_utterances": float(len(heldout)),
        "wer": held.candidate.wer,
        "cer": held.candidate.cer,
        "substitutions": float(held.candidate.substitutions),
        "deletions": float(held.candidate.deletions),
        "insertions": float(held.candidate.insertions),
        "production_wer": held.production.wer if held.production else math.nan,
        "production_cer": held.production.cer if held.production else math.nan,
        "delta_wer": held.delta_wer,
        "empty_share": held.empty_share,
        **held.paired_metrics(),
    }
    for domain, rows in sorted(held.domain_rows().items()):
        cand = sum(r["candidate_errors"] for r in rows)
        words = sum(r["ref_words"] for r in rows)
        metrics[f"slice_{domain}_utterances"] = float(len(rows))
        metrics[f"slice_{domain}_wer"] = cand / words if words else math.nan
        if held.production is not None:
            metrics[f"slice_{domain}_production_wer"] = (
                sum(r["production_errors"] for r in rows) / words if words else math.nan
            )
    comparisons = [held]
    if eval_examples:
        ev = compare_models("eval", eval_examples, candidate, production, policy.batch_size)
        comparisons.append(ev)
        metrics |= {
            "eval_wer": ev.candidate.wer,
            "eval_cer": ev.candidate.cer,
            "eval_production_wer": ev.production.wer if ev.production else math.nan,
            "eval_production_cer": ev.production.cer if ev.production else math.nan,
        }
    return ValidationResult(metrics, validation_verdict(metrics, policy), comparisons)


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
) -> tuple[list[SuiteResult], Verdict]:
    """One result per configured suite; the overall verdict fails closed when no suite is configured."""
    results: list[SuiteResult] = []
    verdict = Verdict("regression")
    if not suites:
        verdict.gates.append(Gate("suites", False, None, None, "no regression suites configured"))
        return results, verdict
    for suite in suites:
        examples = load_manifest_examples(str(suite.data))
        needs_production = suite.reference == "production"
        comp = compare_models(
            suite.name, examples, candidate, production if needs_production else None, batch_size
        )
        if needs_production:
            reference = comp.production.wer if comp.production else math.nan
        else:
            reference = float(suite.reference)
        rel = suite.max_relative_degradation
        allowed = reference * (1 + rel) + suite.max_absolute_degradation if rel is not None else math.nan
        gates = [
            check(
                f"{suite.name}.wer",
                comp.candidate.wer,
                allowed if rel is not None else None,
                rel is not None and comp.candidate.wer <= allowed,
                f"{suite.name}: WER {comp.candidate.wer:.4f} vs reference {reference:.4f} (allowed ≤ {allowed:.4f})",
            )
        ]
        if needs_production and production is None:
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
        result = SuiteResult(
            name=suite.name,
            kind=suite.kind,
            candidate_wer=comp.candidate.wer,
            candidate_cer=comp.candidate.cer,
            reference_wer=reference,
            allowed_wer=allowed,
            must_pass_failures=failures,
            gates=gates,
            utterances=comp.candidate.utterances,
        )
        results.append(result)
        verdict.gates.extend(gates)
    return results, verdict
