"""Text normalisation applied before any scoring or de-duplication.

The normaliser is versioned: its `NORMALIZER_ID` is recorded with every metric, because a WER is
only comparable with another WER computed after the same normalisation.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["NORMALIZER_ID", "normalize"]

NORMALIZER_ID = "basic-en/1"

_KEEP = re.compile(r"[^a-z0-9' ]+")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower-case, strip accents and punctuation (apostrophes stay), collapse whitespace."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = _KEEP.sub(" ", text.replace("-", " "))
    text = " ".join(tok.strip("'") for tok in text.split())
    return _SPACES.sub(" ", text).strip()
