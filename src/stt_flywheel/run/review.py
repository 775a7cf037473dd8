"""What people review, wherever they do it: decisions on held corrections (`review accept|reject`,
the review page of `stt-flywheel ui`), recorded in the store, then in the registry's audit log; the
review budget (`review propose|export`) and the corrections it brought back (`review import`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.data.error_store.ingest import FeedbackIngestResult
from stt_flywheel.data.error_store.layout import utc_now
from stt_flywheel.data.proposal import Proposal, propose, read_label_studio_export
from stt_flywheel.data.review import Screen, decide
from stt_flywheel.deployment.backends import open_registry
from stt_flywheel.errors import InputError

__all__ = ["import_reviews", "propose_reviews", "review"]


def review(
    config: FlywheelConfig, prediction_ids: Sequence[str], *, accept: bool, reason: str, by: str
) -> list[dict[str, Any]]:
    """Accept or reject held corrections by prediction id as `by`; each decision is audited."""
    made = decide(
        open_error_store(config), Screen.of(config), prediction_ids, accept=accept, reason=reason, by=by
    )
    registry = open_registry(config)
    for entry in made:
        registry.record("review", None, {k: entry[k] for k in ("prediction_id", "decision", "reason", "by")})
    return made


def propose_reviews(
    config: FlywheelConfig, budget: int, since: datetime | None = None, now: datetime | None = None
) -> list[Proposal]:
    """The review budget's picks (`data.proposal.propose`) among the settled predictions: older
    than `feedback.label_window`, made since `since`."""
    store = open_error_store(config)
    return propose(
        store, budget, now=now or utc_now(), label_window=config.feedback.label_window, since=since
    )


def import_reviews(
    config: FlywheelConfig, tasks: Sequence[Any], *, source: str, by: str, now: datetime | None = None
) -> tuple[FeedbackIngestResult, list[dict[str, Any]]]:
    """A Label Studio export's corrections as `source`'s events (a reviewer source: they may label
    anyone's prediction); the ingest's result and the tasks skipped with why. Audited as `by`."""
    if source not in config.feedback.reviewer_sources:
        raise InputError(
            f"{source!r} is not in feedback.reviewer_sources ({', '.join(config.feedback.reviewer_sources)}): "
            "its events about users' predictions would be quarantined; add it there first"
        )
    now = now or utc_now()
    events, skipped = read_label_studio_export(tasks, source, now)
    result = open_error_store(config).ingest_feedback(events, now=now)
    counts = {
        "tasks": len(tasks),
        "events": len(events),
        "skipped": len(skipped),
        "accepted": result.accepted,
    }
    open_registry(config).record("review-import", None, {"source": source, "by": by, **counts})
    return result, skipped
