"""How long personal data is kept: users' voices and words, and what was built from them."""

from __future__ import annotations

from pydantic import Field

from stt_flywheel.config.base import Strict

__all__ = ["ReportSettings", "RetentionSettings"]


def _days(what: str) -> int | None:
    return Field(None, ge=1, description=f"Days {what} are kept; null keeps them.")  # type: ignore[no-any-return]


class RetentionSettings(Strict):
    """What `stt-flywheel store retain` deletes once it is older than this many days (null: kept).
    Predictions go by the hour they were made, feedback and quarantine lines by the hour they
    arrived; audio by when it was first stored, unless a prediction younger than its days still
    names it; datasets and run reports by when they were written, unless a registered model
    version names them (its dataset, the run that trained it)."""

    audio_days: int | None = _days("captured audio objects")
    predictions_days: int | None = _days("predictions")
    feedback_days: int | None = _days("feedback events")
    quarantine_days: int | None = _days("quarantined lines (refused at ingest, raw)")
    datasets_days: int | None = _days("datasets")
    reports_days: int | None = _days("run reports, ledgers and pipeline outputs")


class ReportSettings(Strict):
    """What run reports and the ledger may hold."""

    include_transcripts: bool = Field(
        True,
        description="Show the transcripts of evaluated utterances (the held-out split is users' "
        "corrections) in reports, the ledger and utterances.jsonl; false keeps their ids and error "
        "counts only.",
    )
