"""Versioned text normalisers."""

import pytest

from stt_flywheel.scoring.text import get_normalizer, normalize

NORMALIZE_CASES = [
    ("Hello, World!", "hello world"),
    ("  It's   FINE.  ", "it's fine"),
    ("café au lait", "cafe au lait"),
    ("living-room", "living room"),
    ("'quoted'", "quoted"),
    ("...", ""),
    ("Take 2 tablets", "take 2 tablets"),
]


VERSIONED_CASES = [
    ("whisper-en/1", "Hello, World!", "hello world"),
    ("whisper-en/1", "uh I think it's twenty-one dollars", "i think it is $21"),
    ("whisper-en/1", "The colour grey", "the color gray"),
    ("whisper-en/1", "Mr. Jones", "mister jones"),
    ("whisper-en/1", "one hundred and five", "105"),
    ("whisper-en/1", "hmm okay", "okay"),
    ("whisper-en/1", "", ""),
    ("basic-en/1", "Mr. Jones's  CAFÉ!", "mr jones's cafe"),
    ("none/1", "  Keep   Case, and punctuation. ", "Keep Case, and punctuation."),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALIZE_CASES)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(("spec", "raw", "expected"), VERSIONED_CASES)
def test_versioned_normalizers(spec: str, raw: str, expected: str) -> None:
    norm = get_normalizer(spec)
    assert norm.id == spec
    assert norm(raw) == expected


@pytest.mark.parametrize(
    ("spec", "message"), [("klingon", "unknown normaliser"), ("whisper-en/7", "provides whisper-en/1")]
)
def test_unknown_normalizer_rejected(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_normalizer(spec)


def test_the_arrow_normaliser_agrees_with_normalize() -> None:
    import random

    import pyarrow as pa

    from stt_flywheel.scoring.text import normalize, normalize_arrow

    rng = random.Random(0)
    alphabet = "ab'- \t\nXY9.,!?'éÅ"
    samples = [
        "",
        "'",
        "''",
        " ' ",
        "a'b",
        "'a'",
        "don't",
        "rock 'n' roll",
        "A--B",
        "x's'",
        "Café 'olé'",
        None,
    ]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(5000)]
    got = normalize_arrow(pa.array(samples, pa.string())).to_pylist()
    assert got == [normalize(s or "") for s in samples]


def _messy_texts(n: int, seed: int) -> list[str]:
    """Text that reaches every step of the Whisper normaliser: number words and digits, currencies,
    ordinals, "and a half", contractions and titles, fillers, brackets, accents, British spellings,
    stray punctuation and whitespace, including the words that only act next to a number."""
    import random

    rng = random.Random(seed)
    spaced = [
        "the a of and to in is was for on that with he she it they we you i my your",
        "one two three five ten eleven twelve twenty thirty ninety hundred thousand million",
        "first second third twentieth hundredth millionth ones twos fifties sixties",
        "zero oh o double triple point half quarter and a half minus plus negative positive",
        "dollars dollar cents cent pounds euros percent per cent",
        "won't can't let's ain't y'all wanna gonna i'ma cause ma'am it's he'd they'll we've i'm",
        "mr mrs st dr prof capt gov gen sen rep lt col jr sr esq mr. dr. st.",
        "hmm mm mhm mmm uh um uhm umm hmmm",
        "colour grey centre theatre organise analyse travelled favourite",
        "café naïve Ångström façade œuvre straße ø æ þ ł",
    ]
    words = (
        " ".join(spaced).split()
        + ["1", "2", "10", "100", "1,000", "3.5", "$5", "£20", "€3", "¢50", "5%", "1st", "2nd", "3rd"]
        + ["4th", "1960s", "7pm", "v2", "a1", "x-ray", "co-op", "rock'n'roll", "'quoted'", "O'Brien"]
        + ["[noise]", "<unk>", "(laughs)", "(", ")", "[", "]", "<", ">", "...", "?", "!", ";", "—", "–"]
        + ["\u00a0", "\t", "  ", "“", "”", "‘", "’", "#", "@", "&", "*", "/", "\\", "=", "٣", "²", "½"]
        + ["and a half", "and  a\thalf", "one and a half", "million and a half"]
    )
    out = []
    for _ in range(n):
        picked = [rng.choice(words) for _ in range(rng.randint(0, 14))]
        text = "".join(w + rng.choice(["", " ", " ", " ", ", ", ". ", "  ", "-"]) for w in picked)
        out.append(text.upper() if rng.random() < 0.1 else text.capitalize() if rng.random() < 0.3 else text)
    return out


def test_fast_whisper_normaliser_is_the_package_string_for_string() -> None:
    """`whisper-en/1` skips steps where they cannot act; on 20,000 messy strings (and the table)
    its output is the package's, byte for byte."""
    from stt_flywheel.scoring.whisper_en import fast_whisper_english, reference_whisper_english

    fast, reference = fast_whisper_english(), reference_whisper_english()
    texts = [raw for spec, raw, _ in VERSIONED_CASES if spec == "whisper-en/1"] + _messy_texts(20_000, 3)
    mismatches = [(t, fast(t), reference(t)) for t in texts if fast(t) != reference(t)]
    assert not mismatches, mismatches[:5]
    # the corpus reaches the slow paths too: numbers, replacers, non-ASCII text
    assert sum(any(c.isdigit() for c in reference(t)) for t in texts) > 2000
    assert sum(not t.isascii() for t in texts) > 2000


def _plain_texts(n: int, seed: int) -> list[str]:
    """Mostly what `fast_whisper_english_many` does in Arrow (letters and the plain punctuation),
    with the words and marks that must send a text the long way mixed in: number words, fillers,
    titles, "half" (and "behalf"), "..", an apostrophe or a digit now and then."""
    import random

    rng = random.Random(seed)
    plain = [
        "the",
        "a",
        "of",
        "to",
        "in",
        "is",
        "was",
        "colour",
        "grey",
        "organise",
        "centre",
        "travelled",
        "behaviour",
        "theatre",
        "we",
        "you",
    ]
    acting = [
        "one",
        "two",
        "twenty",
        "hundred",
        "first",
        "oh",
        "o",
        "uh",
        "um",
        "hmm",
        "mr",
        "mrs",
        "st",
        "dr",
        "half",
        "behalf",
        "point",
        "per",
        "and",
    ]
    marks = ["", " ", " ", " ", ", ", ". ", "? ", "! ", "; ", ": ", '"', " -", "-", "  "]
    out = []
    for _ in range(n):
        words = [rng.choice(acting if rng.random() < 0.04 else plain) for _ in range(rng.randint(0, 12))]
        text = "".join(
            w + (rng.choice(["..", "... "]) if rng.random() < 0.01 else rng.choice(marks)) for w in words
        )
        if rng.random() < 0.03:
            text += rng.choice(["'s", " 7", "(x)", "é"])
        out.append(text.upper() if rng.random() < 0.1 else text.capitalize() if rng.random() < 0.5 else text)
    return out


def test_the_list_normaliser_is_the_package_and_does_plain_text_in_arrow(monkeypatch) -> None:
    """`whisper-en/1` over a list gives the package's output string for string, and sends only
    the texts it cannot do in Arrow through the one-by-one normaliser."""
    from stt_flywheel.scoring import whisper_en

    texts = _plain_texts(20_000, 5) + _messy_texts(5000, 6) + [""]
    reference = whisper_en.reference_whisper_english()
    one = whisper_en.fast_whisper_english()
    long_way: list[str] = []
    monkeypatch.setattr(whisper_en, "fast_whisper_english", lambda: lambda t: long_way.append(t) or one(t))
    got = whisper_en.fast_whisper_english_many()(texts)
    mismatches = [(t, g, reference(t)) for t, g in zip(texts, got, strict=True) if g != reference(t)]
    assert not mismatches, mismatches[:5]
    assert 5000 < len(long_way) < 15_000  # about half the plain texts, and the messy ones
    assert get_normalizer("whisper-en/1").many(texts) == got
    assert get_normalizer("basic-en/1").many(texts) == [normalize(t) for t in texts]


def test_large_corpora_are_normalised_in_worker_interpreters_with_the_same_output(monkeypatch) -> None:
    """Past `PARALLEL_TEXTS` distinct strings per extra core the work goes to `normalise_worker`
    interpreters; the output is what one process gives, in order, repeats included."""
    from stt_flywheel.scoring import text

    texts = _messy_texts(3000, 9)
    texts += texts[:500]  # repeats are normalised once and looked up
    norm = get_normalizer("whisper-en/1")
    alone = norm.many(texts)
    calls: list[int] = []
    real = text._in_processes

    def counted(spec: str, unique: list[str], workers: int) -> list[str]:
        calls.append(workers)
        return real(spec, unique, workers)

    monkeypatch.setattr(text, "PARALLEL_TEXTS", 1000)
    monkeypatch.setattr(text, "_in_processes", counted)
    monkeypatch.setattr(text.os, "cpu_count", lambda: 2)
    assert norm.many(texts) == alone
    assert calls == [2]


def test_a_failing_worker_interpreter_is_replaced_by_normalising_here(monkeypatch) -> None:
    import sys

    from stt_flywheel.scoring import text

    texts = _messy_texts(400, 4)
    monkeypatch.setattr(sys, "executable", "/bin/false")  # every worker exits 1 without output
    assert text._in_processes("whisper-en/1", texts, 3) == get_normalizer("whisper-en/1").many(texts)
