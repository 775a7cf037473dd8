import math

import pytest

from stt_flywheel.scoring import CorpusScore, score_corpus
from stt_flywheel.text import normalize

NORMALIZE_CASES = [
    ("Hello, World!", "hello world"),
    ("  It's   FINE.  ", "it's fine"),
    ("café au lait", "cafe au lait"),
    ("living-room", "living room"),
    ("'quoted'", "quoted"),
    ("...", ""),
    ("Take 2 tablets", "take 2 tablets"),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALIZE_CASES)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


# (refs, hyps, S, D, I, H)
SCORE_CASES = [
    (["a b c"], ["a b c"], 0, 0, 0, 3),
    (["a b c"], ["a x c"], 1, 0, 0, 2),
    (["a b c"], ["a c"], 0, 1, 0, 2),
    (["a b c"], ["a b c d"], 0, 0, 1, 3),
    (["a b", "c d e"], ["a", "c d e f"], 0, 1, 1, 4),
    (["Open the DOOR."], ["open the door"], 0, 0, 0, 3),
    (["a b"], [""], 0, 2, 0, 0),
]


@pytest.mark.parametrize(("refs", "hyps", "s", "d", "i", "h"), SCORE_CASES)
def test_score_corpus_counts(refs: list[str], hyps: list[str], s: int, d: int, i: int, h: int) -> None:
    score, utts = score_corpus(refs, hyps)
    assert (score.substitutions, score.deletions, score.insertions, score.hits) == (s, d, i, h)
    assert score.wer == pytest.approx((s + d + i) / (s + d + h))
    assert sum(u.word_errors for u in utts) == s + d + i
    assert len(utts) == len(refs)


def test_empty_reference_counts_insertions() -> None:
    score, utts = score_corpus(["", "a"], ["x y", "a"])
    assert utts[0].word_errors == 2 and utts[0].ref_words == 0
    assert score.insertions == 2 and score.ref_words == 1 and score.wer == 2.0


def test_cer_and_empty_corpus() -> None:
    score, _ = score_corpus(["abcd"], ["abed"])
    assert score.cer == pytest.approx(0.25)
    empty, _ = score_corpus([], [])
    assert math.isnan(empty.wer) and math.isnan(empty.cer)


def test_mismatched_lengths_rejected() -> None:
    with pytest.raises(ValueError, match="2 references but 1"):
        score_corpus(["a", "b"], ["a"])


def test_corpus_score_validates_itself() -> None:
    with pytest.raises(ValueError):
        CorpusScore(
            wer=0,
            cer=0,
            substitutions=1,
            deletions=0,
            insertions=0,
            hits=1,
            ref_words=3,
            ref_chars=3,
            utterances=1,
        )
