"""Live quality per model version: what users said about the traffic each version served.

For the predictions a version made in a window, joined to their latest feedback:

- `requests`; `labeled` (with feedback) and their share;
- `pending`: predictions younger than `feedback.label_window` that have no feedback yet. Feedback
  may still come for them, so they are left out of the rates' denominators, never counted as right;
- `correction_rate` and `flag_rate`: corrected (the correction differs from the hypothesis) and
  flagged-only predictions over the requests that are not pending;
- live `wer` / `cer`: hypothesis against the correction (sclite-exact counts, the validation
  normaliser) over the predictions whose feedback carries a transcript, confirmed ones included.

Each user counts with at most `max_per_user` predictions (the earliest; predictions that name no
user are one user), so that a flood from a few users moves no figure much, and each rate has a
percentile bootstrap interval that resamples requesters whole: one user's predictions are not
independent of each other, and a flood from one user must not narrow the interval. A prediction
that names no user is resampled alone (who sent it is unknown).

Selection bias: only predictions a user chose to correct or confirm have a reference, and users
correct what they notice is wrong, so live WER describes the corrected traffic, not all of it;
read it beside the correction rate.

Reviewers' labels are left out of every figure here (they still teach the model): which
predictions reach a reviewer is chosen by the model's own confidence (`review propose`), so they
would raise the correction rate of whichever version is less sure of itself, and a canary would
be judged by its calibration instead of its users.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.identity import ANONYMOUS
from stt_flywheel.scoring.corpus import score_corpus
from stt_flywheel.scoring.stats import RatioInterval, bootstrap_ratio
from stt_flywheel.scoring.text import DEFAULT_SCORING_NORMALIZER

__all__ = [
    "SELECTION_BIAS",
    "LiveQuality",
    "LiveRow",
    "capped",
    "confidence_by_hour",
    "confidence_summary",
    "daily_trend",
    "hourly_trend",
    "live_quality",
    "read_live",
    "read_windows",
    "trend_start",
]

SELECTION_BIAS = (
    "Live WER and CER are measured only on predictions whose feedback carries a transcript; users "
    "correct what they notice is wrong, so these figures describe the corrected traffic, not all of "
    "it. Read them beside the correction rate, which is over all requests except those still awaiting "
    "feedback (younger than the label window, with none yet)."
)


@dataclass
class LiveQuality:
    version: str
    start: datetime | None
    end: datetime
    requests: int = 0
    labeled: int = 0
    pending: int = 0
    corrected: int = 0
    flagged: int = 0
    confirmed: int = 0
    scored: int = 0  # predictions with a reference transcript (corrected or confirmed by text)
    users: int = 0  # distinct requesters (those that name no user are one)
    capped: int = 0  # predictions beyond a user's cap, left out of every figure
    feedback_share: RatioInterval | None = None
    correction_rate: RatioInterval | None = None
    flag_rate: RatioInterval | None = None
    wer: RatioInterval | None = None
    cer: RatioInterval | None = None
    # the model's confidence on all of its requests, labelled or not (`confidence_summary`)
    confidence: dict[str, float] | None = None
    slices: dict[str, dict[str, LiveQuality]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: v for k, v in self.__dict__.items() if k != "slices" and not isinstance(v, RatioInterval)
        }
        for name in ("feedback_share", "correction_rate", "flag_rate", "wer", "cer"):
            value = getattr(self, name)
            out[name] = value.as_dict() if value is not None else None
        out["slices"] = {
            key: {value: q.as_dict() for value, q in groups.items()} for key, groups in self.slices.items()
        }
        return out


@dataclass
class LiveRow:
    version: str
    predicted_at: datetime
    hypothesis: str
    metadata: dict[str, str]
    kind: str | None  # corrected / flagged / confirmed / None (no feedback)
    reference: str | None
    user: str = ANONYMOUS  # the requester's pseudonym
    signed: bool = False  # captured by a serving process of its version (`Identity.signed`)
    confidence: float | None = None  # the model's own, captured with it (`models.confidence`)


def capped(rows: Sequence[LiveRow], max_per_user: int | None) -> tuple[list[LiveRow], int, int]:
    """(the rows that count: each user's earliest `max_per_user`, all of them when None; how many
    were left out; how many users sent them)."""
    kept: list[LiveRow] = []
    per_user: dict[str, int] = {}
    for r in sorted(rows, key=lambda r: r.predicted_at):
        if max_per_user is None or per_user.get(r.user, 0) < max_per_user:
            kept.append(r)
        per_user[r.user] = per_user.get(r.user, 0) + 1
    return kept, len(rows) - len(kept), len(per_user)


def _requesters(rows: Sequence[LiveRow]) -> list[str]:
    """Each row's cluster for the intervals: its user; a prediction that names no user is a
    cluster of its own (who sent it is unknown, and one cluster of every such prediction would
    make an interval of none)."""
    return [r.user if r.user != ANONYMOUS else f"{ANONYMOUS}#{i}" for i, r in enumerate(rows)]


# Each (normaliser, reference, hypothesis) scored once a process: a version's figures, its slices
# and its trend's buckets count the same rows again. Bounded: emptied past this many pairs.
SCORED_PAIRS = 200_000
_scored: dict[tuple[str, str, str], tuple[int, int, int, int]] = {}
_scoring = threading.Lock()


def scores(rows: Sequence[LiveRow], normalizer: str) -> list[tuple[int, int, int, int]]:
    """(word errors, reference words, character errors, reference characters) of each row's
    hypothesis against its reference."""
    keys = [(normalizer, r.reference or "", r.hypothesis) for r in rows]
    with _scoring:
        missing = list(dict.fromkeys(k for k in keys if k not in _scored))
        if missing:
            _, utts = score_corpus([k[1] for k in missing], [k[2] for k in missing], normalizer)
            if len(_scored) + len(missing) > SCORED_PAIRS:
                _scored.clear()
            _scored.update(
                (k, (u.word_errors, u.ref_words, u.char_errors, u.ref_chars))
                for k, u in zip(missing, utts, strict=True)
            )
        return [_scored[k] for k in keys]


def confidence_summary(rows: Sequence[LiveRow]) -> dict[str, float] | None:
    """How sure the model was of these predictions: how many carry a confidence, its mean, and the
    10th percentile and median; None when none does. A drift signal on all traffic, beside the
    correction rate, which only the labelled part informs."""
    values = np.array([r.confidence for r in rows if r.confidence is not None], dtype=np.float64)
    if not len(values):
        return None
    p10, median = np.quantile(values, [0.1, 0.5])
    return {
        "predictions": len(values),
        "mean": float(values.mean()),
        "p10": float(p10),
        "median": float(median),
    }


def confidence_by_hour(rows: Sequence[LiveRow]) -> list[dict[str, Any]]:
    """`confidence_summary` per hour (UTC, `at` its start) and version, oldest first."""
    groups: dict[tuple[str, str], list[LiveRow]] = defaultdict(list)
    for r in rows:
        groups[(r.predicted_at.strftime("%Y-%m-%dT%H:00Z"), r.version)].append(r)
    out = []
    for (at, version), group in sorted(groups.items()):
        summary = confidence_summary(group)
        if summary is not None:
            out.append({"at": at, "version": version, **summary})
    return out


def _measure(
    version: str,
    rows: Sequence[LiveRow],
    *,
    start: datetime | None,
    end: datetime,
    now: datetime,
    label_window: timedelta,
    normalizer: str,
    resamples: int,
    seed: int,
    max_per_user: int | None,
) -> LiveQuality:
    rows, left_out, users = capped(rows, max_per_user)
    q = LiveQuality(version, start, end, requests=len(rows), users=users, capped=left_out)
    settled = []
    for r in rows:
        if r.kind is None and r.predicted_at > now - label_window:
            q.pending += 1
            continue
        settled.append(r)
    q.confidence = confidence_summary(rows)
    q.labeled = sum(r.kind is not None for r in rows)
    q.corrected = sum(r.kind == "corrected" for r in rows)
    q.flagged = sum(r.kind == "flagged" for r in rows)
    q.confirmed = sum(r.kind == "confirmed" for r in rows)
    ones = [1] * len(settled)
    who, who_settled = _requesters(rows), _requesters(settled)
    boot = {"resamples": resamples, "seed": seed}
    q.feedback_share = bootstrap_ratio(
        [r.kind is not None for r in rows], [1] * len(rows), clusters=who, **boot
    )
    q.correction_rate = bootstrap_ratio(
        [r.kind == "corrected" for r in settled], ones, clusters=who_settled, **boot
    )
    q.flag_rate = bootstrap_ratio([r.kind == "flagged" for r in settled], ones, clusters=who_settled, **boot)
    scored = [r for r in rows if r.reference is not None]
    q.scored = len(scored)
    if scored:
        counts = scores(scored, normalizer)
        who_scored = _requesters(scored)
        q.wer = bootstrap_ratio([c[0] for c in counts], [c[1] for c in counts], clusters=who_scored, **boot)
        q.cer = bootstrap_ratio([c[2] for c in counts], [c[3] for c in counts], clusters=who_scored, **boot)
    else:
        q.wer = q.cer = RatioInterval(math.nan, math.nan, math.nan, 0)
    return q


def read_live(
    store: ErrorStore, start: datetime | None, end: datetime, now: datetime, verify: bool = False
) -> list[LiveRow]:
    """The predictions made in [start, end), each with its latest feedback by `now`: what
    `live_quality` and `daily_trend` measure (read once, it can be given to both). With
    `verify`, each row says whether its serving process signed it (what the monitor decides on)."""
    identity = store.senders.identity_or_none() if verify else None
    columns = ["model_version", "hypothesis", "metadata", "user", "signature", "confidence"]
    out = []
    for p, event, kind in store.window(start, end, now, columns=columns, reviewers=False):
        pid = p["prediction_id"]
        user = p["user"] or ANONYMOUS
        reference = event["corrected_text"] if event is not None else None
        out.append(
            LiveRow(
                p["model_version"] or "unknown",
                p["predicted_at"],
                p["hypothesis"],
                dict(p["metadata"] or []),
                kind,
                reference if kind in ("corrected", "confirmed") else None,
                user,
                identity is not None
                and identity.signed(p["model_version"], pid, user, p["hypothesis"], p["signature"]),
                p.get("confidence"),
            )
        )
    return out


def read_windows(
    store: ErrorStore, windows: Sequence[tuple[datetime, datetime]], now: datetime, verify: bool = False
) -> list[LiveRow]:
    """`read_live` over each window, those that overlap or touch read as one, empty ones not at
    all: what lies between the windows is never read."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(w for w in windows if w[1] > w[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return [row for start, end in merged for row in read_live(store, start, end, now, verify)]


def live_quality(
    store: ErrorStore,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
    label_window: timedelta = timedelta(hours=24),
    normalizer: str = DEFAULT_SCORING_NORMALIZER,
    slice_by: Sequence[str] = (),
    resamples: int = 1000,
    seed: int = 0,
    rows: Sequence[LiveRow] | None = None,
    max_per_user: int | None = None,
) -> dict[str, LiveQuality]:
    """Live quality of each version over the predictions it made in [start, end) (taken from
    `rows` when they were read already), each user counting with at most `max_per_user` of them
    (`monitor.max_predictions_per_user`)."""
    now = now or datetime.now(UTC)
    end = end or now
    by_version: dict[str, list[LiveRow]] = defaultdict(list)
    for row in read_live(store, start, end, now) if rows is None else rows:
        if (start is None or row.predicted_at >= start) and row.predicted_at < end:
            by_version[row.version].append(row)
    kwargs = {
        "start": start,
        "end": end,
        "now": now,
        "label_window": label_window,
        "normalizer": normalizer,
        "resamples": resamples,
        "seed": seed,
        "max_per_user": max_per_user,
    }
    out = {}
    for version, rows in sorted(by_version.items()):
        quality = _measure(version, rows, **kwargs)  # type: ignore[arg-type]
        for key in slice_by:
            groups: dict[str, list[LiveRow]] = defaultdict(list)
            for r in rows:
                groups[r.metadata.get(key, "")].append(r)
            quality.slices[key] = {
                value: _measure(version, g, **kwargs)  # type: ignore[arg-type]
                for value, g in sorted(groups.items())
            }
        out[version] = quality
    return out


def trend_start(now: datetime, days: int) -> datetime:
    """Midnight (UTC) of the first of the `days` days that end with `now`'s."""
    return (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)


def daily_trend(
    store: ErrorStore,
    *,
    days: int = 14,
    now: datetime | None = None,
    label_window: timedelta = timedelta(hours=24),
    normalizer: str = DEFAULT_SCORING_NORMALIZER,
    rows: Sequence[LiveRow] | None = None,
    max_per_user: int | None = None,
) -> list[dict[str, Any]]:
    """Per day (UTC) and version: requests, correction rate and live WER, oldest day first
    (from `rows` when they were read already), each user counting with at most `max_per_user`
    predictions a day."""
    now = now or datetime.now(UTC)
    first = trend_start(now, days)
    rows = read_live(store, first, now, now) if rows is None else rows
    points = _trend(rows, first, now, now, "day", label_window, normalizer, max_per_user)
    return [{"day": p.pop("at"), **p} for p in points]


def hourly_trend(
    store: ErrorStore,
    *,
    start: datetime,
    end: datetime,
    now: datetime | None = None,
    label_window: timedelta = timedelta(hours=24),
    normalizer: str = DEFAULT_SCORING_NORMALIZER,
    max_per_user: int | None = None,
) -> list[dict[str, Any]]:
    """Per hour (UTC, `at` its start) and version over [start, end): what `daily_trend` gives per
    day, each user counting with at most `max_per_user` predictions an hour."""
    now = now or datetime.now(UTC)
    rows = read_live(store, start, end, now)
    return _trend(rows, start, end, now, "hour", label_window, normalizer, max_per_user)


def _trend(
    rows: Sequence[LiveRow],
    start: datetime,
    end: datetime,
    now: datetime,
    bucket: str,
    label_window: timedelta,
    normalizer: str,
    max_per_user: int | None,
) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[LiveRow]] = defaultdict(list)
    for r in rows:
        if start <= r.predicted_at < end:
            at = (
                r.predicted_at.date().isoformat()
                if bucket == "day"
                else r.predicted_at.strftime("%Y-%m-%dT%H:00Z")
            )
            groups[(at, r.version)].append(r)
    out = []
    for (at, version), group in sorted(groups.items()):
        q = _measure(
            version,
            group,
            start=None,
            end=now,
            now=now,
            label_window=label_window,
            normalizer=normalizer,
            resamples=0,  # the trend shows the values, not their intervals
            seed=0,
            max_per_user=max_per_user,
        )
        out.append(
            {
                "at": at,
                "version": version,
                "requests": q.requests,
                "pending": q.pending,
                "correction_rate": q.correction_rate.value if q.correction_rate else math.nan,
                "wer": q.wer.value if q.wer else math.nan,
                "scored": q.scored,
                "confidence": q.confidence["median"] if q.confidence else math.nan,
            }
        )
    return out
