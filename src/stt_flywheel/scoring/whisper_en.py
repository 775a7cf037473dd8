"""`whisper-en/1` at scoring speed: the `whisper-normalizer` package's English normaliser, with
each of its steps skipped where it provably cannot change the text.

The package runs about sixty regular expressions, a character-by-character Unicode pass and a
word-by-word number parser on every string: about 120 µs each, most of the time `score` spends.
Almost every step needs a particular character or word to do anything (a bracket, an apostrophe,
a digit, a number word), so this module checks for that first (a substring test) and runs the package's own step only where the check finds it. Steps without such a
check are replaced only where the replacement is the same function:

- symbols and diacritics, for ASCII text: one `str.translate` with the table the package's rule
  gives for the 128 ASCII characters (NFKD and the diacritic table leave ASCII unchanged);
- the number parser, for text with no digit, no "half" and no number word other than "and": it
  then writes every word back unchanged, so its output is the words joined by single spaces;
  elsewhere it runs only on the stretches of words between plain words, which is the same thing
  (`_numbers_between_plain_words` says why).

`fast_whisper_english_many` is the same over a list, with the plain texts (letters and common
punctuation, no word the package acts on) in Arrow's compiled kernels.

The output is the package's, string for string: `tests/test_text.py` checks the normaliser table
and a generated corpus of messy text (numbers, currencies, contractions, brackets, accents) against
the package itself.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any

__all__ = ["fast_whisper_english", "fast_whisper_english_many", "reference_whisper_english"]

_KEEP = ".%$¢€£"  # what the package keeps for its number step


def reference_whisper_english() -> Callable[[str], str]:
    """The package's normaliser, whitespace collapsed as `whisper-en/1` defines it."""
    from whisper_normalizer.english import EnglishTextNormalizer

    inner = EnglishTextNormalizer()
    return lambda text: " ".join(inner(text).split())


def _ascii_symbol_table() -> dict[int, str]:
    """Unicode categories M*, S*, P* become a space, except the kept numeric symbols."""
    table = {}
    for code in range(128):
        ch = chr(code)
        if ch not in _KEEP and unicodedata.category(ch)[0] in "MSP":
            table[code] = " "
    return table


def _literal_of(pattern: str) -> str | None:
    """The text a pattern needs in order to match, when it is a literal between `\\b`s; else None."""
    literal = pattern.replace(r"\b", "")
    return literal if re.fullmatch(r"[a-z' ]+", literal) else None


def _replace(s: str, replacers: list, word_runs: re.Pattern[str]) -> str:
    """The package's sequence of contraction/title substitutions, each run only where its literal is."""
    runs: set[str] | None = None
    for literal, whole_word, pattern, replacement in replacers:
        if whole_word:
            if runs is None:
                runs = set(word_runs.findall(s))
            if literal not in runs:
                continue
        elif literal is not None and literal not in s:
            continue
        changed = pattern.sub(replacement, s)
        if changed != s:
            s, runs = changed, None
    return s


def _numbers_between_plain_words(
    words: list[str], numbers: Any, parser_words: frozenset[str], done: dict[tuple[str, ...], list[str]]
) -> list[str]:
    """The package's number parser (`process_words`) run only on the stretches between plain words.

    A plain word (not one of the parser's words, no digit) is written out unchanged after anything
    pending, leaves no state behind, and is in none of the sets the parser consults about a
    neighbour (`prev`, `next`); so the parser's output over the whole list is its output over each
    stretch between plain words, with the plain words in between. A word taken for non-plain that
    is plain only makes a stretch longer, which the parser handles as it would anyway.

    The parser keeps no state between calls, so a stretch's output depends on the stretch alone;
    `done` remembers the outputs of stretches already parsed ("one", "twenty five" recur in every
    corpus).
    """
    out: list[str] = []
    stretch: list[str] = []
    for word in (*words, ""):
        if word and (word in parser_words or not word.isalpha() and any(c.isdigit() for c in word)):
            stretch.append(word)
            continue
        if stretch:
            key = tuple(stretch)
            parsed = done.get(key)
            if parsed is None:
                if len(done) >= _PARSED_STRETCHES:
                    done.clear()
                parsed = done[key] = [w for w in numbers.process_words(stretch) if w is not None]
            out.extend(parsed)
            stretch = []
        if word:
            out.append(word)
    return out


_PARSED_STRETCHES = 100_000  # outputs remembered at most (then forgotten, all at once)


def fast_whisper_english() -> Callable[[str], str]:
    from whisper_normalizer.basic import remove_symbols_and_diacritics
    from whisper_normalizer.english import EnglishTextNormalizer

    inner = EnglishTextNormalizer()
    numbers, spellings = inner.standardize_numbers, inner.standardize_spellings
    # every word the number parser can act on when no number is pending; "and" alone only ever
    # writes itself back unless a multiplier (a number word) comes before it
    number_words = frozenset(numbers.words) - {"and"}
    parser_words = frozenset(numbers.words)
    # Each contraction/title pattern is a literal, most of them a whole word between `\b`s, which
    # matches exactly where the literal is one of the text's maximal `\w+` runs. So the sixty
    # patterns run only for text with an apostrophe or one of those words (one alternation of all
    # sixty costs ~100 µs a string; this check ~1 µs), and then each only where its literal is.
    replacers = []
    for source, replacement in inner.replacers.items():
        literal = _literal_of(source)
        whole_word = literal is not None and source == rf"\b{literal}\b" and "'" not in literal
        replacers.append((literal, whole_word, re.compile(source), replacement))
    replacer_words = frozenset(lit for lit, whole, _, _ in replacers if whole)
    unchecked = any(lit is None or (not whole and "'" not in lit) for lit, whole, _, _ in replacers)
    word_runs = re.compile(r"\w+")
    # ASCII text's maximal `\w+` runs, by translation: every ASCII character outside [0-9A-Za-z_]
    # becomes a space, then split
    non_word = {c: " " for c in range(128) if not re.fullmatch(r"\w", chr(c))}
    spelling = spellings.mapping
    ignore = re.compile(inner.ignore_patterns)
    brackets = re.compile(r"[<\[][^>\]]*[>\]]")
    parentheses = re.compile(r"\(([^)]+?)\)")
    space_apostrophe = re.compile(r"\s+'")
    digit_commas = re.compile(r"(\d),(\d)")
    periods = re.compile(r"\.([^0-9]|$)")
    digit = re.compile(r"\d")
    loose_prefix = re.compile(r"[.$¢€£]([^0-9])")
    loose_percent = re.compile(r"([^0-9])%")
    symbols = _ascii_symbol_table()
    parsed: dict[tuple[str, ...], list[str]] = {}

    def normalise(s: str) -> str:
        s = s.lower()
        if "<" in s or "[" in s:
            s = brackets.sub("", s)
        if "(" in s:
            s = parentheses.sub("", s)
        if "uh" in s or "um" in s or "mm" in s or "mhm" in s:
            s = ignore.sub("", s)
        if "'" in s:
            s = space_apostrophe.sub("'", s)
        runs = s.translate(non_word).split() if s.isascii() else word_runs.findall(s)
        if unchecked or "'" in s or not replacer_words.isdisjoint(runs):
            s = _replace(s, replacers, word_runs)
        if "," in s:
            s = digit_commas.sub(r"\1\2", s)
        if "." in s:
            # the usual case, one full stop at the very end, is the pattern's "." + end: a space
            s = s[:-1] + " " if s.count(".") == 1 and s[-1] == "." else periods.sub(r" \1", s)
        s = s.translate(symbols) if s.isascii() else remove_symbols_and_diacritics(s, keep=_KEEP)
        has_digit = digit.search(s) is not None
        if "half" in s or has_digit:
            s = numbers.preprocess(s)
        words = s.split()
        if has_digit or not number_words.isdisjoint(words):
            s = " ".join(_numbers_between_plain_words(words, numbers, parser_words, parsed))
            if digit.search(s):
                s = numbers.postprocess(s)
        else:
            s = " ".join(words)
        words = s.split()
        s = " ".join(map(spelling.get, words, words))  # the package's spelling step, as one map
        if "." in s or "$" in s or "¢" in s or "€" in s or "£" in s:
            s = loose_prefix.sub(r" \1", s)
        if "%" in s:
            s = loose_percent.sub(r"\1 ", s)
        return " ".join(s.split())

    return normalise


# Text of only these characters, with no word the package acts on (number word, filler, whole-word
# contraction or title), no "half" (the number step's preprocessing looks for it inside words) and
# no ".." (the full-stop pattern consumes the second one, which a line's end then keeps), comes out
# of `normalise` as its lower-cased words, punctuation turned to spaces, each word through the
# spelling table: every other step needs a character or word outside that. `fast_whisper_english_many`
# does that part in Arrow.
_PLAIN_TEXT = r'^[A-Za-z .,?!;:"-]*$'
_PLAIN_PUNCTUATION = r'[ .,?!;:"-]+'


def fast_whisper_english_many(one: Callable[[str], str] | None = None) -> Callable[[list[str]], list[str]]:
    """`fast_whisper_english` over a list: the plain texts (`_PLAIN_TEXT`, most of a transcript
    corpus) in Arrow's compiled kernels, a few microseconds each; the others one by one in Python,
    through `one` (a `fast_whisper_english()` the caller already has, else a new one)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from whisper_normalizer.english import EnglishTextNormalizer

    one = one or fast_whisper_english()
    inner = EnglishTextNormalizer()
    fillers = re.fullmatch(r"\\b\((.*)\)\\b", inner.ignore_patterns)
    replacers = [_literal_of(source) for source in inner.replacers]
    if fillers is None or any(
        lit is None or "'" not in lit and rf"\b{lit}\b" != src
        for lit, src in zip(replacers, inner.replacers, strict=True)
    ):
        # a pattern this module cannot read as a literal word: every text goes through `one`
        return lambda texts: [one(t) for t in texts]
    acting = (
        set(inner.standardize_numbers.words) - {"and"}
        | set(fillers[1].split("|"))
        | {word for lit in replacers if lit is not None and "'" not in lit for word in lit.split()}
    )
    acting_words = pa.array(sorted(acting), pa.large_string())
    space = pa.scalar(" ", pa.large_string())
    spelling = inner.standardize_spellings.mapping
    british = pa.array(list(spelling), pa.large_string())
    american = pa.array(list(spelling.values()), pa.large_string())

    def many(texts: list[str]) -> list[str]:
        if not texts:
            return []
        raw = pa.array(texts, pa.large_string())
        lower = pc.ascii_lower(raw)
        words = pc.split_pattern(
            pc.ascii_trim(pc.replace_substring_regex(lower, _PLAIN_PUNCTUATION, " "), " "), " "
        )
        flat = pc.list_flatten(words)
        parents = pc.list_parent_indices(words).to_numpy()
        acts = pc.is_in(flat, value_set=acting_words).to_numpy(zero_copy_only=False)
        plain = (
            pc.match_substring_regex(raw, _PLAIN_TEXT).to_numpy(zero_copy_only=False)
            & ~pc.match_substring(lower, "..").to_numpy(zero_copy_only=False)
            & ~pc.match_substring(lower, "half").to_numpy(zero_copy_only=False)
            & (np.bincount(parents[acts], minlength=len(texts)) == 0)
        )
        respelled = pc.coalesce(pc.take(american, pc.index_in(flat, value_set=british)), flat)
        joined = pc.binary_join(pa.ListArray.from_arrays(words.offsets, respelled), space)
        out = joined.to_pylist()
        for k in np.flatnonzero(~plain).tolist():
            out[k] = one(texts[k])
        return out

    return many
