"""Live evidence of two arms compared with margins: a canary against the default, or the default
against its own record. Pure functions: the monitor (`monitoring.monitor`) reads and acts.

An *arm* is the predictions one version made in a window, all older than
`feedback.label_window_hours` (settled: a prediction still within it is neither labelled nor
unlabelled, and is left out). Of an arm's requests, `labelled` have feedback, `corrected` were
corrected, and `scored` carry a reference transcript (corrected or confirmed by text).

Two tests per comparison, each with a two-sided interval at the look's confidence:

- correction rate: candidate − baseline over settled requests: the union of Newcombe's hybrid
  score interval (exact enough at small counts and at 0 %, but it takes requests as independent)
  and a percentile bootstrap that resamples each arm's users whole (one user's requests are not
  independent: a flood from one user is one draw);
- live WER: candidate − baseline over the scored predictions of each arm, a percentile bootstrap
  resampling each arm's users whole (sclite-exact counts, the validation normaliser).

Before either, each user counts with at most `monitor.max_predictions_per_user` predictions per arm.

A test is `worse` when the difference exceeds its margin and its interval excludes zero,
`non_inferior` when the interval's upper bound lies below the margin, `inconclusive` otherwise,
and `not_measured` when an arm has too little to measure (which never promotes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np

from stt_flywheel.config import MonitorSettings
from stt_flywheel.monitoring.decision import MonitorAction
from stt_flywheel.monitoring.live import LiveRow, capped
from stt_flywheel.scoring.corpus import score_corpus
from stt_flywheel.scoring.stats import Difference, proportion_difference, ratio_difference

__all__ = [
    "Arm",
    "CanaryState",
    "Judgement",
    "MetricTest",
    "compare_arms",
    "decide_canary",
    "decide_default",
    "measure_arm",
]

Verdict = Literal["non_inferior", "worse", "inconclusive", "not_measured"]


@dataclass
class Arm:
    version: str
    requests: int = 0
    labelled: int = 0
    corrected: int = 0
    scored: int = 0
    word_errors: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ref_words: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    users: int = 0  # distinct requesters (anonymous is one)
    capped: int = 0  # predictions left out: past a user's cap
    requesters: list[str] = field(default_factory=list)  # each counted request's user
    corrections: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # 1 where corrected
    scorers: list[str] = field(default_factory=list)  # each scored prediction's user

    @property
    def correction_rate(self) -> float:
        return self.corrected / self.requests if self.requests else math.nan

    @property
    def wer(self) -> float:
        words = int(self.ref_words.sum())
        return int(self.word_errors.sum()) / words if words else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "requests": self.requests,
            "labelled": self.labelled,
            "corrected": self.corrected,
            "scored": self.scored,
            "correction_rate": self.correction_rate,
            "wer": self.wer,
            "users": self.users,
            "capped": self.capped,
        }


def measure_arm(
    version: str, rows: Sequence[LiveRow], normalizer: str, max_per_user: int | None = None
) -> Arm:
    """The evidence of one arm: `rows` are its settled predictions, of which each user counts
    with at most `max_per_user` (the earliest), so that a flood from a few users weighs little."""
    rows, left_out, users = capped(rows, max_per_user)
    arm = Arm(
        version,
        requests=len(rows),
        labelled=sum(r.kind is not None for r in rows),
        corrected=sum(r.kind == "corrected" for r in rows),
        users=users,
        capped=left_out,
        requesters=[r.user for r in rows],
        corrections=np.array([r.kind == "corrected" for r in rows], np.int64),
    )
    scored = [r for r in rows if r.reference is not None]
    arm.scored = len(scored)
    arm.scorers = [r.user for r in scored]
    if scored:
        _, utts = score_corpus(
            [r.reference or "" for r in scored], [r.hypothesis for r in scored], normalizer
        )
        arm.word_errors = np.array([u.word_errors for u in utts], np.int64)
        arm.ref_words = np.array([u.ref_words for u in utts], np.int64)
    return arm


@dataclass(frozen=True)
class MetricTest:
    metric: str  # correction_rate | wer
    margin: float
    difference: Difference
    verdict: Verdict
    p_non_inferior: float  # H0: Δ ≥ margin (small: non-inferior); NaN where not computed
    p_worse: float  # H0: Δ ≤ 0 (small: the candidate is worse); NaN where not computed

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "margin": self.margin,
            **self.difference.as_dict(),
            "verdict": self.verdict,
            "p_non_inferior": self.p_non_inferior,
            "p_worse": self.p_worse,
        }

    def describe(self, names: tuple[str, str]) -> str:
        d = self.difference
        label = {"correction_rate": "correction rate", "wer": "live WER"}[self.metric]
        if not d.measured:
            return f"{label}: not measured ({d.n_a} / {d.n_b} predictions)"
        return (
            f"{label} {names[0]} {d.a:.3f} vs {names[1]} {d.b:.3f}: Δ {d.delta:+.3f}, "
            f"{d.confidence:.2%} interval [{d.low:+.3f}, {d.high:+.3f}], margin {self.margin:+.3f} → "
            f"{self.verdict.replace('_', ' ')}"
        )


def _verdict(diff: Difference, margin: float, enough: bool) -> Verdict:
    if not enough or not diff.measured:
        return "not_measured"
    if diff.delta > margin and diff.low > 0:
        return "worse"
    if diff.high < margin:
        return "non_inferior"
    return "inconclusive"


def _proportion_p_values(candidate: Arm, baseline: Arm, margin: float) -> tuple[float, float]:
    from statsmodels.stats.proportion import test_proportions_2indep

    if not (candidate.requests and baseline.requests):
        return math.nan, math.nan
    args = (candidate.corrected, candidate.requests, baseline.corrected, baseline.requests)
    ni = test_proportions_2indep(*args, value=margin, compare="diff", alternative="smaller", method="score")
    worse = test_proportions_2indep(*args, value=0, compare="diff", alternative="larger", method="score")
    return float(ni.pvalue), float(worse.pvalue)


def _correction_rate_difference(
    candidate: Arm, baseline: Arm, confidence: float, resamples: int, seed: int
) -> Difference:
    """Newcombe's interval widened to hold the user-cluster bootstrap's: whichever assumption is
    the weaker one here (few requests, or many requests from few users) sets each bound."""
    newcombe = proportion_difference(
        candidate.corrected, candidate.requests, baseline.corrected, baseline.requests, confidence=confidence
    )
    clustered = ratio_difference(
        candidate.corrections,
        np.ones(len(candidate.corrections), np.int64),
        baseline.corrections,
        np.ones(len(baseline.corrections), np.int64),
        resamples=resamples,
        confidence=confidence,
        seed=seed + 1,
        clusters_a=candidate.requesters,
        clusters_b=baseline.requesters,
    )
    if not (newcombe.measured and clustered.measured):
        return newcombe
    return replace(
        newcombe,
        low=min(newcombe.low, clustered.low),
        high=max(newcombe.high, clustered.high),
        method="newcombe ∪ cluster bootstrap",
    )


def compare_arms(
    candidate: Arm,
    baseline: Arm,
    *,
    correction_margin: float,
    wer_margin: float,
    min_scored: int,
    confidence: float,
    resamples: int = 2000,
    seed: int = 0,
) -> list[MetricTest]:
    """Both tests of `candidate` against `baseline` at `confidence`."""
    rate = _correction_rate_difference(candidate, baseline, confidence, resamples, seed)
    p_ni, p_worse = _proportion_p_values(candidate, baseline, correction_margin)
    wer = ratio_difference(
        candidate.word_errors,
        candidate.ref_words,
        baseline.word_errors,
        baseline.ref_words,
        resamples=resamples,
        confidence=confidence,
        seed=seed,
        clusters_a=candidate.scorers,
        clusters_b=baseline.scorers,
    )
    enough_scored = min(candidate.scored, baseline.scored) >= min_scored
    return [
        MetricTest(
            "correction_rate", correction_margin, rate, _verdict(rate, correction_margin, True), p_ni, p_worse
        ),
        MetricTest("wer", wer_margin, wer, _verdict(wer, wer_margin, enough_scored), math.nan, math.nan),
    ]


@dataclass(frozen=True)
class CanaryState:
    """Where a canary stands, as the registry's audit log and the endpoint tell it."""

    version: int
    default: int
    share: int  # its traffic now
    next_share: int  # after this step passes; 100 means promotion
    started_at: datetime  # deployed as a canary
    step_started_at: datetime  # the current share began
    looks_done: int  # testing looks already spent in this step


@dataclass
class Judgement:
    action: MonitorAction  # canary: wait continue promote step rollback hold; default: healthy wait unwatched degraded
    reasons: list[str]
    tests: list[MetricTest] = field(default_factory=list)
    look: int | None = None  # the testing look this was (canary), None when it only waited


def _deadline(state: CanaryState, looks: int, settings: MonitorSettings, now: datetime) -> str | None:
    """Why the canary's time is up after `looks` testing looks in this step, or None."""
    age = now - state.started_at
    if age >= timedelta(hours=settings.max_canary_hours):
        hours = age.total_seconds() / 3600
        return f"the canary has served {hours:.1f} h (max_canary_hours {settings.max_canary_hours:g})"
    if looks >= settings.max_looks:
        return f"this step's {settings.max_looks} testing looks are spent"
    return None


def _policy(why: str, state: CanaryState, settings: MonitorSettings, reasons: list[str]) -> MonitorAction:
    reasons.append(f"deadline: {why}; deadline_policy {settings.deadline_policy}")
    if settings.deadline_policy == "promote":
        return "promote" if state.next_share >= 100 else "step"
    return settings.deadline_policy


def decide_canary(
    state: CanaryState,
    candidate: Arm,
    baseline: Arm,
    settings: MonitorSettings,
    now: datetime,
    *,
    seed: int = 0,
) -> Judgement:
    """The canary's next move: promote (or the next step) when non-inferior on both tests, roll
    back when worse on either, wait while an arm has too few labels, keep collecting otherwise;
    at the deadline the configured policy. A promotion to a share below 100 is a `step`."""
    names = (f"v{state.version}", f"v{state.default}")
    reasons: list[str] = []
    if min(candidate.users, baseline.users) < settings.min_distinct_users_per_arm:
        reasons.append(
            f"waiting for users: {names[0]} served {candidate.users}, {names[1]} {baseline.users} distinct "
            f"users (min_distinct_users_per_arm {settings.min_distinct_users_per_arm})"
        )
    elif min(candidate.labelled, baseline.labelled) < settings.min_labelled_per_arm:
        reasons.append(
            f"waiting for labels: {names[0]} has {candidate.labelled}, {names[1]} {baseline.labelled} "
            f"labelled predictions (min_labelled_per_arm {settings.min_labelled_per_arm})"
        )
    if reasons:
        # a look that waits spends none of the error rate, so only the clock ends the wait
        why = _deadline(state, 0, settings, now)
        return Judgement(_policy(why, state, settings, reasons) if why else "wait", reasons)
    look = state.looks_done + 1
    tests = compare_arms(
        candidate,
        baseline,
        correction_margin=settings.correction_rate_margin,
        wer_margin=settings.wer_margin,
        min_scored=settings.min_scored_per_arm,
        confidence=settings.look_confidence,
        resamples=settings.bootstrap_resamples,
        seed=seed,
    )
    reasons += [t.describe(names) for t in tests]
    reasons.append(
        f"look {look} of {settings.max_looks} at {settings.look_confidence:.2%} confidence "
        f"(overall {settings.confidence:.0%}, split evenly over the looks)"
    )
    if any(t.verdict == "worse" for t in tests):
        return Judgement("rollback", reasons, tests, look)
    if all(t.verdict == "non_inferior" for t in tests):
        return Judgement("promote" if state.next_share >= 100 else "step", reasons, tests, look)
    why = _deadline(state, look, settings, now)
    return Judgement(_policy(why, state, settings, reasons) if why else "continue", reasons, tests, look)


def decide_default(
    version: int,
    recent: Arm,
    record: Arm | None,
    record_of: str,
    settings: MonitorSettings,
    *,
    seed: int = 0,
) -> Judgement:
    """The default against its record (`record_of` says whose): degraded when worse on either test
    by more than `max_live_degradation`, the interval excluding zero."""
    if record is None or record.labelled < settings.min_labelled_per_arm:
        have = record.labelled if record is not None else 0
        return Judgement(
            "unwatched",
            [f"no record to compare v{version} with: {record_of} has {have} labelled predictions"],
        )
    if recent.labelled < settings.min_labelled_per_arm:
        return Judgement(
            "wait",
            [
                f"waiting for labels: v{version}'s recent traffic has {recent.labelled} labelled predictions "
                f"(min_labelled_per_arm {settings.min_labelled_per_arm})"
            ],
        )
    tests = compare_arms(
        recent,
        record,
        correction_margin=settings.max_live_degradation,
        wer_margin=settings.max_live_degradation,
        min_scored=settings.min_scored_per_arm,
        confidence=settings.look_confidence,
        resamples=settings.bootstrap_resamples,
        seed=seed,
    )
    reasons = [t.describe((f"v{version} now", record_of)) for t in tests]
    degraded = any(t.verdict == "worse" for t in tests)
    return Judgement("degraded" if degraded else "healthy", reasons, tests)
