"""Pseudo-labels: what the model said, taken as the label where it was sure and nobody objected.

With `dataset.pseudo_label_min_confidence` set, the builder looks at the predictions made in the
`PSEUDO_LABEL_WINDOW` before `settled` (the watermark less the label window: whoever asked has had
their chance to answer). A prediction is a candidate when nobody answered it (no feedback event of
any kind), its audio was captured, a serving process of its version signed it (where the store has
the identity key) and no forget request covers it. Candidates whose calibrated confidence (the
utterance's, `models.confidence`) reaches the threshold join the training split, the most confident
first, up to `pseudo_label_max_share` of it, each drawn `pseudo_label_weight` times as often as a
correction in training. A candidate of a user who is in the held-out split never joins (held-out
users stay unseen), and none ever enters held-out or gates anything. The audio passes the same
checks as a correction's.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from stt_flywheel.config import DatasetSettings
from stt_flywheel.data.audio import AudioLimits
from stt_flywheel.data.dataset.admission import Row, text_problem, training_audio
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.error_store.forget import Forgotten, hashed_id
from stt_flywheel.data.identity import ANONYMOUS

__all__ = ["PSEUDO_LABEL_SOURCE", "PSEUDO_LABEL_WINDOW", "add_pseudo_labels"]

PSEUDO_LABEL_SOURCE = "pseudo-label"
PSEUDO_LABEL_WINDOW = timedelta(days=7)


def _candidates(store: ErrorStore, settled: datetime, stats: dict[str, Any]) -> list[dict[str, Any]]:
    """The window's predictions nobody answered, with audio, signed, not forgotten."""
    predictions = store.predictions(settled - PSEUDO_LABEL_WINDOW, settled).to_pylist()
    answered = set(store.feedback_for([p["prediction_id"] for p in predictions])["prediction_id"].to_pylist())
    forgotten = Forgotten.load(store)
    identity = store.senders.identity_or_none()
    out = []
    for p in predictions:
        pid, user = p["prediction_id"], p["user"] or ANONYMOUS
        if (
            pid in answered
            or not p["audio_uri"]
            or (forgotten and (user in forgotten.users or hashed_id(pid) in forgotten.predictions))
            or (
                identity is not None
                and not identity.signed(p["model_version"], pid, user, p["hypothesis"], p["signature"])
            )
        ):
            stats["not_eligible"] += 1
            continue
        out.append(p)
    return out


def add_pseudo_labels(
    store: ErrorStore,
    train: list[Row],
    settings: DatasetSettings,
    *,
    settled: datetime | None,
    heldout: Callable[[str], bool],
    protected: set[str] | frozenset[str],
    model_window_s: float | None,
    target_check: Callable[[str], str | None] | None = None,
) -> dict[str, Any]:
    """Pseudo-labels appended to `train` (see the module); what was looked at and used.
    `heldout(split_key)`: whether a user (or, without one, an audio hash) is in the held-out split."""
    minimum = settings.pseudo_label_min_confidence
    stats: dict[str, Any] = {"enabled": minimum is not None, "predictions": 0, "not_eligible": 0}
    if minimum is None or settled is None or not train:
        return stats
    stats |= {"candidates": 0, "below_confidence": 0, "held_out_users": 0, "invalid": 0, "duplicates": 0}
    candidates = _candidates(store, settled, stats)
    stats["predictions"] = stats["not_eligible"] + len(candidates)
    stats["candidates"] = len(candidates)
    sure = [p for p in candidates if p.get("confidence") is not None and p["confidence"] >= minimum]
    stats["below_confidence"] = len(candidates) - len(sure)
    sure.sort(key=lambda p: (-p["confidence"], p["prediction_id"]))
    share = settings.pseudo_label_max_share
    cap = math.floor(len(train) * share / (1 - share))
    taken = {r.sha for r in train}
    limits = AudioLimits.of(store.root, settings)
    used: list[tuple[Row, float]] = []
    for p in sure:
        if len(used) >= cap:
            break
        user = p["user"] or ANONYMOUS
        if user != ANONYMOUS and heldout(user):
            stats["held_out_users"] += 1
            continue
        text = " ".join(p["hypothesis"].split())
        meta = dict(p["metadata"] or [])
        language, refused = text_problem(text, p["audio_uri"], meta, target_check)
        audio, sha, problem = (
            (None, "", refused)
            if refused
            else training_audio(p["audio_uri"], limits, settings, model_window_s, protected)
        )
        if audio is None or problem:
            stats["invalid"] += 1
            continue
        if user == ANONYMOUS and heldout(sha):
            stats["held_out_users"] += 1
            continue
        if sha in taken:  # its audio is a correction's, or another pseudo-label's
            stats["duplicates"] += 1
            continue
        taken.add(sha)
        speaker, domain = meta.get("speaker", ""), meta.get("domain", "")
        row = Row(p["prediction_id"], text, audio, sha, PSEUDO_LABEL_SOURCE, speaker, domain, language, user)
        row.weight = settings.pseudo_label_weight
        used.append((row, float(p["confidence"])))
    train.extend(r for r, _ in used)
    confidences = [c for _, c in used]
    stats |= {
        "used": len(used),
        "share_of_train": len(used) / len(train),
        "mean_confidence": sum(confidences) / len(confidences) if confidences else None,
        "min_confidence": min(confidences, default=None),
        "domains": dict(Counter(r.domain for r, _ in used)),
    }
    return stats
