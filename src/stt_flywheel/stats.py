"""Paired significance tests on per-utterance error counts (candidate vs production, same audio)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = ["PairedTest", "paired_wilcoxon"]


@dataclass(frozen=True)
class PairedTest:
    name: str
    p_value: float
    statistic: float
    n: int
    n_nonzero: int
    better: int
    worse: int


def paired_wilcoxon(candidate_errors: Sequence[int], production_errors: Sequence[int]) -> PairedTest:
    """One-sided Wilcoxon signed-rank test that the candidate makes fewer errors per utterance.

    Utterances where both models make the same number of errors carry no evidence (Wilcox's zero
    method). With no differing utterance at all the p-value is 1: nothing supports a change. An
    empty input gives NaN, which every gate treats as a rejection.
    """
    cand = np.asarray(candidate_errors, dtype=float)
    prod = np.asarray(production_errors, dtype=float)
    if cand.shape != prod.shape:
        raise ValueError("candidate and production error lists differ in length")
    diff = cand - prod
    better, worse = int((diff < 0).sum()), int((diff > 0).sum())
    nonzero = better + worse
    if len(diff) == 0:
        return PairedTest("wilcoxon_signed_rank", math.nan, math.nan, 0, 0, 0, 0)
    if nonzero == 0:
        return PairedTest("wilcoxon_signed_rank", 1.0, 0.0, len(diff), 0, 0, 0)
    res = sps.wilcoxon(diff[diff != 0], alternative="less", zero_method="wilcox")
    return PairedTest(
        "wilcoxon_signed_rank", float(res.pvalue), float(res.statistic), len(diff), nonzero, better, worse
    )
