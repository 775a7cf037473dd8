"""Word and character error counts agree exactly with NIST sclite (`sctk sclite`) on the same files."""

import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stt_flywheel.scoring import alignment
from stt_flywheel.scoring.alignment import (
    LEVENSHTEIN_WEIGHTS,
    align_pairs,
    count_char_errors,
    count_word_errors,
)

pytestmark = pytest.mark.sctk

SCLITE = shutil.which("sctk")
_SCORES = re.compile(r"id: \((\S+)\)\nScores: \(#C #S #D #I\) (\d+) (\d+) (\d+) (\d+)")


def _sclite(tmp: Path, refs: list[str], hyps: list[str], chars: bool = False) -> np.ndarray:
    """Per-utterance (C, S, D, I) as sclite reports them."""
    assert SCLITE, "sctk is required: `make test` installs it through apt"
    (tmp / "ref.trn").write_text("".join(f"{r} (spk_{k:05d})\n" for k, r in enumerate(refs)))
    (tmp / "hyp.trn").write_text("".join(f"{h} (spk_{k:05d})\n" for k, h in enumerate(hyps)))
    cmd = [SCLITE, "sclite", "-r", str(tmp / "ref.trn"), "trn", "-h", str(tmp / "hyp.trn"), "trn"]
    cmd += ["-i", "rm", *(["-c"] if chars else []), "-o", "pra", "stdout"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    found = {m[1]: tuple(map(int, m.groups()[1:])) for m in _SCORES.finditer(out)}
    assert len(found) == len(refs), "sclite did not score every utterance"
    return np.array([found[f"spk_{k:05d}"] for k in range(len(refs))])


def _random_pairs(seed: int, n: int, vocab: list[str], max_len: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    refs = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, max_len))) for _ in range(n)]
    hyps = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, max_len))) for _ in range(n)]
    return refs, hyps


@pytest.fixture(params=["interpreted", "compiled"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each counting test twice: every pair in the interpreter, every pair by the compiled kernels."""
    if request.param == "interpreted":
        monkeypatch.setattr(alignment, "INTERPRETED_CELLS", 10**12)
        monkeypatch.setattr(alignment, "_kernels_loaded", lambda: False)
    else:
        monkeypatch.setattr(alignment, "INTERPRETED_CELLS", 0)
    return str(request.param)


# A small vocabulary makes many equal-cost alignments: that is where the tie-breaking shows.
CASES = [
    ("tiny-vocab", 0, 2000, ["a", "b", "c"], 12),
    ("words", 1, 1000, ["the", "cat", "sat", "on", "mat", "dog", "a", "garage", "pharmacy"], 20),
    ("long", 2, 200, ["x", "y", "z", "w"], 60),
]


@pytest.mark.parametrize(("name", "seed", "n", "vocab", "max_len"), CASES)
def test_word_counts_equal_sclite(
    tmp_path: Path, engine: str, name: str, seed: int, n: int, vocab: list[str], max_len: int
) -> None:
    refs, hyps = _random_pairs(seed, n, vocab, max_len)
    expected = _sclite(tmp_path, refs, hyps)
    ours = count_word_errors(refs, hyps)
    assert np.array_equal(ours, expected), f"{(ours != expected).any(axis=1).sum()} utterances differ"
    # the alignments (ops) follow the same path
    ops = np.array([[al.counts()[o] for o in "CSDI"] for al in align_pairs(refs, hyps)])
    assert np.array_equal(ops, expected)


def test_char_counts_equal_sclite_character_mode(tmp_path: Path, engine: str) -> None:
    refs, hyps = _random_pairs(3, 800, ["ab", "ba", "abc", "c", "cab"], 6)
    expected = _sclite(tmp_path, refs, hyps, chars=True)
    assert np.array_equal(count_char_errors(refs, hyps), expected)


def _edited_pairs(seed: int, n: int, vocab: list[str], max_len: int, sep: str) -> tuple[list[str], list[str]]:
    """References and hypotheses made from them by a few edits: long common beginnings and endings,
    the usual shape of a transcript pair (independent random pairs rarely have them)."""
    rng = random.Random(seed)
    refs, hyps = [], []
    for _ in range(n):
        ref = [rng.choice(vocab) for _ in range(rng.randint(0, max_len))]
        hyp = list(ref)
        for _ in range(rng.randint(0, 3)):
            at = rng.randint(0, len(hyp))
            edit = rng.random()
            if edit < 0.33 and at < len(hyp):
                del hyp[at]
            elif edit < 0.66 and at < len(hyp):
                hyp[at] = rng.choice(vocab)
            else:
                hyp.insert(at, rng.choice(vocab))
        refs.append(sep.join(ref) or rng.choice(vocab))
        hyps.append(sep.join(hyp))
    return refs, hyps


def test_counts_of_pairs_sharing_their_ends_equal_sclite(tmp_path: Path, engine: str) -> None:
    """The kernels count a common beginning and end as hits without aligning them; sclite aligns
    everything: the counts must agree, word and character."""
    refs, hyps = _edited_pairs(5, 2000, ["a", "b", "c"], 16, " ")
    shared_ends = sum(
        r.split()[:1] == h.split()[:1] and r.split()[-1:] == h.split()[-1:]
        for r, h in zip(refs, hyps, strict=True)
    )
    assert shared_ends > 500
    assert np.array_equal(count_word_errors(refs, hyps), _sclite(tmp_path, refs, hyps))
    refs, hyps = _edited_pairs(6, 2000, ["a", "b", "c", "ab"], 16, "")
    assert np.array_equal(count_char_errors(refs, hyps), _sclite(tmp_path, refs, hyps, chars=True))


def test_trimming_common_ends_changes_no_count() -> None:
    """`_dp_counts_trimmed` against the whole DP, on 20,000 pairs over two to four symbols (the
    most ties), one made from the other by up to three edits, for both weight tables."""
    from stt_flywheel.scoring.alignment import SCLITE_WEIGHTS
    from stt_flywheel.scoring.kernels import _dp_counts, _dp_counts_trimmed

    rng = np.random.default_rng(7)
    prev, cur = np.zeros((25, 5), np.int64), np.zeros((25, 5), np.int64)
    trimmed_somewhere = 0
    for k in range(20_000):
        alphabet = 2 + k % 3
        a = rng.integers(0, alphabet, rng.integers(0, 21))
        b = a.copy()
        edits = rng.integers(0, 4)
        for _ in range(edits):
            at = int(rng.integers(0, len(b) + 1))
            if at == len(b) or rng.random() < 0.5:
                b = np.insert(b, at, rng.integers(0, alphabet))
            else:
                b = np.delete(b, at)
        trimmed_somewhere += len(a) > 0 and len(b) > 0 and (a[0] == b[0] or a[-1] == b[-1])
        for weights in (SCLITE_WEIGHTS, LEVENSHTEIN_WEIGHTS):
            whole = _dp_counts(a, len(a), b, len(b), *weights, prev, cur)
            assert _dp_counts_trimmed(a, len(a), b, len(b), *weights, prev, cur) == whole, (a, b, weights)
    assert trimmed_somewhere > 10_000


def test_weighted_alignment_differs_from_levenshtein_where_sclite_says_so(tmp_path: Path) -> None:
    """The reason for the weights: a unit-cost alignment splits S/D/I differently, on sclite's own verdict."""
    refs, hyps = _random_pairs(4, 2000, ["a", "b", "c"], 10)
    expected = _sclite(tmp_path, refs, hyps)
    unit = count_word_errors(refs, hyps, LEVENSHTEIN_WEIGHTS)
    differing = (unit != expected).any(axis=1)
    assert differing.sum() > 50
    # where they differ, the unit-cost path never makes more errors, the sclite path never costs more
    cost = lambda c: 4 * c[:, 1] + 3 * (c[:, 2] + c[:, 3])  # noqa: E731
    assert (unit[:, 1:].sum(axis=1) <= expected[:, 1:].sum(axis=1)).all()
    assert (cost(expected) <= cost(unit)).all()


def test_counts_split_across_threads_equal_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(2)
    refs = [" ".join(rng.choice(["a", "b", "cd"]) for _ in range(rng.randint(0, 9))) for _ in range(5001)]
    hyps = [" ".join(rng.choice(["a", "b", "ce"]) for _ in range(rng.randint(0, 9))) for _ in range(5001)]
    monkeypatch.setattr(alignment, "INTERPRETED_CELLS", 0)
    monkeypatch.setattr(alignment, "THREADED_PAIRS", 10**9)
    words, chars = alignment.count_word_errors(refs, hyps), alignment.count_char_errors(refs, hyps)
    monkeypatch.setattr(alignment, "THREADED_PAIRS", 1000)
    monkeypatch.setattr(alignment.os, "cpu_count", lambda: 3)
    assert (alignment.count_word_errors(refs, hyps) == words).all()
    assert (alignment.count_char_errors(refs, hyps) == chars).all()


def test_interpreted_and_compiled_counts_agree_where_the_budget_splits_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A budget that runs out part-way: the first pairs in the interpreter, the rest (a pair too
    big for what is left among them) compiled; the same counts as all compiled. Separators are the
    kernels' (ASCII whitespace and NUL), not Unicode's: a no-break space is part of a word."""
    rng = random.Random(11)
    vocab = ["a", "b", "ab", "c\u00a0d", "é"]
    refs, hyps = _edited_pairs(12, 3000, vocab, 14, " ")
    refs += ["a\tb\x00c  d\n", "x " * 400]
    hyps += ["a b c\rd", "x y " * 300]
    order = list(range(len(refs)))
    rng.shuffle(order)
    refs, hyps = [refs[k] for k in order], [hyps[k] for k in order]
    monkeypatch.setattr(alignment, "INTERPRETED_CELLS", 0)
    words, chars = count_word_errors(refs, hyps), count_char_errors(refs, hyps)
    monkeypatch.setattr(alignment, "_kernels_loaded", lambda: False)
    monkeypatch.setattr(alignment, "INTERPRETED_CELLS", 30_000)
    interpreted: list[int] = []
    real = alignment._interpreted_counts
    monkeypatch.setattr(
        alignment,
        "_interpreted_counts",
        lambda *a: interpreted.append(1) or real(*a),  # type: ignore[func-returns-value]
    )
    assert np.array_equal(count_word_errors(refs, hyps), words)
    assert 100 < len(interpreted) < len(refs)  # both engines counted some of them
    assert np.array_equal(count_char_errors(refs, hyps), chars)
    assert count_word_errors(["c\u00a0d"], ["c d"]).tolist() == [[0, 1, 0, 1]]


def test_a_short_pair_loads_no_compiler() -> None:
    """Counting a few pairs in a fresh process leaves numba unloaded (a read command's start)."""
    code = (
        "import sys; from stt_flywheel.scoring.alignment import count_word_errors, count_char_errors;"
        "print(count_word_errors(['a b c'], ['a x c']).tolist(), count_char_errors(['ab'], ['b']).tolist(),"
        " 'numba' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[[2,", "1,", "0,", "0]]", "[[1,", "0,", "1,", "0]]", "False"]
