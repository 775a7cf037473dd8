"""The demo's reviewers: the wheel spends a review budget on what its users left unanswered, and
a labelling team corrects it in Label Studio.

The round trip is the real one (`review propose`'s picks, as `review export` writes them for Label
Studio, read back from an export as `review import` reads it); only the people are simulated: each
reviewer writes what the speaker really said.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.manifest import Utterance
from stt_flywheel.data.proposal import label_studio_tasks
from stt_flywheel.data.records import id_time
from stt_flywheel.run.review import import_reviews, propose_reviews
from stt_flywheel.scoring.text import normalize

__all__ = ["REVIEW_SOURCE", "review_round"]

REVIEW_SOURCE = "label-studio"  # one of the demo's feedback.reviewer_sources


def review_round(
    config: FlywheelConfig, answers: list[dict[str, Any]], utts: list[Utterance], budget: int
) -> dict[str, Any]:
    """Propose `budget` of this round's predictions for review, let the reviewers correct them in
    a simulated Label Studio, import the export; what was proposed, changed and accepted."""
    said = {a["prediction_id"]: u.text for a, u in zip(answers, utts, strict=True)}
    times = [t for t in (id_time(pid) for pid in said) if t is not None]
    picked = propose_reviews(config, budget, since=min(times) if times else None)  # this round's
    picked = [p for p in picked if p.prediction_id in said]
    now = datetime.now(UTC).isoformat()
    export = []
    for n, task in enumerate(label_studio_tasks(picked), start=1):
        text = said[task["data"]["prediction_id"]]
        result = [
            {"from_name": "transcription", "to_name": "audio", "type": "textarea", "value": {"text": [text]}}
        ]
        annotation = {
            "id": n,
            "result": result,
            "completed_by": {"email": f"reviewer-{n % 3}@demo"},
            "updated_at": now,
        }
        export.append({"id": n, "data": task["data"], "annotations": [annotation]})
    result_, skipped = import_reviews(config, export, source=REVIEW_SOURCE, by="demo reviewers")
    changed = sum(normalize(p.hypothesis) != normalize(said[p.prediction_id]) for p in picked)
    return {
        "budget": budget,
        "proposed": len(picked),
        "corrected": changed,
        "confirmed": len(picked) - changed,
        "accepted": result_.accepted,
        "skipped": len(skipped),
        "mean_confidence": (
            sum(p.confidence for p in picked if p.confidence is not None) / len(picked) if picked else None
        ),
    }
