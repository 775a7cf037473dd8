"""WER / CER with their error breakdown, corpus-level and per utterance (jiwer alignments).

Texts are normalised with `stt_flywheel.text.normalize` first; the normaliser id travels with the
result. An empty reference after normalisation is kept as a zero-length utterance (its insertions
still count) rather than silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer

from stt_flywheel.text import NORMALIZER_ID, normalize

__all__ = ["CorpusScore", "UtteranceScore", "score_corpus"]


@dataclass(frozen=True)
class UtteranceScore:
    ref: str
    hyp: str
    word_errors: int
    ref_words: int
    char_errors: int
    ref_chars: int

    @property
    def wer(self) -> float:
        return self.word_errors / self.ref_words if self.ref_words else float(self.word_errors > 0)


@dataclass(frozen=True)
class CorpusScore:
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    ref_words: int
    ref_chars: int
    utterances: int
    normalizer: str = NORMALIZER_ID

    def __post_init__(self) -> None:
        if self.substitutions + self.deletions + self.hits != self.ref_words:
            raise ValueError("S + D + H must equal the number of reference words")

    def as_dict(self, prefix: str = "") -> dict[str, float | int | str]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def _counts(refs: list[str], hyps: list[str], chars: bool) -> list[tuple[int, int, int, int]]:
    """(S, D, I, H) per pair. jiwer rejects empty references, so those are counted directly."""
    out: list[tuple[int, int, int, int]] = []
    for ref, hyp in zip(refs, hyps, strict=True):
        ref_units = list(ref) if chars else ref.split()
        hyp_units = list(hyp) if chars else hyp.split()
        if not ref_units:
            out.append((0, 0, len(hyp_units), 0))
            continue
        proc = jiwer.process_characters(ref, hyp) if chars else jiwer.process_words(ref, hyp or "")
        out.append((proc.substitutions, proc.deletions, proc.insertions, proc.hits))
    return out


def score_corpus(refs: Sequence[str], hyps: Sequence[str]) -> tuple[CorpusScore, list[UtteranceScore]]:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    nrefs = [normalize(r) for r in refs]
    nhyps = [normalize(h) for h in hyps]
    words = _counts(nrefs, nhyps, chars=False)
    chars = _counts(nrefs, nhyps, chars=True)
    utts = [
        UtteranceScore(
            ref=r,
            hyp=h,
            word_errors=w[0] + w[1] + w[2],
            ref_words=w[0] + w[1] + w[3],
            char_errors=c[0] + c[1] + c[2],
            ref_chars=c[0] + c[1] + c[3],
        )
        for r, h, w, c in zip(nrefs, nhyps, words, chars, strict=True)
    ]
    s, d, i, h = (sum(w[k] for w in words) for k in range(4))
    ref_words = s + d + h
    ref_chars = sum(u.ref_chars for u in utts)
    char_errors = sum(u.char_errors for u in utts)
    score = CorpusScore(
        wer=(s + d + i) / ref_words if ref_words else math.nan,
        cer=char_errors / ref_chars if ref_chars else math.nan,
        substitutions=s,
        deletions=d,
        insertions=i,
        hits=h,
        ref_words=ref_words,
        ref_chars=ref_chars,
        utterances=len(utts),
    )
    return score, utts
