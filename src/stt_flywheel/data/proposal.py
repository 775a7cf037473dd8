"""A review budget: the predictions most worth a person's correction, and the round trip through
Label Studio that gets them corrected.

`propose` picks, among the settled predictions of a window (older than `feedback.label_window`,
so whoever asked has had their chance to answer), those that:

- nobody answered: no feedback event of any kind about them, held or quarantined ones included;
- a person can listen to: their audio was captured;
- a serving process of their version made (signed, where the identity key is at hand): what the
  trust rules count as the model's own answer;

lowest calibrated confidence first (`models.confidence`; a prediction captured without one comes
after every one that has it), spread over strata: no (domain, speaker) pair of the metadata (the
requester's pseudonym where no speaker is named) takes more than a fifth of the budget while other
strata still have candidates, and a text already proposed is not proposed twice. (An equal share
per stratum was tried first: it spent half the budget on the domain the model already knows, and
found fewer errors than picking at random; `benchmarks/bench_labels.py` measures the rule.)

`label_studio_tasks` writes them as a Label Studio import (the audio's URL and the hypothesis as a
pre-annotation of a text area, `LABEL_CONFIG`); `read_label_studio_export` reads a Label Studio
export back as reviewer events (`review import`), one per task with a submitted annotation.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.identity import ANONYMOUS
from stt_flywheel.errors import InputError
from stt_flywheel.scoring.text import normalize

__all__ = [
    "LABEL_CONFIG",
    "Proposal",
    "choose",
    "label_studio_tasks",
    "propose",
    "read_label_studio_export",
]

# The labelling interface the tasks are made for: the audio, and a text area holding the model's
# transcript for the reviewer to correct (its names are what the tasks and the export refer to).
LABEL_CONFIG = """<View>
  <Header value="Correct what the model heard"/>
  <Audio name="audio" value="$audio"/>
  <TextArea name="transcription" toName="audio" editable="true" maxSubmissions="1" rows="3"/>
</View>
"""
_TEXT_FROM, _AUDIO_TO = "transcription", "audio"
# No (domain, speaker) stratum takes more of a budget than this while others have candidates.
MAX_STRATUM_SHARE = 0.2


@dataclass(frozen=True)
class Proposal:
    prediction_id: str
    predicted_at: datetime
    model_version: str | None
    confidence: float | None  # the utterance's: its least sure word's
    least_sure: str | None  # its least sure word
    hypothesis: str
    domain: str
    speaker: str
    audio_uri: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _candidates(store: ErrorStore, start: datetime, settled: datetime) -> list[Proposal]:
    predictions = store.predictions(start, settled).to_pylist()
    answered = set(store.feedback_for([p["prediction_id"] for p in predictions])["prediction_id"].to_pylist())
    identity = store.senders.identity_or_none()
    out = []
    for p in predictions:
        pid, user = p["prediction_id"], p["user"] or ANONYMOUS
        if pid in answered or not p["audio_uri"]:
            continue
        if identity is not None and not identity.signed(
            p["model_version"], pid, user, p["hypothesis"], p["signature"]
        ):
            continue
        words = p.get("words") or []
        least = min(words, key=lambda w: w["confidence"]) if words else None
        metadata = dict(p["metadata"] or [])
        out.append(
            Proposal(
                pid,
                p["predicted_at"],
                p["model_version"],
                p.get("confidence"),
                least["word"] if least else None,
                p["hypothesis"],
                metadata.get("domain", ""),
                metadata.get("speaker") or user,
                p["audio_uri"],
            )
        )
    return out


def propose(
    store: ErrorStore,
    budget: int,
    *,
    now: datetime,
    label_window: timedelta,
    since: datetime | None = None,
) -> list[Proposal]:
    """At most `budget` predictions for a person to correct, made in [since, now - label_window)
    (since: 30 days before that, when not given), most worth it first (see the module)."""
    if budget < 1:
        raise InputError(f"the budget must be at least 1, not {budget}")
    settled = now - label_window
    start = since if since is not None else settled - timedelta(days=30)
    if start >= settled:
        return []
    return choose(_candidates(store, start, settled), budget)


def choose(candidates: Sequence[Proposal], budget: int) -> list[Proposal]:
    """At most `budget` of the candidates, least sure first, spread over (domain, speaker) strata:
    none takes more than `MAX_STRATUM_SHARE` of the budget while others have candidates, then the
    rest in order; a text already chosen is not chosen twice (see the module)."""
    ranked = sorted(
        candidates, key=lambda c: (c.confidence is None, c.confidence or 0.0, c.predicted_at, c.prediction_id)
    )
    strata: dict[tuple[str, str], list[Proposal]] = defaultdict(list)
    for c in ranked:
        strata[(c.domain, c.speaker)].append(c)
    share = math.ceil(budget * MAX_STRATUM_SHARE)
    chosen: list[Proposal] = []
    texts: set[str] = set()
    taken: dict[tuple[str, str], int] = defaultdict(int)
    for capped in (True, False):  # each stratum its share first, then whatever is left, in order
        for c in ranked:
            stratum = (c.domain, c.speaker)
            text = normalize(c.hypothesis)
            if len(chosen) == budget or text in texts or (capped and taken[stratum] >= share):
                continue
            chosen.append(c)
            texts.add(text)
            taken[stratum] += 1
    return sorted(chosen, key=lambda c: (c.confidence is None, c.confidence or 0.0, c.prediction_id))


def label_studio_tasks(proposals: Iterable[Proposal], audio_url: str | None = None) -> list[dict[str, Any]]:
    """A Label Studio import of the proposals (for `LABEL_CONFIG`): each task's audio (the store's
    URI, or `audio_url` + "/audio/" + its prediction id: the dashboard's audio route), its
    prediction id, and the hypothesis as a pre-annotation scored by its confidence."""
    tasks = []
    for p in proposals:
        audio = f"{audio_url.rstrip('/')}/audio/{p.prediction_id}" if audio_url else p.audio_uri
        prediction: dict[str, Any] = {
            "model_version": str(p.model_version or "unknown"),
            "result": [
                {
                    "from_name": _TEXT_FROM,
                    "to_name": _AUDIO_TO,
                    "type": "textarea",
                    "value": {"text": [p.hypothesis]},
                }
            ],
        }
        if p.confidence is not None:
            prediction["score"] = round(p.confidence, 6)
        data = {"audio": audio, "prediction_id": p.prediction_id, "domain": p.domain}
        tasks.append({"data": data, "predictions": [prediction]})
    return tasks


class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore")
    from_name: str
    type: str
    value: dict[str, Any]


class _Annotation(BaseModel):
    model_config = ConfigDict(extra="ignore")
    result: list[_Result] = []
    was_cancelled: bool = False
    completed_by: Any = None
    updated_at: datetime | None = None
    created_at: datetime | None = None


class _Task(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: int | str | None = None
    data: dict[str, Any]
    annotations: list[_Annotation] = []


def _reviewer(completed_by: Any) -> str | None:
    if isinstance(completed_by, dict):
        found = completed_by.get("email") or completed_by.get("id")
        return str(found) if found is not None else None
    return str(completed_by) if completed_by is not None else None


def read_label_studio_export(
    tasks: Sequence[Any], source: str, now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(feedback events, skipped tasks with why) from a Label Studio JSON export: each task's
    latest submitted annotation's text, about the prediction its data names, from `source`."""
    events, skipped = [], []
    for k, raw in enumerate(tasks):
        try:
            task = _Task.model_validate(raw)
        except ValidationError as exc:
            skipped.append({"task": k, "reason": f"not a Label Studio task: {exc.errors()[0]['msg']}"})
            continue
        label = task.id if task.id is not None else k
        pid = task.data.get("prediction_id")
        if not isinstance(pid, str) or not pid:
            skipped.append({"task": label, "reason": "its data names no prediction_id"})
            continue
        submitted = [a for a in task.annotations if not a.was_cancelled]
        if not submitted:
            skipped.append({"task": label, "prediction_id": pid, "reason": "no submitted annotation"})
            continue
        latest = max(submitted, key=lambda a: a.updated_at or a.created_at or now)
        texts = [
            " ".join(str(t) for t in r.value.get("text", []))
            for r in latest.result
            if r.from_name == _TEXT_FROM and r.type == "textarea"
        ]
        if not texts:
            skipped.append({"task": label, "prediction_id": pid, "reason": f"no {_TEXT_FROM!r} text area"})
            continue
        at = latest.updated_at or latest.created_at or now
        event = {"prediction_id": pid, "corrected_text": " ".join(texts), "event_time": at.isoformat()}
        by = _reviewer(latest.completed_by)
        events.append({**event, "source": source, **({"user": by} if by else {})})  # kept as a pseudonym
    return events, skipped
