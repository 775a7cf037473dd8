"""Candidate and production scored on the same utterances.

`compare_models` transcribes a set with both models and keeps per-utterance rows (with speaker,
domain and duration); a `Comparison` then yields everything the gates and reports need: the paired
bootstrap interval on ΔWER, the three paired tests, slices, the churn ledger, failure signatures and
critical-term recall.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from stt_flywheel.config import ValidationPolicy
from stt_flywheel.data.audio import load_audio
from stt_flywheel.data.manifest import read_manifest
from stt_flywheel.models import SpeechModel
from stt_flywheel.scoring.alignment import Alignment, align_pairs
from stt_flywheel.scoring.corpus import CorpusScore, score_corpus
from stt_flywheel.scoring.stats import (
    Alternative,
    BootstrapInterval,
    PairedTest,
    mapsswe,
    paired_bootstrap,
    paired_t_test,
    paired_wilcoxon,
)
from stt_flywheel.scoring.text import DEFAULT_SCORING_NORMALIZER

__all__ = [
    "Comparison",
    "UtteranceRow",
    "compare_models",
    "comparison_from_texts",
    "duration_bucket",
    "load_manifest_examples",
]

_DURATION_EDGES = ((2.0, "<2s"), (5.0, "2-5s"), (10.0, "5-10s"))
_METADATA = ("domain", "speaker", "device", "duration")


def duration_bucket(seconds: float) -> str:
    return next((label for edge, label in _DURATION_EDGES if seconds < edge), "≥10s")


def _loop(words: list[str], repeats: int) -> bool:
    """An n-gram (n ≤ 4) said `repeats` times in a row."""
    for n in range(1, 5):
        for i in range(len(words) - n * repeats + 1):
            gram = words[i : i + n]
            if all(words[i + k * n : i + (k + 1) * n] == gram for k in range(1, repeats)):
                return True
    return False


def _longest_insertion_run(al: Alignment) -> int:
    best = run = 0
    for op, _, _ in al.steps:
        run = run + 1 if op == "I" else 0
        best = max(best, run)
    return best


@dataclass(frozen=True)
class UtteranceRow:
    """One utterance scored for the candidate and, when there is one, production (normalised texts)."""

    id: str
    ref: str
    ref_words: int
    candidate_hyp: str
    candidate_errors: int
    production_hyp: str | None = None
    production_errors: int = 0  # meaningful only with a production hypothesis
    domain: str | None = None
    speaker: str | None = None
    device: str | None = None
    duration: str | None = None

    def hyp(self, model: str) -> str:
        """The hypothesis of `candidate` or `production`."""
        return self.candidate_hyp if model == "candidate" else self.production_hyp or ""

    def metadata_value(self, name: str) -> str | None:
        """A metadata field by name (a slicing key from the config); None when the row has no such field."""
        value = getattr(self, name, None) if name in _METADATA else None
        return value if isinstance(value, str) else None

    def as_dict(self) -> dict[str, Any]:
        """The row as stored in `utterances.jsonl`: absent fields left out."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if self.production_hyp is None:
            out.pop("production_errors")
        return out


@dataclass
class Comparison:
    """Candidate and production scored on the same utterances, with per-utterance rows."""

    name: str
    candidate: CorpusScore
    production: CorpusScore | None
    rows: list[UtteranceRow] = field(default_factory=list)

    @property
    def delta_wer(self) -> float:
        return self.candidate.wer - self.production.wer if self.production else math.nan

    def _column(self, key: str) -> np.ndarray:
        return np.array([getattr(r, key) for r in self.rows], dtype=np.int64)

    @functools.cached_property
    def alignments(self) -> dict[str, list[Alignment]]:
        refs = [r.ref for r in self.rows]
        out = {"candidate": align_pairs(refs, [r.candidate_hyp for r in self.rows])}
        if self.production is not None:
            out["production"] = align_pairs(refs, [r.hyp("production") for r in self.rows])
        return out

    def interval(self, policy: ValidationPolicy, subset: Sequence[int] | None = None) -> BootstrapInterval:
        """ΔWER interval; speaker-blocked when every row has a speaker and there are several."""
        rows = self.rows if subset is None else [self.rows[i] for i in subset]
        if self.production is None:
            return paired_bootstrap([], [], [])
        speakers = [r.speaker or "" for r in rows]
        blocked = all(speakers) and len(set(speakers)) > 1
        return paired_bootstrap(
            [r.candidate_errors for r in rows],
            [r.production_errors for r in rows],
            [r.ref_words for r in rows],
            speakers=speakers if blocked else None,
            resamples=policy.bootstrap_resamples,
            confidence=policy.confidence,
        )

    def tests(self, alternative: Alternative = "less") -> dict[str, PairedTest]:
        """The three paired tests; one-sided (the candidate is better) for the gates by default."""
        if self.production is None:
            return {}
        cand, prod = self._column("candidate_errors"), self._column("production_errors")
        return {
            "wilcoxon": paired_wilcoxon(cand, prod, alternative),
            "t_test": paired_t_test(cand, prod, alternative),
            "mapsswe": mapsswe(self.alignments["candidate"], self.alignments["production"], alternative),
        }

    def signatures(self, policy: ValidationPolicy) -> dict[str, dict[str, float]]:
        """Share of outputs that are empty, loop, or contain an insertion burst, per model."""
        out: dict[str, dict[str, float]] = {}
        n = len(self.rows)
        for model, aligned in self.alignments.items():
            hyps = [r.hyp(model) for r in self.rows]
            empty = sum(1 for r, h in zip(self.rows, hyps, strict=True) if r.ref and not h)
            loops = sum(
                1
                for r, h in zip(self.rows, hyps, strict=True)
                if _loop(h.split(), policy.loop_repeats) and not _loop(r.ref.split(), policy.loop_repeats)
            )
            bursts = sum(1 for al in aligned if _longest_insertion_run(al) >= policy.burst_length)
            out[model] = {
                "empty_share": empty / n if n else math.nan,
                "loop_share": loops / n if n else math.nan,
                "burst_share": bursts / n if n else math.nan,
                "empty": empty,
                "loops": loops,
                "bursts": bursts,
            }
        return out

    def critical_recall(self, terms: Sequence[str]) -> dict[str, Any]:
        """Per model, the share of reference occurrences of each term that the alignment got right."""
        wanted = {t.lower() for t in terms}
        result: dict[str, Any] = {"terms": sorted(wanted)}
        for model, aligned in self.alignments.items():
            found = total = 0
            per_term: dict[str, list[int]] = {}
            for al in aligned:
                for op, ref, _ in al.steps:
                    if ref is not None and ref in wanted:
                        total += 1
                        found += op == "C"
                        hit_total = per_term.setdefault(ref, [0, 0])
                        hit_total[0] += op == "C"
                        hit_total[1] += 1
            result[model] = {
                "recall": found / total if total else math.nan,
                "occurrences": total,
                "per_term": {t: h / n for t, (h, n) in sorted(per_term.items())},
            }
        return result

    def churn(self, limit: int) -> dict[str, Any]:
        """Utterances the candidate newly broke (production was exact) or newly fixed, with alignments."""
        if self.production is None:
            return {"newly_broken": 0, "newly_fixed": 0, "broken": [], "fixed": []}
        broken, fixed = [], []
        for k, r in enumerate(self.rows):
            if r.production_errors == 0 and r.candidate_errors > 0:
                broken.append(k)
            elif r.production_errors > 0 and r.candidate_errors == 0:
                fixed.append(k)

        def entry(k: int) -> dict[str, Any]:
            r = self.rows[k]
            return {
                "id": r.id,
                "ref": r.ref,
                "production_hyp": r.production_hyp,
                "candidate_hyp": r.candidate_hyp,
                "production_errors": r.production_errors,
                "candidate_errors": r.candidate_errors,
                "candidate_alignment": self.alignments["candidate"][k].render(),
                "production_alignment": self.alignments["production"][k].render(),
            }

        broken.sort(key=lambda k: -self.rows[k].candidate_errors)
        fixed.sort(key=lambda k: -self.rows[k].production_errors)
        return {
            "newly_broken": len(broken),
            "newly_fixed": len(fixed),
            "broken": [entry(k) for k in broken[:limit]],
            "fixed": [entry(k) for k in fixed[:limit]],
        }

    def worst_regressions(self, limit: int) -> list[dict[str, Any]]:
        """Utterances where the candidate added the most errors, with both alignments."""
        return self._largest_changes(limit, worse=True)

    def largest_improvements(self, limit: int) -> list[dict[str, Any]]:
        """Utterances where the candidate removed the most errors, with both alignments."""
        return self._largest_changes(limit, worse=False)

    def _largest_changes(self, limit: int, worse: bool) -> list[dict[str, Any]]:
        if self.production is None:
            return []
        sign = 1 if worse else -1
        changed = [
            (sign * (r.candidate_errors - r.production_errors), k)
            for k, r in enumerate(self.rows)
            if sign * (r.candidate_errors - r.production_errors) > 0
        ]
        return [
            {
                "id": self.rows[k].id,
                "delta_errors": self.rows[k].candidate_errors - self.rows[k].production_errors,
                "candidate_alignment": self.alignments["candidate"][k].render(),
                "production_alignment": self.alignments["production"][k].render(),
            }
            for _, k in sorted(changed, key=lambda x: -x[0])[:limit]
        ]

    def utterance_delta_wer(self) -> list[float]:
        """Per-utterance ΔWER (errors difference over reference length; empty references left out)."""
        if self.production is None:
            return []
        return [(r.candidate_errors - r.production_errors) / r.ref_words for r in self.rows if r.ref_words]

    def slices(self, policy: ValidationPolicy) -> list[dict[str, Any]]:
        """WER of both models and the ΔWER interval per value of each slicing field."""
        out: list[dict[str, Any]] = []
        for key in policy.slice_by:
            groups: dict[str, list[int]] = {}
            for k, r in enumerate(self.rows):
                value = r.metadata_value(key)
                if value not in (None, ""):
                    groups.setdefault(str(value), []).append(k)
            if len(groups) < 2 and key != "domain":
                continue  # one value is the whole set, not a slice
            for value, idx in sorted(groups.items()):
                words = sum(self.rows[k].ref_words for k in idx)
                cand = sum(self.rows[k].candidate_errors for k in idx)
                entry: dict[str, Any] = {
                    "field": key,
                    "value": value,
                    "utterances": len(idx),
                    "candidate_wer": cand / words if words else math.nan,
                    "gated": len(idx) >= policy.min_slice_size and self.production is not None,
                }
                if self.production is not None:
                    prod = sum(self.rows[k].production_errors for k in idx)
                    entry["production_wer"] = prod / words if words else math.nan
                    iv = self.interval(policy, idx)
                    entry |= {"delta_wer": iv.delta, "low": iv.low, "high": iv.high}
                out.append(entry)
        return out


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


def comparison_from_texts(
    name: str,
    examples: Sequence[dict[str, Any]],
    candidate_hyps: Sequence[str],
    production_hyps: Sequence[str] | None,
    normalizer: str = DEFAULT_SCORING_NORMALIZER,
) -> Comparison:
    """Score hypotheses against `examples` (dicts with `id`, `text` and optional metadata)."""
    refs = [e["text"] for e in examples]
    cand_score, cand_utts = score_corpus(refs, candidate_hyps, normalizer)
    prod_score, prod_utts = (None, None)
    if production_hyps is not None:
        prod_score, prod_utts = score_corpus(refs, production_hyps, normalizer)
    rows = []
    for i, ex in enumerate(examples):
        cu = cand_utts[i]
        metadata = {k: str(ex[k]) for k in _METADATA if ex.get(k) not in (None, "")}
        rows.append(
            UtteranceRow(
                id=ex["id"],
                ref=cu.ref,
                ref_words=cu.ref_words,
                candidate_hyp=cu.hyp,
                candidate_errors=cu.word_errors,
                production_hyp=prod_utts[i].hyp if prod_utts is not None else None,
                production_errors=prod_utts[i].word_errors if prod_utts is not None else 0,
                **metadata,
            )
        )
    return Comparison(name, cand_score, prod_score, rows)


def compare_models(
    name: str,
    examples: Sequence[dict[str, Any]],
    candidate: SpeechModel,
    production: SpeechModel | None,
    batch_size: int = 16,
    normalizer: str = DEFAULT_SCORING_NORMALIZER,
    sample_rate: int = 16_000,
) -> Comparison:
    """Transcribe `examples` with both models and compare them on the same utterances."""
    audios = [np.asarray(e["audio"], dtype=np.float32) for e in examples]
    examples = [
        {**e, "duration": duration_bucket(len(a) / sample_rate)}
        for e, a in zip(examples, audios, strict=True)
    ]
    cand_hyps = candidate.transcribe(audios, batch_size=batch_size)
    prod_hyps = production.transcribe(audios, batch_size=batch_size) if production is not None else None
    return comparison_from_texts(name, examples, cand_hyps, prod_hyps, normalizer)
