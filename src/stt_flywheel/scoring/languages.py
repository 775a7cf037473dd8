"""Languages as records name them, read as the codes a multilingual model (Whisper) knows.

A record's `language` metadata is untrusted text: `en-US`, `en_gb`, `English` and `en` all mean
`en`; a tag whose primary language the model does not know is not a language it can learn.
"""

from __future__ import annotations

import functools

__all__ = ["language_code"]


@functools.cache
def _tables() -> tuple[frozenset[str], dict[str, str]]:
    # Whisper's own table (~2 s to import): paid only when a language other than English is named
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    return frozenset(LANGUAGES), dict(TO_LANGUAGE_CODE)


def language_code(value: str) -> str | None:
    """The code of a language given as a code, a BCP 47 tag (its primary subtag counts) or an
    English name, case-insensitive; None for anything the model does not know."""
    key = value.strip().lower()
    if key in ("en", "english"):
        return "en"
    primary = key.replace("_", "-").split("-", 1)[0]
    codes, names = _tables()
    if key in codes:
        return key
    if key in names:
        return names[key]
    if primary in codes:
        return primary
    return None
