"""Corrections that look like an attack, or a slip, wait for a person instead of teaching the model.

A correction is *held* when it is far from what the model heard (`feedback.max_edit_ratio`, the
normalised character edit distance), when it takes away a critical term the model had heard
(`validation.critical_terms`: the word a targeted swap replaces), or when it has more words than
its audio could hold (`dataset.max_words_per_second`, by the duration serving measured). Holding is judged when the
store is read, by `screen`, so it covers history and events that arrived before their
prediction. The dataset builder quarantines a held correction (`held_for_review`); a person
lists them (`stt-flywheel review list`), accepts one (a reviewer's event with the same words,
which then applies and is not screened again) or rejects it (it never trains). Every decision
is a line in the store's `review` stream: who, when, why.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import orjson
from rapidfuzz.distance import Levenshtein

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.error_store.layout import utc_now
from stt_flywheel.errors import InputError
from stt_flywheel.scoring.text import normalize

__all__ = ["REVIEW_SOURCE", "HeldCorrection", "Screen", "decide", "decisions", "held_corrections"]

REVIEW_SOURCE = "review"  # the source of the event an accepted correction becomes


@dataclass(frozen=True)
class Screen:
    """What makes a correction suspicious."""

    max_edit_ratio: float | None = 0.8
    critical_terms: Sequence[str] = ()
    max_words_per_second: float | None = None

    @classmethod
    def of(cls, config: FlywheelConfig) -> Screen:
        """The configured screen: `feedback.max_edit_ratio`, `validation.critical_terms`,
        `dataset.max_words_per_second`."""
        return cls(
            config.feedback.max_edit_ratio,
            tuple(config.validation.critical_terms),
            config.dataset.max_words_per_second,
        )

    def reasons(self, hypothesis: str, corrected: str, duration_s: float | None = None) -> list[str]:
        """Why this correction of `hypothesis` (of audio `duration_s` long, where known) should
        wait for a person; empty when it need not."""
        heard, meant = normalize(hypothesis), normalize(corrected)
        out = []
        rate = self.max_words_per_second
        if rate is not None and duration_s is not None and len(meant.split()) > rate * duration_s + 2:
            out.append("implausible_words_per_second")
        if (
            self.max_edit_ratio is not None
            and Levenshtein.normalized_distance(heard, meant) > self.max_edit_ratio
        ):
            out.append("far_from_hypothesis")
        critical = {t.lower() for t in self.critical_terms}
        if critical & set(heard.split()) - set(meant.split()):
            out.append("critical_term_replaced")
        return out


@dataclass(frozen=True)
class HeldCorrection:
    prediction_id: str
    event_id: str
    user: str  # the sender's pseudonym
    hypothesis: str
    corrected_text: str
    reasons: list[str]
    event_time: datetime

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decisions(store: ErrorStore) -> dict[str, dict[str, Any]]:
    """The latest review decision per event id: `{"decision": "accepted"|"rejected", …}`."""
    out: dict[str, dict[str, Any]] = {}
    for _, key in store.list_files("review", ext=".jsonl"):
        found = store.store.read(key)
        for line in found.data.splitlines() if found is not None else []:
            entry = orjson.loads(line)
            out[entry["event_id"]] = entry
    return out


def held_corrections(store: ErrorStore, screen: Screen) -> Iterator[HeldCorrection]:
    """Each applied correction that the screen holds and no one has decided, oldest first."""
    decided = decisions(store)
    trusted = store.senders.reviewer_sources
    held = []
    for prediction, event, kind in store.errors():
        if kind != "corrected" or event["source"] in trusted or event["event_id"] in decided:
            continue
        reasons = screen.reasons(prediction["hypothesis"], event["corrected_text"], prediction["duration_s"])
        if reasons:
            held.append(
                HeldCorrection(
                    prediction["prediction_id"],
                    event["event_id"],
                    event["user"] or "anonymous",
                    prediction["hypothesis"],
                    event["corrected_text"],
                    reasons,
                    event["event_time"],
                )
            )
    yield from sorted(held, key=lambda h: (h.event_time, h.prediction_id))


def decide(
    store: ErrorStore,
    screen: Screen,
    prediction_ids: Sequence[str],
    *,
    accept: bool,
    reason: str,
    by: str,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Accept or reject held corrections, named by prediction id; returns the decisions made.
    An id that names no held correction is an error that changes nothing."""
    if not reason.strip():
        raise InputError("a review decision needs --reason")
    if accept and REVIEW_SOURCE not in store.senders.reviewer_sources:
        raise InputError(
            f"feedback.reviewer_sources lacks {REVIEW_SOURCE!r}: an accepted correction could not apply"
        )
    now = now or utc_now()
    held = {h.prediction_id: h for h in held_corrections(store, screen)}
    unknown = [p for p in prediction_ids if p not in held]
    if unknown:
        raise InputError(f"no held correction for {', '.join(unknown[:5])} (`stt-flywheel review list`)")
    made: list[dict[str, Any]] = []
    for pid in dict.fromkeys(prediction_ids):
        h = held[pid]
        made.append(
            {
                "event_id": h.event_id,
                "prediction_id": pid,
                "decision": "accepted" if accept else "rejected",
                "reasons": h.reasons,
                "reason": reason,
                "by": by,
                "at": now.isoformat(),
            }
        )
    # the decision first: an accepted correction trains on it alone, even if the process dies
    # before the reviewer's event below is written
    store.write_lines("review", [orjson.dumps(e) for e in made], now)
    if accept:  # the reviewer says the same words: the label live quality sees from now on
        events = [
            {
                "prediction_id": pid,
                "corrected_text": held[pid].corrected_text,
                "event_time": now.isoformat(),
                "source": REVIEW_SOURCE,
            }
            for pid in dict.fromkeys(prediction_ids)
        ]
        store.ingest_feedback(events, now=now)
    return made
