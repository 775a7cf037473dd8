"""Pseudo-labels: off by default; on, the confident predictions nobody answered join the training
split with their weight, never the held-out split, never from a held-out user; the trainer draws
them by it."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stt_flywheel.config import DatasetSettings
from stt_flywheel.data.dataset import build_dataset, load_split, split_of
from stt_flywheel.data.error_store import ErrorStore, Senders
from stt_flywheel.data.identity import Identity
from stt_flywheel.data.manifest import Utterance
from stt_flywheel.data.records import new_prediction_id

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
KEY = Identity(b"q" * 32)
SETTINGS = {"audio_roots": [tempfile.gettempdir()], "max_user_share": 1.0, "holdout_fraction": 0.3}


def _users(holdout_fraction: float) -> tuple[str, str]:
    """A user in the training split and one in the held-out split (by their pseudonyms)."""
    names = [f"user-{k}" for k in range(100)]
    train = next(u for u in names if split_of(KEY.pseudonym(u), holdout_fraction) == "train")
    held = next(u for u in names if split_of(KEY.pseudonym(u), holdout_fraction) == "heldout")
    return train, held


def _captured(
    utt: Utterance, user: str, confidence: float | None, *, signed: bool = True, hours: float = 30
) -> dict:
    at = NOW - timedelta(hours=hours)
    pid, who = new_prediction_id(at), KEY.pseudonym(user)
    return {
        "prediction_id": pid,
        "predicted_at": at,
        "model_version": "1",
        "endpoint": "stt",
        "hypothesis": utt.text,
        "metadata": {"domain": utt.domain or "", "speaker": utt.speaker or ""},
        "user": who,
        "duration_s": 2.0,
        "audio_uri": utt.audio,
        "audio_sha256": None,
        "signature": KEY.sign("1", pid, who, utt.text) if signed else "forged",
        "confidence": confidence,
        "words": None,
    }


@pytest.fixture
def store(tmp_path: Path, new_utts: list[Utterance], general_utts: list[Utterance]) -> ErrorStore:
    """Corrections of the new domain from a training user (what a dataset is built from), and
    general-domain predictions nobody answered: confident, unsure, of a held-out user, unsigned,
    too recent, or answered."""
    store = ErrorStore(tmp_path / "store", senders=Senders(KEY))
    trainee, held = _users(SETTINGS["holdout_fraction"])
    corrected = [_captured(u, trainee, 0.2) for u in new_utts[:6]]
    rows = [
        *corrected,
        *(_captured(u, trainee, 0.95 - 0.01 * k) for k, u in enumerate(general_utts[:5])),
        _captured(general_utts[5], trainee, 0.4),  # unsure
        _captured(general_utts[6], held, 0.99),  # a held-out user's
        _captured(general_utts[7], trainee, 0.99, signed=False),
        _captured(general_utts[8], trainee, 0.99, hours=2),  # its label window is still open
        _captured(general_utts[9], trainee, 0.99),  # answered below
        _captured(general_utts[10], trainee, None),  # captured before confidence
    ]
    store.write_predictions(rows, now=NOW - timedelta(hours=1))
    events = [
        {
            "prediction_id": r["prediction_id"],
            "corrected_text": u.text + " please",
            "source": "app",
            "user": trainee,
        }
        for r, u in zip(corrected, new_utts, strict=False)
    ]
    events.append(
        {"prediction_id": rows[-2]["prediction_id"], "flagged": True, "source": "app", "user": trainee}
    )
    result = store.ingest_feedback([{**e, "event_time": NOW.isoformat()} for e in events], now=NOW)
    assert result.accepted == len(events)
    return store


def test_pseudo_labels_are_off_by_default(tmp_path: Path, store: ErrorStore) -> None:
    manifest = build_dataset(
        store, tmp_path / "ds", DatasetSettings(**SETTINGS), watermark=NOW, settled=NOW - timedelta(hours=24)
    )
    assert manifest.pseudo_labels == {"enabled": False, "predictions": 0, "not_eligible": 0}
    assert {r["source"] for r in load_split(tmp_path / "ds", "train")} == {"correction"}
    assert "Pseudo-labels" not in manifest.to_markdown()


def test_confident_unanswered_predictions_join_training_only(
    tmp_path: Path, store: ErrorStore, general_utts: list[Utterance]
) -> None:
    settings = DatasetSettings(**SETTINGS, pseudo_label_min_confidence=0.9, pseudo_label_weight=0.25)
    manifest = build_dataset(
        store, tmp_path / "ds", settings, watermark=NOW, settled=NOW - timedelta(hours=24)
    )
    train, heldout = load_split(tmp_path / "ds", "train"), load_split(tmp_path / "ds", "heldout")
    pseudo = [r for r in train if r["source"] == "pseudo-label"]
    corrections = [r for r in train if r["source"] == "correction"]
    # a share of 0.5 of train allows as many as the corrections: the five confident ones join
    assert len(corrections) == 6 and {r["text"] for r in pseudo} == {u.text for u in general_utts[:5]}
    assert all(r["weight"] == 0.25 for r in pseudo) and all(r["weight"] == 1.0 for r in corrections)
    assert not [r for r in heldout if r["source"] == "pseudo-label"]
    stats = manifest.pseudo_labels
    assert stats["used"] == 5 and stats["below_confidence"] == 2 and stats["held_out_users"] == 1
    assert stats["not_eligible"] == 1 + 6 + 1  # unsigned; the corrected ones; the flagged one
    assert stats["share_of_train"] == pytest.approx(5 / 11)
    assert stats["mean_confidence"] == pytest.approx(0.93) and stats["domains"] == {"general": 5}
    assert "5 pseudo-labels joined the training split" in manifest.to_markdown()
    # a smaller share keeps the most confident
    capped = DatasetSettings(**SETTINGS, pseudo_label_min_confidence=0.9, pseudo_label_max_share=0.25)
    build_dataset(store, tmp_path / "ds2", capped, watermark=NOW, settled=NOW - timedelta(hours=24))
    kept = [r["text"] for r in load_split(tmp_path / "ds2", "train") if r["source"] == "pseudo-label"]
    assert set(kept) == {u.text for u in general_utts[:2]}  # the two most confident


def test_the_trainer_draws_each_example_by_its_weight(tmp_path: Path) -> None:
    import torch
    from transformers import TrainingArguments

    from stt_flywheel.models.training import _Examples, _WeightedTrainer

    examples = [{"text": "a", "weight": 1.0}, {"text": "b", "weight": 0.25}]
    args = TrainingArguments(output_dir=str(tmp_path), seed=3, report_to=[], use_cpu=True)
    trainer = _WeightedTrainer(
        model=torch.nn.Linear(1, 1), args=args, train_dataset=_Examples(examples * 2000)
    )
    drawn = [examples[i % 2]["text"] for i in trainer._get_train_sampler()]
    assert len(drawn) == 4000
    assert drawn.count("a") / drawn.count("b") == pytest.approx(4.0, rel=0.15)
    plain = _WeightedTrainer(
        model=torch.nn.Linear(1, 1), args=args, train_dataset=_Examples([{"text": "a"}] * 10)
    )
    assert not isinstance(plain._get_train_sampler(), torch.utils.data.WeightedRandomSampler)
