"""Stage 1: decide whether enough new evidence has accumulated to fine-tune.

Evidence is the feedback that arrived since the production model's data watermark (the latest
arrival it was trained on), and the error rate is over the production version's own traffic. Each threshold yields one
`Check` with a sentence a person can read; `force` trains anyway but keeps the checks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from stt_flywheel.config import TriggerPolicy
from stt_flywheel.data.error_store import CLOCK_SKEW, ErrorStore, distinct_events, latest_kinds
from stt_flywheel.data.identity import ANONYMOUS
from stt_flywheel.run.approval import RETRAIN

__all__ = ["Check", "EvidenceStats", "TriggerDecision", "check_trigger", "gather_evidence"]


# How a verdict's opening reads of a check that has not run (`TriggerDecision.outlook`).
_PROSPECTIVE = {
    "not started": "would not start",
    "retraining": "would retrain",
    "forced": "would be forced",
    "fired": "would fire",
    "not fired": "would not fire",
}


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float
    threshold: float
    reason: str
    unit: str = ""  # of value and threshold, e.g. " h"


@dataclass(frozen=True)
class EvidenceStats:
    """Feedback since the watermark, and the production version's own recent traffic.

    `new_feedback` events arrived after the watermark; `new_error_cases` are the predictions whose
    latest feedback arrived then and says the transcript was wrong (a correction that differs
    from it, or a flag); `new_corrected_cases` of them carry the correction. `recent_requests`
    are the production version's predictions in the recent window, `recent_errors` of them wrong
    by their latest feedback so far (a prediction without feedback counts as right)."""

    new_feedback: int
    new_error_cases: int
    new_corrected_cases: int
    recent_requests: int
    recent_errors: int
    latest_arrival: datetime | None
    traffic_of: str  # whose traffic the error rate is over
    new_corrected_users: int = 0  # distinct users whose predictions the new corrections are about
    largest_user_share: float = 0.0  # the largest of those users' share of the new corrections

    @property
    def error_rate(self) -> float:
        return self.recent_errors / self.recent_requests if self.recent_requests else math.nan


@dataclass
class TriggerDecision:
    should_train: bool
    forced: bool
    checks: list[Check]
    stats: EvidenceStats
    previous_watermark: datetime | None
    watermark: datetime | None
    production_version: int | None = None
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    blocked_by: str | None = None  # what stopped this run: the run lease, a canary in flight, approval
    proposal: dict[str, Any] | None = None  # with trigger.require_approval: the proposal made or trained on

    def retrain(self, proposal: dict[str, Any]) -> None:
        """Train on an approved retraining without forgotten people, whatever the thresholds say."""
        self.should_train = self.forced = True
        self.proposal = proposal

    def block(self, reason: str) -> None:
        """Stop this run although the evidence would train (another run holds the run lease, or a
        canary is still being decided)."""
        self.should_train = False
        self.blocked_by = reason

    @property
    def summary(self) -> str:
        return self.said()

    @property
    def outlook(self) -> str:
        """The summary of a check not yet run, as `status` says it: `would fire: …`, not `fired: …`."""
        return self.said(prospective=True)

    def said(self, prospective: bool = False) -> str:
        """What the check decided and why; `prospective`: what it would decide if it ran now."""

        def head(word: str) -> str:
            return _PROSPECTIVE[word] if prospective else word

        if self.blocked_by:
            return f"{head('not started')}: {self.blocked_by}"
        approved = (self.proposal or {}).get("approval")
        by = (
            f" — approved by {approved['by']} (proposal {self.proposal['id']})"
            if approved and self.proposal
            else ""
        )
        if self.forced and (self.proposal or {}).get("kind") == RETRAIN:
            return f"{head('retraining')}: {self.proposal['evidence']['summary']}" + by  # type: ignore[index]
        if self.forced:
            return f"{head('forced')}: training regardless of thresholds" + by
        if self.should_train:
            return f"{head('fired')}: " + "; ".join(c.reason for c in self.checks) + by
        return f"{head('not fired')}: " + "; ".join(c.reason for c in self.checks if not c.passed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "should_train": self.should_train,
            "forced": self.forced,
            "summary": self.summary,
            "checks": [asdict(c) for c in self.checks],
            "stats": {**asdict(self.stats), "error_rate": self.stats.error_rate},
            "previous_watermark": self.previous_watermark,
            "watermark": self.watermark,
            "production_version": self.production_version,
            "checked_at": self.checked_at,
            "blocked_by": self.blocked_by,
            "proposal": self.proposal,
        }

    def to_markdown(self, context: str = "") -> str:
        verdict = "**Fine-tune now**" if self.should_train else "**Do not fine-tune**"
        lines = [
            "# Trigger check",
            "",
            *([context, ""] if context else []),
            f"{verdict} — {self.summary}.",
            "",
            f"Production version: {self.production_version}; data watermark: {self.previous_watermark or 'none'}; "
            f"new watermark: {self.watermark or 'none'}.",
            "",
            "| check | value | threshold | passed | why |",
            "|---|---|---|---|---|",
        ]
        for c in self.checks:
            lines.append(
                f"| {c.name} | {c.value:.4g}{c.unit} | {c.threshold:.4g}{c.unit} | "
                f"{'yes' if c.passed else 'no'} | {c.reason} |"
            )
        return "\n".join(lines) + "\n"


def gather_evidence(
    store: ErrorStore,
    since: datetime | None,
    now: datetime,
    window: timedelta,
    version: int | None = None,
) -> EvidenceStats:
    """Reads the feedback that arrived after `since` with the predictions it names (their hours
    only), and the predictions of the recent window with the feedback that arrived since the
    window opened: O(data since the watermark + window), not O(store). Column-wise throughout."""
    new_events = store.feedback(after=since, upto=now)
    new_ids = set(new_events["prediction_id"].to_pylist())
    named = store.lookup(new_ids)
    earliest = pc.min(named["predicted_at"]).as_py() if named.num_rows else None
    history = store.feedback_for(new_ids, upto=now, after=earliest - CLOCK_SKEW if earliest else None)
    latest = latest_kinds(history, named)
    if since is not None:  # a prediction whose latest word was there when production was trained is not new
        latest = latest.filter(
            pc.greater(latest["ingested_at"], pa.scalar(since, latest["ingested_at"].type))
        )
    kinds = latest["kind"]
    new_corrected = pc.sum(pc.equal(kinds, "corrected")).as_py() or 0
    users = _users_of(latest.filter(pc.equal(kinds, "corrected")), named)
    new_errors = new_corrected + (pc.sum(pc.equal(kinds, "flagged")).as_py() or 0)
    latest_arrival = pc.max(new_events["ingested_at"]).as_py() if new_events.num_rows else None

    start = now - window
    recent = store.predictions(start, now, columns=["model_version", "hypothesis", "user"])
    if version is not None:
        recent = recent.filter(pc.equal(recent["model_version"], str(version)))
    # feedback on the window's predictions arrived after the window opened
    events = store.feedback_for(recent["prediction_id"].to_pylist(), upto=now, after=start - CLOCK_SKEW)
    labels = latest_kinds(events, recent)["kind"]
    recent_errors = pc.sum(pc.is_in(labels, pa.array(["corrected", "flagged"]))).as_py() or 0
    return EvidenceStats(
        new_feedback=distinct_events(new_events),
        new_error_cases=int(new_errors),
        new_corrected_cases=int(new_corrected),
        recent_requests=recent.num_rows,
        recent_errors=int(recent_errors),
        latest_arrival=latest_arrival,
        traffic_of=f"version {version}" if version is not None else "all versions",
        new_corrected_users=len(users),
        largest_user_share=max(users.values(), default=0) / new_corrected if new_corrected else 0.0,
    )


def _users_of(labels: pa.Table, predictions: pa.Table) -> dict[str, int]:
    """How many of these labelled predictions each requester made (anonymous is one user)."""
    owners = predictions.select(["prediction_id", "user"]).join(
        labels.select(["prediction_id"]), "prediction_id", join_type="inner"
    )
    users = pc.fill_null(owners["user"], ANONYMOUS).value_counts()
    return {v["values"].as_py(): v["counts"].as_py() for v in users}


def check_trigger(
    store: ErrorStore,
    policy: TriggerPolicy,
    *,
    production_watermark: datetime | None,
    last_deployed_at: datetime | None,
    production_version: int | None = None,
    now: datetime | None = None,
) -> TriggerDecision:
    now = now or datetime.now(UTC)
    stats = gather_evidence(
        store, production_watermark, now, timedelta(hours=policy.recent_window_hours), production_version
    )
    rate = stats.error_rate
    since = f"since {production_watermark.isoformat()}" if production_watermark else "in the store"
    checks = [
        Check(
            "min_error_cases",
            stats.new_error_cases >= policy.min_error_cases,
            stats.new_error_cases,
            policy.min_error_cases,
            f"{stats.new_error_cases} new error cases {since} (need {policy.min_error_cases})",
        ),
        Check(
            "min_corrected_cases",
            stats.new_corrected_cases >= policy.min_corrected_cases,
            stats.new_corrected_cases,
            policy.min_corrected_cases,
            f"{stats.new_corrected_cases} of them corrected (need {policy.min_corrected_cases})",
        ),
        Check(
            "min_distinct_users",
            stats.new_corrected_users >= policy.min_distinct_users,
            stats.new_corrected_users,
            policy.min_distinct_users,
            f"from {stats.new_corrected_users} user{'' if stats.new_corrected_users == 1 else 's'}, the "
            f"largest {stats.largest_user_share:.0%} of them (need {policy.min_distinct_users})",
        ),
        Check(
            "error_rate_threshold",
            not math.isnan(rate) and rate >= policy.error_rate_threshold,
            rate,
            policy.error_rate_threshold,
            (
                f"error rate {rate:.1%} over {stats.recent_requests} requests ({stats.traffic_of}) in the "
                f"last {policy.recent_window_hours:g} h (need {policy.error_rate_threshold:.1%})"
                if not math.isnan(rate)
                else f"no requests ({stats.traffic_of}) in the last {policy.recent_window_hours:g} h"
            ),
        ),
    ]
    since_deploy = (now - last_deployed_at) if last_deployed_at else None
    cooled = since_deploy is None or since_deploy >= policy.cooldown
    hours = since_deploy.total_seconds() / 3600 if since_deploy is not None else math.inf
    checks.append(
        Check(
            "cooldown",
            cooled,
            hours,
            policy.cooldown_hours,
            f"{hours:.1f} h since the last deployment (cooldown {policy.cooldown_hours:g} h)"
            if since_deploy is not None
            else "no earlier deployment",
            unit=" h",
        )
    )
    fired = all(c.passed for c in checks)
    return TriggerDecision(
        should_train=fired or policy.force,
        forced=policy.force and not fired,
        checks=checks,
        stats=stats,
        previous_watermark=production_watermark,
        watermark=max(filter(None, [stats.latest_arrival, production_watermark]), default=None),
        production_version=production_version,
        checked_at=now,
    )
