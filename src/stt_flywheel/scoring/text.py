"""Text normalisers: named, versioned, applied before any scoring or de-duplication.

A WER is only comparable with another WER computed after the same normalisation, so every metric
carries the id (`name/version`) of the normaliser it was computed with. A change in a normaliser's
output is a new version: `tests/test_text_and_scoring.py` pins each one's behaviour on a table.

- `basic-en/1`: lower-case, accents and punctuation stripped (apostrophes kept). Also what the
  CTC models' training targets go through, because their character vocabulary is `[a-z' ]`;
  datasets keep transcripts as written, and Whisper trains on them so.
- `whisper-en/1` (scoring default): the English normaliser of the Whisper paper, from the
  `whisper-normalizer` package: spelled numbers to digits, contractions expanded, British spellings
  to American, fillers ("uh", "um") removed. Run through `scoring.whisper_en`, which skips the
  package's steps where they cannot act, and over a list does plain text in Arrow (the same
  output, about twenty times faster on a transcript corpus).
- `none/1`: whitespace only; the "raw" WER reported beside the normalised one.
"""

from __future__ import annotations

import functools
import os
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
    from stt_flywheel.scoring.whisper_en import fast_whisper_english

    return fast_whisper_english()


@functools.cache
def _whisper_english_many() -> Callable[[list[str]], list[str]]:
    from stt_flywheel.scoring.whisper_en import fast_whisper_english_many

    return fast_whisper_english_many(
        _whisper_english()
    )  # one per-text normaliser (and parser memory) per process


def _basic_many() -> Callable[[list[str]], list[str]]:
    return lambda texts: normalize_arrow(pa.array(texts, pa.string())).to_pylist()


@dataclass(frozen=True)
class Normalizer:
    name: str
    version: int
    _factory: Callable[[], Callable[[str], str]]
    # the same function over a list, where a compiled one is faster than a loop of `_factory()`
    _many_factory: Callable[[], Callable[[list[str]], list[str]]] | None = None

    @property
    def id(self) -> str:
        return f"{self.name}/{self.version}"

    def __call__(self, text: str) -> str:
        return self._factory()(text)

    def batch(self) -> Callable[[list[str]], list[str]]:
        """The normaliser over a list of texts (no look-ups, no extra processes: see `many`)."""
        if self._many_factory is not None:
            return self._many_factory()
        fn = self._factory()
        return lambda texts: [fn(t) for t in texts]

    def many(self, texts: list[str]) -> list[str]:
        """Each text normalised once (repeats looked up); a large corpus in one process per core."""
        unique = list(dict.fromkeys(texts))
        if len(unique) == len(texts):
            unique = texts  # nothing repeats: no table to look up
        workers = min(os.cpu_count() or 1, len(unique) // PARALLEL_TEXTS)
        normalised = _in_processes(self.id, unique, workers) if workers > 1 else self.batch()(unique)
        if unique is texts:
            return normalised
        table = dict(zip(unique, normalised, strict=True))
        return [table[t] for t in texts]


# Below this many distinct texts per extra process, one process normalises them all: starting a
# process (imports included) costs about as much as normalising 20,000 texts.
PARALLEL_TEXTS = 50_000


def _in_processes(spec: str, texts: list[str], workers: int) -> list[str]:
    """`texts` normalised in `workers` contiguous shares, in order: the first here, each other one
    at the same time by a new interpreter (`python -m stt_flywheel.scoring.normalise_worker`)
    reading and writing a temporary file, so this process does no work for it while it runs.
    Not `multiprocessing`: a spawned child re-imports the caller's main module (a script without
    a `__main__` guard would run again) and a forked one copies whatever threads or CUDA context
    the caller holds. A share whose worker fails is normalised here instead, so the result never
    depends on the workers."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import orjson

    import stt_flywheel

    bounds = [len(texts) * k // workers for k in range(workers + 1)]
    shares = [texts[bounds[k] : bounds[k + 1]] for k in range(workers)]
    package_root = str(Path(stt_flywheel.__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    batch = get_normalizer(spec).batch()
    with tempfile.TemporaryDirectory(prefix="stt-flywheel-normalise-") as tmp:
        running = []
        for k, share in enumerate(shares[1:], start=1):
            source, target = Path(tmp) / f"{k}.in.json", Path(tmp) / f"{k}.out.json"
            source.write_bytes(orjson.dumps(share))
            with source.open("rb") as stdin, target.open("wb") as stdout:
                try:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "stt_flywheel.scoring.normalise_worker", spec],
                        stdin=stdin,
                        stdout=stdout,
                        stderr=subprocess.DEVNULL,
                        env={**os.environ, "PYTHONPATH": path},
                    )
                except OSError:
                    process = None
            running.append((process, target, share))
        out = batch(shares[0])
        for process, target, share in running:
            normalised = None
            if process is not None and process.wait() == 0:
                try:
                    normalised = orjson.loads(target.read_bytes())
                except orjson.JSONDecodeError:
                    normalised = None
            if not isinstance(normalised, list) or len(normalised) != len(share):
                normalised = batch(share)
            out.extend(normalised)
    return out


_REGISTRY = {
    n.name: n
    for n in (
        Normalizer("basic-en", 1, lambda: normalize, _basic_many),
        Normalizer("whisper-en", 1, _whisper_english, _whisper_english_many),
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
