"""Corpus scoring: sclite-weighted counts, WER/CER, transcript files."""

import math
import re

import pytest

from stt_flywheel.scoring.corpus import CorpusScore, TranscriptError, read_transcripts, score_corpus

SCORE_CASES = [
    (["a b c"], ["a b c"], 0, 0, 0, 3),
    (["a b c"], ["a x c"], 1, 0, 0, 2),
    (["a b c"], ["a c"], 0, 1, 0, 2),
    (["a b c"], ["a b c d"], 0, 0, 1, 3),
    (["a b", "c d e"], ["a", "c d e f"], 0, 1, 1, 4),
    (["Open the DOOR."], ["open the door"], 0, 0, 0, 3),
    (["a b"], [""], 0, 2, 0, 0),
]


TRN_CASES = [
    (
        "ok.trn",
        "hello there (spk1_001)\n(spk1_002)\n  spaced out   (u3)\n",
        {"spk1_001": "hello there", "spk1_002": "", "u3": "spaced out"},
    ),
    ("ok.jsonl", '{"id": "a", "text": "x y"}\n\n{"id": 7, "text": ""}\n', {"a": "x y", "7": ""}),
]


BAD_TRN = [
    ("bad.trn", "no id here\n", "expected 'text (utterance_id)'"),
    ("dup.trn", "a (u1)\nb (u1)\n", "2: utterance id 'u1' appears twice"),
    ("bad.jsonl", "{not json\n", "not valid JSON"),
    ("bad2.jsonl", '{"id": "a", "text": 3}\n', "'text' must be a string"),
    ("bad3.jsonl", '["a"]\n', "expected an object"),
]


def test_raw_and_normalised_wer_reported_with_the_normaliser_id() -> None:
    score, _ = score_corpus(["Twenty one, please."], ["21 please"])
    assert score.normalizer == "whisper-en/1"
    assert score.wer == 0.0
    assert score.raw_wer == pytest.approx(1.0)  # "Twenty one, please." vs "21 please": 2 subs + 1 del of 3
    basic, _ = score_corpus(["Twenty one, please."], ["21 please"], normalizer="basic-en")
    assert basic.normalizer == "basic-en/1"
    assert basic.wer == pytest.approx(2 / 3)


def test_sclite_weights_change_the_split() -> None:
    """sclite weighs a substitution 4 and an insertion/deletion 3: 'a b' vs 'b c' is D + I, not 2 S."""
    score, utts = score_corpus(["a b"], ["b c"], normalizer="none")
    assert (score.substitutions, score.deletions, score.insertions, score.hits) == (0, 1, 1, 1)
    assert utts[0].word_errors == 2


@pytest.mark.parametrize(("refs", "hyps", "s", "d", "i", "h"), SCORE_CASES)
def test_score_corpus_counts(refs: list[str], hyps: list[str], s: int, d: int, i: int, h: int) -> None:
    score, utts = score_corpus(refs, hyps)
    assert (score.substitutions, score.deletions, score.insertions, score.hits) == (s, d, i, h)
    assert score.wer == pytest.approx((s + d + i) / (s + d + h))
    assert sum(u.word_errors for u in utts) == s + d + i
    assert len(utts) == len(refs)


def test_empty_reference_counts_insertions() -> None:
    score, utts = score_corpus(["", "a"], ["x y", "a"])
    assert utts[0].word_errors == 2
    assert utts[0].ref_words == 0
    assert score.insertions == 2
    assert score.ref_words == 1
    assert score.wer == 2.0


def test_cer_and_empty_corpus() -> None:
    score, _ = score_corpus(["abcd"], ["abed"])
    assert score.cer == pytest.approx(0.25)
    spaced, _ = score_corpus(["ab cd"], ["abcd"])  # whitespace is not a character to get right
    assert spaced.cer == 0.0
    assert spaced.wer == pytest.approx(1.0)
    empty, _ = score_corpus([], [])
    assert math.isnan(empty.wer)
    assert math.isnan(empty.cer)


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


@pytest.mark.parametrize(("name", "content", "expected"), TRN_CASES)
def test_read_transcripts(tmp_path, name: str, content: str, expected: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_text(content)
    assert read_transcripts(path) == expected


@pytest.mark.parametrize(("name", "content", "message"), BAD_TRN)
def test_bad_transcript_files_name_the_line(tmp_path, name: str, content: str, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(
        TranscriptError, match=re.escape(f"{name}:") + r"\d+: " + re.escape(message.split(": ", 1)[-1])
    ):
        read_transcripts(path)


def test_a_transcript_file_not_in_utf8_names_its_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A Latin-1 file (é as one byte) is an error that names the line and says what to do, not a traceback."""
    path = tmp_path / "ref.trn"
    path.write_bytes(b"good line (u1)\n" + "caf\u00e9 (u2)\n".encode("latin-1"))
    with pytest.raises(TranscriptError, match=r"ref\.trn:2: not UTF-8 \(byte 0xe9\).*iconv"):
        read_transcripts(path)
