"""Stage 1: decide whether enough new evidence has accumulated to fine-tune.

Evidence is counted since the production model's data watermark. Each threshold yields one
`Check` with a sentence a person can read; `force` trains anyway but keeps the checks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from stt_flywheel.config import TriggerPolicy
from stt_flywheel.data.error_store import ErrorStore

__all__ = ["Check", "EvidenceStats", "TriggerDecision", "check_trigger", "gather_evidence"]


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float
    threshold: float
    reason: str


@dataclass(frozen=True)
class EvidenceStats:
    new_records: int
    new_error_cases: int
    new_corrected_cases: int
    recent_records: int
    recent_errors: int
    latest_ingested_at: datetime | None

    @property
    def error_rate(self) -> float:
        return self.recent_errors / self.recent_records if self.recent_records else math.nan


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
    blocked_by: str | None = None  # why an overlapping run stopped this one (the run lease)

    def block(self, reason: str) -> None:
        """Stop this run although the evidence would train: another run holds the run lease."""
        self.should_train = False
        self.blocked_by = reason

    @property
    def summary(self) -> str:
        if self.blocked_by:
            return f"not started: {self.blocked_by}"
        if self.forced:
            return "forced: training regardless of thresholds"
        if self.should_train:
            return "fired: " + "; ".join(c.reason for c in self.checks)
        return "not fired: " + "; ".join(c.reason for c in self.checks if not c.passed)

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
        }

    def to_markdown(self) -> str:
        verdict = "**Fine-tune now**" if self.should_train else "**Do not fine-tune**"
        lines = [
            "# Trigger check",
            "",
            f"{verdict} — {self.summary}.",
            "",
            f"Production version: {self.production_version}; data watermark: {self.previous_watermark or 'none'}; "
            f"new watermark: {self.watermark or 'none'}.",
            "",
            "| check | value | threshold | passed |",
            "|---|---|---|---|",
        ]
        for c in self.checks:
            lines.append(f"| {c.name} | {c.value:.4g} | {c.threshold:.4g} | {'yes' if c.passed else 'no'} |")
        return "\n".join(lines) + "\n"


def gather_evidence(
    store: ErrorStore, since: datetime | None, now: datetime, window: timedelta
) -> EvidenceStats:
    new_records = new_errors = new_corrected = recent = recent_errors = 0
    latest: datetime | None = None
    window_start = now - window
    for rec in store.scan(upto=now):
        assert rec.ingested_at is not None
        latest = rec.ingested_at if latest is None else max(latest, rec.ingested_at)
        if since is None or rec.ingested_at > since:
            new_records += 1
            if rec.is_error:
                new_errors += 1
                new_corrected += rec.is_corrected
        if rec.timestamp >= window_start:
            recent += 1
            recent_errors += rec.is_error
    return EvidenceStats(new_records, new_errors, new_corrected, recent, recent_errors, latest)


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
    stats = gather_evidence(store, production_watermark, now, timedelta(hours=policy.recent_window_hours))
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
            "error_rate_threshold",
            not math.isnan(rate) and rate >= policy.error_rate_threshold,
            rate,
            policy.error_rate_threshold,
            (
                f"error rate {rate:.1%} over {stats.recent_records} utterances in the last "
                f"{policy.recent_window_hours:g} h (need {policy.error_rate_threshold:.1%})"
                if not math.isnan(rate)
                else f"no traffic in the last {policy.recent_window_hours:g} h"
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
        )
    )
    fired = all(c.passed for c in checks)
    return TriggerDecision(
        should_train=fired or policy.force,
        forced=policy.force and not fired,
        checks=checks,
        stats=stats,
        previous_watermark=production_watermark,
        watermark=stats.latest_ingested_at or production_watermark,
        production_version=production_version,
        checked_at=now,
    )
