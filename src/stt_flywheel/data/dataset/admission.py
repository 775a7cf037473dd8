"""Which corrections may teach the model: each read, then accepted, a duplicate, or quarantined
with a reason; replay mixed in against forgetting."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stt_flywheel.config import DatasetSettings
from stt_flywheel.data.audio import (
    AudioLimits,
    AudioRejected,
    DecodedAudio,
    at_rate,
    audio_hash,
    load_audio,
    read_training_audio,
    validate_audio,
)
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.error_store.forget import Forgotten, hashed_id
from stt_flywheel.data.identity import ANONYMOUS
from stt_flywheel.data.manifest import Utterance, read_manifest
from stt_flywheel.data.review import Screen, decisions
from stt_flywheel.scoring.languages import language_code
from stt_flywheel.scoring.text import normalize

__all__ = [
    "Admission",
    "Row",
    "add_replay",
    "admit_corrections",
    "audio_problem",
    "text_problem",
    "training_audio",
]


@dataclass
class Row:
    id: str
    text: str
    audio: DecodedAudio
    sha: str
    source: str
    speaker: str
    domain: str
    language: str = ""  # the record's `language` metadata ("de"); empty: the configured default
    user: str = ANONYMOUS  # the requester's pseudonym (replay: none)
    event_id: str = ""  # the feedback event that taught it (replay: none)
    event_source: str = ""  # the system that sent that event
    weight: float = 1.0  # how often training draws it against a correction (pseudo-labels: less)

    @property
    def split_key(self) -> str:
        """What decides the row's split: its user, so that no user is in both splits; audio
        without a known user (anonymous, replay) by its hash."""
        return self.user if self.user != ANONYMOUS else self.sha


@dataclass
class Admission:
    """The corrections read: the rows accepted, the counts (which balance), what was quarantined."""

    rows: list[Row] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    quarantine: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, rec_id: str, code: str, detail: str) -> None:
        self.counts["quarantined"] += 1
        self.reasons[code] += 1
        self.quarantine.append({"id": rec_id, "reason": code, "detail": detail})

    def cap_users(self, rows: list[Row], max_share: float) -> list[Row]:
        """`rows` with no user holding more than `max_share` of them: each user keeps at most k
        rows (those first by audio hash), k the largest that keeps every share within the bound.
        The rows left out move from accepted to quarantined (`over_user_share`). Anonymous rows
        are one user."""
        by_user: dict[str, list[Row]] = {}
        for row in sorted(rows, key=lambda r: r.sha):
            by_user.setdefault(row.user, []).append(row)
        sizes = [len(v) for v in by_user.values()]

        def fits(k: int) -> bool:  # the largest user, k rows, within the share of what is kept
            return k <= max_share * sum(min(n, k) for n in sizes)

        lo, hi = 0, max(sizes, default=0)
        while lo < hi:  # sum(min(n, k)) / k falls as k grows: the first k that does not fit
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        kept = [r for group in by_user.values() for r in group[:lo]]
        for user, group in by_user.items():
            for r in group[lo:]:
                self.counts["accepted"] -= 1
                who = "anonymous users" if user == ANONYMOUS else f"user {user[:8]}…"
                self.reject(
                    r.id,
                    "over_user_share",
                    f"{who} sent {len(group)}; each user keeps at most {lo} ({max_share:.0%} of the training split)",
                )
        return kept


def audio_problem(
    audio: DecodedAudio,
    sample_rate: int,
    model_window_s: float | None,
    protected: set[str] | frozenset[str],
    sha: str,
    **durations: float,
) -> tuple[str, str] | None:
    """(reason code, detail) of the first rule this audio breaks, or None: decodable and sane
    (`validate_audio`, with `durations` when given), within the model's window, not protected."""
    problem = validate_audio(audio, sample_rate=sample_rate, **durations)
    if problem:
        return problem.code, problem.detail
    if model_window_s is not None and audio.duration_s > model_window_s:
        return (
            "too_long_for_model",
            f"{audio.duration_s:.2f} s > the model's {model_window_s:g} s window (one transcript, "
            "no word timings to cut it by)",
        )
    if sha in protected:
        return "protected_audio", "audio belongs to an evaluation or regression set"
    return None


def training_audio(
    uri: str,
    limits: AudioLimits,
    settings: DatasetSettings,
    model_window_s: float | None,
    protected: set[str] | frozenset[str],
) -> tuple[DecodedAudio | None, str, tuple[str, str] | None]:
    """A record's audio as training would take it: (the audio at the dataset's rate, or None when
    it cannot be read; its hash; the first rule it breaks, or None). The reader's bounds
    (`AudioLimits`), `validate_audio` with the configured durations, the model's window, and the
    protected sets apply."""
    try:
        audio = at_rate(read_training_audio(uri, limits), settings.sample_rate)
    except AudioRejected as exc:
        return None, "", (exc.code, exc.detail)
    sha = audio_hash(audio.samples)
    problem = audio_problem(
        audio,
        settings.sample_rate,
        model_window_s,
        protected,
        sha,
        min_duration_s=settings.min_duration_s,
        max_duration_s=settings.max_duration_s,
    )
    return audio, sha, problem


def _remembered(store: ErrorStore, errors: Iterable[Any], counts: Counter[str]) -> Iterator[Any]:
    """The error cases no forget request covers (its rows may still be on their way out of the
    store); the others are counted as `forgotten`."""
    forgotten = Forgotten.load(store)
    for prediction, event, kind in errors:
        if forgotten and (
            prediction["user"] in forgotten.users
            or hashed_id(prediction["prediction_id"]) in forgotten.predictions
        ):
            counts["forgotten"] += 1
            continue
        yield prediction, event, kind


def admit_corrections(
    store: ErrorStore,
    settings: DatasetSettings,
    watermark: datetime | None,
    protected: set[str] | frozenset[str],
    model_window_s: float | None,
    target_check: Callable[[str], str | None] | None = None,
    screen: Screen | None = None,
) -> Admission:
    """Every corrected error case up to the watermark, accepted, a duplicate, or quarantined;
    one that `screen` holds waits for review (`held_for_review`) unless a person accepted it."""
    limits = AudioLimits.of(store.root, settings)
    out = Admission()
    seen: dict[str, str] = {}
    decided = decisions(store) if screen is not None else {}
    for prediction, event, kind in _remembered(store, store.errors(upto=watermark), out.counts):
        if kind != "corrected":
            out.counts["uncorrected_error_cases"] += 1
            continue
        out.counts["read"] += 1
        rec_id = prediction["prediction_id"]
        # kept as the user wrote it (whitespace collapsed): a model that writes casing and
        # punctuation learns them from here; the CTC collator normalises for its own vocabulary
        text = " ".join(str(event["corrected_text"]).split())
        held = _review_problem(screen, decided, store.senders.reviewer_sources, prediction, event)
        if held:
            out.reject(rec_id, *held)
            continue
        meta = dict(prediction["metadata"] or [])
        language, refused = text_problem(text, prediction["audio_uri"], meta, target_check)
        if refused:
            out.reject(rec_id, *refused)
            continue
        audio, sha, problem = training_audio(
            prediction["audio_uri"], limits, settings, model_window_s, protected
        )
        if audio is not None and problem is None:
            problem = _rate_problem(text, audio.duration_s, settings.max_words_per_second)
        if problem or audio is None:
            out.reject(rec_id, *(problem or ("unreadable_audio", "the audio could not be read")))
        elif sha in seen and seen[sha] == text:
            out.counts["duplicates"] += 1
        elif sha in seen:
            out.reject(rec_id, "conflicting_correction", f"same audio already corrected as {seen[sha]!r}")
        else:
            seen[sha] = text
            out.counts["accepted"] += 1
            speaker, domain = meta.get("speaker", ""), meta.get("domain", "")
            out.rows.append(
                Row(
                    rec_id,
                    text,
                    audio,
                    sha,
                    "correction",
                    speaker,
                    domain,
                    language,
                    prediction["user"] or ANONYMOUS,
                    event["event_id"],
                    event["source"],
                )
            )
    for key in ("read", "accepted", "duplicates", "quarantined", "uncorrected_error_cases"):
        out.counts.setdefault(key, 0)
    return out


def _review_problem(
    screen: Screen | None,
    decided: dict[str, dict[str, Any]],
    reviewers: frozenset[str],
    prediction: dict[str, Any],
    event: dict[str, Any],
) -> tuple[str, str] | None:
    """(`held_for_review` or `rejected_in_review`, why) for a correction a person must see or
    has refused; None for one from a reviewer, one a person accepted, or an unsuspicious one."""
    decision = decided.get(event["event_id"], {}).get("decision")
    if decision == "rejected":
        return "rejected_in_review", str(decided[event["event_id"]].get("reason", ""))[:200]
    if screen is None or decision == "accepted" or event["source"] in reviewers:
        return None
    reasons = screen.reasons(prediction["hypothesis"], event["corrected_text"], prediction["duration_s"])
    return ("held_for_review", ", ".join(reasons)) if reasons else None


def text_problem(
    text: str, audio_uri: str | None, meta: dict[str, str], target_check: Callable[[str], str | None] | None
) -> tuple[str, tuple[str, str] | None]:
    """(the record's language as a code, "" for the default; the first rule its text or metadata
    breaks, or None), before any audio is read."""
    if not normalize(text):
        return "", ("empty_transcript", "the corrected transcript is empty after normalisation")
    if not audio_uri:
        return "", ("audio_not_captured", "the prediction was captured without its audio")
    named = str(meta.get("language") or "")
    language = language_code(named) if named else ""
    if language is None:
        return "", ("unknown_language", f"language {named[:40]!r} is not one the model knows")
    too_long = target_check(text) if target_check is not None else None
    return language, (("too_long_for_model", too_long) if too_long else None)


def _rate_problem(text: str, duration_s: float, max_rate: float | None) -> tuple[str, str] | None:
    words = len(text.split())
    if max_rate is None or words <= max_rate * duration_s + 2:
        return None
    return (
        "implausible_words_per_second",
        f"{words} words in {duration_s:.2f} s of audio (at most {max_rate:g} per second, plus two)",
    )


def add_replay(
    train: list[Row],
    settings: DatasetSettings,
    protected: set[str] | frozenset[str],
    model_window_s: float | None,
) -> dict[str, int]:
    """General-domain replay appended to `train`, `replay_share` of the result; its counts."""
    stats = {"available": 0, "used": 0, "excluded_protected": 0, "invalid": 0}
    if not (settings.replay_manifest and settings.replay_share > 0 and train):
        return stats
    candidates: list[Utterance] = list(read_manifest(settings.replay_manifest))
    stats["available"] = len(candidates)
    wanted = round(len(train) * settings.replay_share / (1 - settings.replay_share))
    random.Random(settings.seed).shuffle(candidates)
    for utt in candidates:
        if stats["used"] >= wanted:
            break
        audio = load_audio(utt.audio, settings.sample_rate)
        sha = audio_hash(audio.samples)
        if sha in protected:
            stats["excluded_protected"] += 1
        elif audio_problem(audio, settings.sample_rate, model_window_s, frozenset(), sha) or not normalize(
            utt.text
        ):
            stats["invalid"] += 1
        else:
            text = " ".join(utt.text.split())
            train.append(
                Row(utt.id, text, audio, sha, "replay", utt.speaker or "", utt.domain or "", user="")
            )
            stats["used"] += 1
    return stats
