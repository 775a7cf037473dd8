"""Minimum-cost alignment of reference and hypothesis token sequences, the way NIST sclite does it.

sclite weighs a substitution 4 and an insertion or a deletion 3 (a hit 0). Among alignments of equal
cost it keeps, cell by cell, the diagonal step (hit or substitution) first, then the insertion, then
the deletion. Both rules change the S/D/I split, and sometimes the total, against a unit-cost
Levenshtein alignment; `tests/test_sclite_agreement.py` checks the counts against `sctk sclite`.

Tokens are integers: `encode_tokens` interns words (or takes code points for characters), and the
kernels (`kernels.py`) run over a whole corpus in compiled code (numba), one pass per pair with a
rolling row, so a corpus of 100k utterances costs a fraction of a second. A few thousand short pairs
are counted in the interpreter instead, by the same rules, where loading numba would cost more. `align_pairs` also returns the operations for
each pair, for reports, churn and the segment-based significance test.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "HIT",
    "INS",
    "DEL",
    "SUB",
    "SCLITE_WEIGHTS",
    "LEVENSHTEIN_WEIGHTS",
    "Alignment",
    "Encoded",
    "Weights",
    "align_pairs",
    "count_char_errors",
    "count_word_errors",
    "encode_words",
]

HIT, SUB, DEL, INS = 0, 1, 2, 3
_OP_NAMES = ("C", "S", "D", "I")


class Weights(NamedTuple):
    substitution: int
    insertion: int
    deletion: int


SCLITE_WEIGHTS = Weights(4, 3, 3)
LEVENSHTEIN_WEIGHTS = Weights(1, 1, 1)


@dataclass(frozen=True)
class Encoded:
    """Token ids of many sequences, concatenated, with `offsets[k]:offsets[k+1]` the k-th one."""

    ids: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1


def encode_words(ref_texts: Sequence[str], hyp_texts: Sequence[str]) -> tuple[Encoded, Encoded]:
    """Split on whitespace and intern the words of both sides into one shared vocabulary."""
    vocab: dict[str, int] = {}
    intern = vocab.setdefault

    def encode(texts: Sequence[str]) -> Encoded:
        split = [t.split() for t in texts]
        lengths = np.fromiter(map(len, split), dtype=np.int64, count=len(split))
        offsets = np.zeros(len(split) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter(
            (intern(w, len(vocab)) for words in split for w in words), dtype=np.int64, count=int(offsets[-1])
        )
        return Encoded(ids, offsets)

    return encode(ref_texts), encode(hyp_texts)


_SEP = "\x00"


def _pack(texts: Sequence[str], encoding: str, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """All texts encoded and joined by NUL (as code units of `dtype`), and where each text starts."""
    if any(_SEP in t for t in texts):
        texts = [t.replace(_SEP, " ") for t in texts]
    buf: np.ndarray = np.frombuffer((_SEP.join(texts) + _SEP).encode(encoding), dtype=dtype)
    starts = np.empty(len(texts) + 1, dtype=np.int64)
    starts[0] = 0
    starts[1:] = np.flatnonzero(buf == 0) + 1
    return buf, starts


def count_word_errors(
    refs: Sequence[str], hyps: Sequence[str], weights: Weights = SCLITE_WEIGHTS
) -> np.ndarray:
    """An (n, 4) array of hits, substitutions, deletions, insertions per pair of texts.

    Words are runs of non-whitespace (ASCII whitespace separates them; the normalisers emit single
    spaces). Compiled, tokenising, interning and aligning all happen in one pass over the UTF-8 bytes.
    """
    return _counts(refs, hyps, weights, words=True)


def count_char_errors(
    refs: Sequence[str], hyps: Sequence[str], weights: Weights = SCLITE_WEIGHTS
) -> np.ndarray:
    """Like `count_word_errors` over characters, whitespace left out (sclite's `-c` mode)."""
    return _counts(refs, hyps, weights, words=False)


# Aligned in the interpreter while the pairs' tables (after their common ends) add up to at most
# this many cells, about 0.35 s at 170 ns a cell: less than loading the compiled kernels costs.
INTERPRETED_CELLS = 2_000_000
_ASCII_SPACE = " \t\n\r\x0b\x0c" + _SEP  # what the kernels separate on (`_pack` turns NUL to a space)
_TO_SPACE = str.maketrans(dict.fromkeys(_ASCII_SPACE, " "))
_NO_SPACE = str.maketrans(dict.fromkeys(_ASCII_SPACE))


def _counts(refs: Sequence[str], hyps: Sequence[str], weights: Weights, *, words: bool) -> np.ndarray:
    """The pairs' counts: in the interpreter up to `INTERPRETED_CELLS`, unless the kernels are
    loaded already; the rest (all of them, past the budget) by the compiled kernels."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    out = np.zeros((len(refs), 4), dtype=np.int64)
    done, budget = 0, 0 if _kernels_loaded() else INTERPRETED_CELLS
    while done < len(refs):
        ends, a, b = _common_ends(_tokens(refs[done], words), _tokens(hyps[done], words))
        budget -= len(a) * len(b)
        if budget < 0:
            break
        out[done] = _interpreted_counts(a, b, *weights)
        out[done, 0] += ends
        done += 1
    if done < len(refs):
        kernels = _compiled()
        kernel, encoding, dtype = (
            (kernels._word_kernel, "utf-8", np.uint8)
            if words
            else (kernels._char_kernel, "utf-32-le", np.uint32)
        )
        out[done:] = _in_threads(
            kernel, _pack(refs[done:], encoding, dtype), _pack(hyps[done:], encoding, dtype), weights
        )
    return out


def _tokens(text: str, words: bool) -> list[str] | str:
    if words:
        return [w for w in text.translate(_TO_SPACE).split(" ") if w]
    return text.translate(_NO_SPACE)


def _common_ends(a: Sequence[object], b: Sequence[object]) -> tuple[int, Sequence[object], Sequence[object]]:
    """How many tokens the two share at their start and end, and what is left between."""
    n, m = len(a), len(b)
    p = 0
    while p < n and p < m and a[p] == b[p]:
        p += 1
    s = 0
    while s < n - p and s < m - p and a[n - 1 - s] == b[m - 1 - s]:
        s += 1
    return p + s, a[p : n - s], b[p : m - s]


def _interpreted_counts(
    a: Sequence[object], b: Sequence[object], w_sub: int, w_ins: int, w_del: int
) -> tuple[int, int, int, int]:
    """(H, S, D, I) of one pair: the compiled `_dp_counts`'s path (at each cell the diagonal step
    first, then the insertion, then the deletion), with a cell a tuple of its cost and counts.
    With `_common_ends` before it, the compiled `_dp_counts_trimmed`; `test_alignment.py` checks
    the two agree."""
    if not a or not b:
        return 0, 0, len(a), len(b)
    prev = [(j * w_ins, 0, 0, 0, j) for j in range(len(b) + 1)]
    for i, r in enumerate(a, 1):
        left = (i * w_del, 0, 0, i, 0)
        cur = [left]
        for j, t in enumerate(b, 1):
            dg, up = prev[j - 1], prev[j]
            diag = dg[0] if r == t else dg[0] + w_sub
            ins, dele = left[0] + w_ins, up[0] + w_del
            if diag <= ins and diag <= dele:
                hit = r == t
                left = (diag, dg[1] + hit, dg[2] + (not hit), dg[3], dg[4])
            elif ins <= dele:
                left = (ins, left[1], left[2], left[3], left[4] + 1)
            else:
                left = (dele, up[1], up[2], up[3] + 1, up[4])
            cur.append(left)
        prev = cur
    _, h, sub, d, ins = prev[-1]
    return h, sub, d, ins


_KERNELS = "stt_flywheel.scoring.kernels"


def _kernels_loaded() -> bool:
    return _KERNELS in sys.modules


def _compiled() -> Any:
    """The compiled kernels' module, imported (numba loaded) on first use."""
    return importlib.import_module(_KERNELS)


# Below this many pairs one thread does the work: starting threads costs more than it saves.
THREADED_PAIRS = 20_000


def _in_threads(
    kernel: Any, ref: tuple[np.ndarray, np.ndarray], hyp: tuple[np.ndarray, np.ndarray], weights: Weights
) -> np.ndarray:
    """Run a counting kernel over contiguous shares of the pairs, one per core, at once.

    The kernels release the GIL (`nogil`) and index the packed buffers by absolute offsets, so a
    share is a slice of the two offset arrays over the same buffers; the rows come back in order.
    """
    n_pairs = len(ref[1]) - 1
    workers = min(os.cpu_count() or 1, max(1, n_pairs // THREADED_PAIRS))
    if workers == 1:
        return kernel(*ref, *hyp, *weights)
    bounds = np.linspace(0, n_pairs, workers + 1).astype(np.int64)

    def share(k: int) -> np.ndarray:
        rs, hs = ref[1][bounds[k] : bounds[k + 1] + 1], hyp[1][bounds[k] : bounds[k + 1] + 1]
        return kernel(ref[0], rs, hyp[0], hs, *weights)

    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(share, range(workers))))


@dataclass(frozen=True)
class Alignment:
    """One pair's alignment: a list of (op, reference token, hypothesis token); absent tokens are None."""

    steps: list[tuple[str, str | None, str | None]]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(_OP_NAMES, 0)
        for op, _, _ in self.steps:
            out[op] += 1
        return out

    def render(self) -> tuple[str, str, str]:
        """sclite-style REF / HYP / Eval lines: errors upper-cased, gaps as asterisks."""
        refs, hyps, evals = [], [], []
        for op, r, h in self.steps:
            r_s = r or "*" * len(h or "")
            h_s = h or "*" * len(r or "")
            if op != "C":
                r_s, h_s = r_s.upper(), h_s.upper()
            width = max(len(r_s), len(h_s), 1)
            refs.append(r_s.ljust(width))
            hyps.append(h_s.ljust(width))
            evals.append(("" if op == "C" else op).ljust(width))
        return " ".join(refs), " ".join(hyps), " ".join(evals)


def align_pairs(
    refs: Sequence[str], hyps: Sequence[str], weights: Weights = SCLITE_WEIGHTS
) -> list[Alignment]:
    """Word alignments of many pairs (texts already normalised)."""
    ref_enc, hyp_enc = encode_words(refs, hyps)
    if len(ref_enc) != len(hyp_enc):
        raise ValueError(f"{len(ref_enc)} references but {len(hyp_enc)} hypotheses")
    ops, ref_pos, hyp_pos, off = _compiled()._ops_kernel(
        ref_enc.ids, ref_enc.offsets, hyp_enc.ids, hyp_enc.offsets, *weights
    )
    out = []
    for k, (ref, hyp) in enumerate(zip(refs, hyps, strict=True)):
        rw, hw = ref.split(), hyp.split()
        steps = []
        for t in range(off[k], off[k + 1]):
            rp, hp = ref_pos[t], hyp_pos[t]
            steps.append((_OP_NAMES[ops[t]], rw[rp] if rp >= 0 else None, hw[hp] if hp >= 0 else None))
        out.append(Alignment(steps))
    return out
