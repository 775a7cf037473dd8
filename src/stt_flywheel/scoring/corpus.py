"""WER / CER with hits, substitutions, deletions and insertions, corpus-level and per utterance.

Counts come from the sclite-weighted alignment in `stt_flywheel.scoring.alignment`, so they agree with NIST
sclite on the same files. Texts are normalised first by a named, versioned normaliser whose id
travels with the result; the raw (whitespace-only) WER is reported beside the normalised one. An
empty reference after normalisation is kept as a zero-length utterance (its insertions still count)
rather than silently dropped. CER is over characters with whitespace left out, as sclite's `-c`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from stt_flywheel.errors import InputError
from stt_flywheel.scoring.alignment import count_char_errors, count_word_errors
from stt_flywheel.scoring.text import DEFAULT_SCORING_NORMALIZER, get_normalizer

__all__ = [
    "CorpusScore",
    "TranscriptError",
    "UtteranceScore",
    "match_transcripts",
    "read_transcripts",
    "score_corpus",
]


@dataclass(frozen=True)
class UtteranceScore:
    ref: str
    hyp: str
    hits: int
    substitutions: int
    deletions: int
    insertions: int
    char_errors: int
    ref_chars: int

    @property
    def word_errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def ref_words(self) -> int:
        return self.hits + self.substitutions + self.deletions

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
    char_errors: int = 0
    raw_wer: float = math.nan
    normalizer: str = DEFAULT_SCORING_NORMALIZER

    def __post_init__(self) -> None:
        if self.substitutions + self.deletions + self.hits != self.ref_words:
            raise ValueError("S + D + H must equal the number of reference words")

    @property
    def word_errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def as_dict(self, prefix: str = "") -> dict[str, float | int | str]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def _rate(errors: int, length: int) -> float:
    return errors / length if length else math.nan


def score_corpus(
    refs: Sequence[str],
    hyps: Sequence[str],
    normalizer: str = DEFAULT_SCORING_NORMALIZER,
    per_utterance: bool = True,
) -> tuple[CorpusScore, list[UtteranceScore]]:
    """Corpus WER/CER (and raw WER) of normalised pairs; with `per_utterance`, each pair's scores
    too (an empty list without: `stt-flywheel score` needs only the totals)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    norm = get_normalizer(normalizer)
    both = norm.many([*refs, *hyps])  # one pass: one set of worker processes, repeats across sides once
    nrefs, nhyps = both[: len(refs)], both[len(refs) :]
    words = count_word_errors(nrefs, nhyps)
    chars = count_char_errors(nrefs, nhyps)
    raw = count_word_errors(list(refs), list(hyps))
    utts = (
        [
            UtteranceScore(
                ref=r,
                hyp=h,
                hits=int(w[0]),
                substitutions=int(w[1]),
                deletions=int(w[2]),
                insertions=int(w[3]),
                char_errors=int(c[1] + c[2] + c[3]),
                ref_chars=int(c[0] + c[1] + c[2]),
            )
            for r, h, w, c in zip(nrefs, nhyps, words.tolist(), chars.tolist(), strict=True)
        ]
        if per_utterance
        else []
    )
    h, s, d, i = (int(x) for x in words.sum(axis=0)) if len(nrefs) else (0, 0, 0, 0)
    ch, cs, cd, ci = (int(x) for x in chars.sum(axis=0)) if len(nrefs) else (0, 0, 0, 0)
    rh, rs, rd, ri = (int(x) for x in raw.sum(axis=0)) if len(nrefs) else (0, 0, 0, 0)
    score = CorpusScore(
        wer=_rate(s + d + i, s + d + h),
        cer=_rate(cs + cd + ci, cs + cd + ch),
        substitutions=s,
        deletions=d,
        insertions=i,
        hits=h,
        ref_words=s + d + h,
        ref_chars=cs + cd + ch,
        utterances=len(nrefs),
        char_errors=cs + cd + ci,
        raw_wer=_rate(rs + rd + ri, rs + rd + rh),
        normalizer=norm.id,
    )
    return score, utts


class TranscriptError(InputError):
    """A transcript file that cannot be read; the message names the file and line."""


_TRN_LINE = re.compile(r"^(?P<text>.*?)\s*\((?P<id>[^()]+)\)\s*$")


def _trn_line(line: str, path: Path, n: int) -> tuple[str, str]:
    """`text (utterance_id)` → (id, text): the id is the last parenthesised group, which must end
    the line. The common shape is split by string methods; anything else goes to `_TRN_LINE`,
    which says the same for it (and is the definition)."""
    stripped = line.rstrip()
    opening = stripped.rfind("(")
    key = stripped[opening + 1 : -1]
    if opening >= 0 and stripped.endswith(")") and key and ")" not in key:
        return key, line[:opening].strip()
    match = _TRN_LINE.match(line)
    if match is None:
        raise TranscriptError(f"{path}:{n}: expected 'text (utterance_id)'")
    return match["id"], match["text"].strip()


def read_transcripts(path: str | Path) -> dict[str, str]:
    """Utterance id → text from an sclite `trn` file (`text (utt_id)`) or JSONL with `id` and `text`."""
    path = Path(path)
    if not path.is_file():
        raise TranscriptError(f"{path}: no such file")
    out: dict[str, str] = {}
    jsonl = path.suffix in {".jsonl", ".json"}
    data = path.read_bytes()
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = data[: exc.start].count(b"\n") + 1
        raise TranscriptError(
            f"{path}:{at}: not UTF-8 (byte {data[exc.start]:#04x}); convert the file, e.g. `iconv -f latin1 -t utf-8`"
        ) from None
    for n, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        if jsonl:
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise TranscriptError(f"{path}:{n}: not valid JSON ({exc})") from exc
            if not isinstance(rec, dict) or not isinstance(rec.get("id"), str | int):
                raise TranscriptError(f"{path}:{n}: expected an object with 'id' and 'text'")
            key, text = str(rec["id"]), rec.get("text")
            if not isinstance(text, str):
                raise TranscriptError(f"{path}:{n}: 'text' must be a string")
        else:
            key, text = _trn_line(line, path, n)
        if key in out:
            raise TranscriptError(f"{path}:{n}: utterance id {key!r} appears twice")
        out[key] = text
    if not out:
        raise TranscriptError(f"{path}: no transcripts in it (an empty file scores nothing)")
    return out


def match_transcripts(refs: dict[str, str], hyps: dict[str, str], name: str = "hypothesis") -> list[str]:
    """The reference ids in file order, once every one has a hypothesis and no hypothesis is extra."""
    missing = [k for k in refs if k not in hyps]
    extra = [k for k in hyps if k not in refs]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} reference ids have no {name} (e.g. {', '.join(missing[:3])})")
        if extra:
            parts.append(f"{len(extra)} {name} ids are not in the reference (e.g. {', '.join(extra[:3])})")
        raise TranscriptError("; ".join(parts))
    return list(refs)
