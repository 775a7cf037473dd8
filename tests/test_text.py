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
