"""Text normalisers: named, versioned, applied before any scoring or de-duplication.

A WER is only comparable with another WER computed after the same normalisation, so every metric
carries the id (`name/version`) of the normaliser it was computed with. A change in a normaliser's
output is a new version: `tests/test_text_and_scoring.py` pins each one's behaviour on a table.

- `basic-en/1`: lower-case, accents and punctuation stripped (apostrophes kept). Also what the
  training targets use, because the character vocabulary of the CTC models is `[a-z' ]`.
- `whisper-en/1` (scoring default): the English normaliser of the Whisper paper, from the
  `whisper-normalizer` package: spelled numbers to digits, contractions expanded, British spellings
  to American, fillers ("uh", "um") removed.
- `none/1`: whitespace only; the "raw" WER reported beside the normalised one.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from stt_flywheel.errors import InputError

__all__ = [
    "DEFAULT_SCORING_NORMALIZER",
    "NORMALIZER_ID",
    "Normalizer",
    "get_normalizer",
    "normalize",
    "normalize_arrow",
]

NORMALIZER_ID = "basic-en/1"
DEFAULT_SCORING_NORMALIZER = "whisper-en/1"

_KEEP = re.compile(r"[^a-z0-9' ]+")
_EDGE_APOSTROPHES = re.compile(r"(?:^|(?<= ))'+|'+(?= |$)")


def normalize(text: str) -> str:
    """`basic-en/1`: lower-case, strip accents and punctuation (apostrophes stay), collapse whitespace."""
    if not text.isascii():  # NFKD and combining marks change nothing in ASCII
        text = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.lower()
    text = _KEEP.sub(" ", text.replace("-", " "))
    return " ".join(_EDGE_APOSTROPHES.sub("", text).split())


def normalize_arrow(texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """`normalize` over a pyarrow string array, in Arrow compute for ASCII strings (the same
    output, checked against `normalize` in the tests) and in Python for the others."""
    import pyarrow.compute as pc

    texts = pc.fill_null(texts, "")
    out = pc.utf8_lower(texts)
    out = pc.replace_substring(out, "-", " ")
    out = pc.replace_substring_regex(out, "[^a-z0-9' ]+", " ")
    # apostrophes at either end of a token go (RE2 has no look-around: pad, then strip at spaces)
    out = pc.binary_join_element_wise(" ", out, " ", "")
    out = pc.replace_substring_regex(out, " '+", " ")
    out = pc.replace_substring_regex(out, "'+ ", " ")
    out = pc.replace_substring_regex(out, " +", " ")
    out = pc.utf8_trim(out, " ")
    ascii_ = pc.string_is_ascii(texts)
    if pc.all(ascii_).as_py():
        return out
    others = [normalize(t) for t in texts.to_pylist()]
    return pc.if_else(ascii_, out, pa.array(others, pa.string()))


def _whitespace(text: str) -> str:
    return " ".join(text.split())


@functools.cache
def _whisper_english() -> Callable[[str], str]:
    from whisper_normalizer.english import EnglishTextNormalizer

    inner = EnglishTextNormalizer()
    return lambda text: " ".join(inner(text).split())


@dataclass(frozen=True)
class Normalizer:
    name: str
    version: int
    _factory: Callable[[], Callable[[str], str]]

    @property
    def id(self) -> str:
        return f"{self.name}/{self.version}"

    def __call__(self, text: str) -> str:
        return self._factory()(text)

    def many(self, texts: list[str]) -> list[str]:
        fn = self._factory()
        cache: dict[str, str] = {}
        return [cache[t] if t in cache else cache.setdefault(t, fn(t)) for t in texts]


_REGISTRY = {
    n.name: n
    for n in (
        Normalizer("basic-en", 1, lambda: normalize),
        Normalizer("whisper-en", 1, _whisper_english),
        Normalizer("none", 1, lambda: _whitespace),
    )
}


def get_normalizer(spec: str) -> Normalizer:
    """`name` or `name/version`; an unknown name or a version this code does not provide is an error."""
    name, _, version = spec.partition("/")
    normalizer = _REGISTRY.get(name)
    if normalizer is None:
        raise InputError(f"unknown normaliser {spec!r}; known: {', '.join(sorted(_REGISTRY))}")
    if version and version != str(normalizer.version):
        raise InputError(f"normaliser {spec!r} is not available; this version provides {normalizer.id}")
    return normalizer
