"""The pages about what people said: one utterance — its audio, what the model heard against what
the user wrote, its feedback, the versions that answered or learnt from it (`/utterances/ID`) —
and the corrections held for review, with accept and reject (`/review`)."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.data.review import Screen, decisions, held_corrections
from stt_flywheel.deployment.backends import open_registry
from stt_flywheel.errors import InputNotFound
from stt_flywheel.reporting import table
from stt_flywheel.scoring.alignment import align_pairs
from stt_flywheel.scoring.text import get_normalizer
from stt_flywheel.ui.kit import Html, facts, frame, link, para, scrolling, section
from stt_flywheel.ui.queries import dataset_uses, feedback_history, find_prediction

__all__ = ["aligned", "review_page", "utterance_page"]

_OPS = {"S": "sub", "D": "del", "I": "ins"}


def aligned(hypothesis: str, correction: str, normalizer: str) -> Html:
    """What the model heard against what the user wrote, word by word (normalised as scored):
    the correction's words, a substituted word with what was heard, missed words struck, added
    words marked."""
    norm = get_normalizer(normalizer)
    [al] = align_pairs([norm(correction)], [norm(hypothesis)])
    words = []
    for op, ref, hyp in al.steps:
        if op == "C":
            words.append(html.escape(ref or ""))
        elif op == "S":
            words.append(
                f"<span class='sub' title='heard: {html.escape(hyp or '')}'>{html.escape(ref or '')} "
                f"({html.escape(hyp or '')})</span>"
            )
        elif op == "D":
            words.append(f"<span class='del' title='missed'>{html.escape(ref or '')}</span>")
        else:
            words.append(f"<span class='ins' title='added'>+{html.escape(hyp or '')}</span>")
    counts = al.counts()
    said = ", ".join(
        f"{counts.get(k, 0)} {name}" for k, name in (("S", "substituted"), ("D", "missed"), ("I", "added"))
    )
    return Html(
        f"<p class='ops'>{' '.join(words)}</p><p class='meta'>{said} (normaliser {html.escape(normalizer)})</p>"
    )


def utterance_page(config: FlywheelConfig, prediction_id: str) -> str:
    store = open_error_store(config)
    p = find_prediction(store, prediction_id)
    if p is None:
        raise InputNotFound(
            f"no prediction {prediction_id} in the store (forgotten, expired or never captured)"
        )
    events = feedback_history(store, p)
    latest = next((e for e in reversed(events) if e["corrected_text"] is not None), None)
    version = p["model_version"]
    known: list[tuple[str, Any]] = [
        ("predicted at", f"{p['predicted_at']:%Y-%m-%d %H:%M:%S} UTC"),
        (
            "answered by",
            link(f"/versions/{version}", f"v{version}") if version and version.isdigit() else version or "–",
        ),
        ("user (pseudonym)", (p["user"] or "anonymous")[:12]),
        ("duration", f"{p['duration_s']:.2f} s" if p["duration_s"] is not None else "–"),
        ("metadata", ", ".join(f"{k}={v}" for k, v in (p["metadata"] or [])) or "–"),
        ("signed by a serving process", "yes" if p["signature"] else "no"),
    ]
    parts: list[Any] = []
    if p["audio_uri"]:
        parts.append(
            Html(
                f"<audio controls preload='metadata' src='/audio/{html.escape(quote(prediction_id, safe=''))}'></audio>"
            )
        )
    parts.append(facts(known))
    parts.append(section("Heard", para(p["hypothesis"])))
    if latest is not None:
        parts.append(
            section(
                "Corrected (the latest correction wins)",
                para(latest["corrected_text"]),
                aligned(p["hypothesis"], latest["corrected_text"], config.validation.normalizer),
            )
        )
    rows: list[tuple[Any, ...]] = [
        (
            f"{e['event_time']:%Y-%m-%d %H:%M:%S}",
            f"{e['ingested_at']:%Y-%m-%d %H:%M:%S}",
            e["source"],
            "yes" if e["reviewer"] else "",
            "yes" if e["flagged"] else "",
            e["corrected_text"] or "–",
        )
        for e in events
    ]
    parts.append(
        section(
            "Feedback, in arrival order",
            scrolling(
                table(["event time (UTC)", "arrived", "source", "reviewer", "flagged", "correction"], rows)
            )
            if rows
            else para("none yet"),
        )
    )
    review = {d["prediction_id"]: d for d in decisions(store).values()}.get(prediction_id)
    if review:
        parts.append(
            para(f"Review: {review['decision']} by {review['by']} at {review['at'][:16]}: {review['reason']}")
        )
    parts.append(_learnt_from(config, prediction_id))
    return frame(f"Utterance {prediction_id}", parts)


def _learnt_from(config: FlywheelConfig, prediction_id: str) -> Html:
    """The datasets that hold the prediction, in which split, and the versions trained on each."""
    rows = [
        (
            link(f"/datasets/{u.dataset}", u.dataset),
            u.split,
            Html(", ".join(str(link(f"/versions/{v}", f"v{v}")) for v in u.versions) or "none"),
        )
        for u in dataset_uses(config, open_registry(config), prediction_id)
    ]
    table_or_none = (
        scrolling(table(["dataset", "split", "versions trained on it"], rows))
        if rows
        else para("No dataset holds it.")
    )
    return section("Learnt from it", table_or_none)


def review_page(config: FlywheelConfig, done: str = "") -> str:
    """Each held correction with a form to accept or reject it (a reason is required)."""
    store = open_error_store(config)
    held = list(held_corrections(store, Screen.of(config)))
    parts: list[Any] = [
        para(
            "Corrections far from what the model heard, or that take a critical term away, wait "
            "here; accepted ones may teach the model, rejected ones never will. Each decision is "
            "recorded with who made it and why, and in the registry's audit log.",
            cls="meta",
        )
    ]
    if done:
        parts.append(para(done, cls="ok"))
    if not held:
        parts.append(para("No correction is held for review."))
    for h in held:
        form = (
            f"<form method='post' action='/review/{html.escape(quote(h.prediction_id, safe=''))}'>"
            "<input type='text' name='reason' required placeholder='why' aria-label='reason'> "
            "<button name='decision' value='accept'>Accept</button> "
            "<button name='decision' value='reject'>Reject</button></form>"
        )
        parts.append(
            section(
                f"Held since {h.event_time:%Y-%m-%d %H:%M}",
                para(
                    link(f"/utterances/{quote(h.prediction_id, safe='')}", h.prediction_id),
                    f" · from {h.user[:12]} · held: " + ", ".join(h.reasons),
                ),
                aligned(h.hypothesis, h.corrected_text, config.validation.normalizer),
                Html(form),
            )
        )
    return frame("Review", parts, here="/review")
