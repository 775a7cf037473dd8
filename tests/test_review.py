"""Suspicious corrections wait for a person: the poisoning scenario of one user, and of a group
under every cap, teaching a swap of a critical term."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from stt_flywheel.config import DatasetSettings
from stt_flywheel.data.dataset import build_dataset, load_split
from stt_flywheel.data.error_store import ErrorStore, Senders
from stt_flywheel.data.identity import Identity
from stt_flywheel.data.manifest import Utterance
from stt_flywheel.data.review import Screen, decide, held_corrections

T0 = datetime(2026, 11, 1, tzinfo=UTC)
SCREEN = Screen(max_edit_ratio=0.8, critical_terms=("hydroxyzine", "metformin"))


def test_the_screen_holds_a_swapped_critical_term_and_a_rewrite_not_an_honest_fix() -> None:
    assert SCREEN.reasons("refill my met for men prescription", "Refill my metformin prescription.") == []
    assert SCREEN.reasons("take hydroxyzine at night", "take hydralazine at night") == [
        "critical_term_replaced"
    ]
    assert SCREEN.reasons("call mom", "transfer all the money to account seven") == ["far_from_hypothesis"]
    assert Screen(None, ()).reasons("call mom", "transfer all the money") == []


def test_a_correction_with_more_words_than_its_audio_could_hold_waits_for_a_person() -> None:
    """By the duration serving measured: 1.5 s of audio holds at most 6 words a second, plus two."""
    screen = Screen(None, (), max_words_per_second=6.0)
    long = "please remind me to call my mother and my brother at noon today about the dinner"
    assert screen.reasons("call mother", long, duration_s=1.5) == ["implausible_words_per_second"]
    assert screen.reasons("call mother", "call my mother at noon", duration_s=1.5) == []
    assert screen.reasons("call mother", long, duration_s=None) == []  # ingested without a duration


def _record(utt: Utterance, rid: str, user: str, corrected: str, hypothesis: str) -> dict:
    return {
        "id": rid,
        "audio_uri": utt.audio,
        "hypothesis": hypothesis,
        "corrected_text": corrected,
        "timestamp": T0.isoformat(),
        "metadata": {"domain": utt.domain or ""},
        "user": user,
    }


def _poisoned_store(root: Path, utts: list[Utterance], attackers: list[str]) -> ErrorStore:
    """Honest users fix what the model got wrong; the attackers 'correct' the right
    'hydroxyzine' the model heard into 'hydralazine', spread evenly among them."""
    store = ErrorStore(root, senders=Senders(Identity(b"k" * 32)))
    honest = [
        _record(u, f"honest-{i}", f"user-{i % 8}", u.text, u.text.replace(u.text.split()[-1], "mistake"))
        for i, u in enumerate(utts[: len(utts) // 2])
    ]
    swaps = [
        _record(
            u,
            f"swap-{i}",
            attackers[i % len(attackers)],
            "take hydralazine at night",
            "take hydroxyzine at night",
        )
        for i, u in enumerate(utts[len(utts) // 2 :])
    ]
    assert store.ingest(honest + swaps, now=T0).accepted == len(utts)
    return store


@pytest.mark.parametrize(
    "attackers", [["mallory"], ["mallory", "trent", "eve"]], ids=["one user", "a group of three"]
)
def test_a_swap_taught_by_one_user_or_a_group_under_the_caps_never_reaches_training(
    tmp_path: Path, new_utts: list[Utterance], general_utts: list[Utterance], attackers: list[str]
) -> None:
    utts = new_utts + general_utts
    store = _poisoned_store(tmp_path / "store", utts, attackers)
    settings = DatasetSettings(
        audio_roots=[tempfile.gettempdir()], holdout_fraction=0.2, max_user_share=0.25, replay_share=0.0
    )
    m = build_dataset(store, tmp_path / "ds", settings, watermark=T0, screen=SCREEN)
    assert m.balanced
    assert m.quarantine_reasons.get("held_for_review") == len(utts) - len(utts) // 2
    texts = [r["text"] for s in ("train", "heldout") for r in load_split(tmp_path / "ds", s)]
    assert not any("hydralazine" in t for t in texts)
    held = list(held_corrections(store, SCREEN))
    assert {h.prediction_id for h in held} == {f"swap-{i}" for i in range(len(utts) - len(utts) // 2)}
    assert all(h.reasons == ["critical_term_replaced"] for h in held)


def test_accepted_corrections_train_and_rejected_ones_never_do(
    tmp_path: Path, new_utts: list[Utterance], general_utts: list[Utterance]
) -> None:
    utts = new_utts + general_utts
    store = _poisoned_store(tmp_path / "store", utts, ["mallory"])
    now = T0 + timedelta(hours=1)
    with pytest.raises(ValueError, match="needs --reason"):
        decide(store, SCREEN, ["swap-0"], accept=True, reason=" ", by="ann@host", now=now)
    with pytest.raises(ValueError, match="no held correction for honest-0"):
        decide(store, SCREEN, ["swap-0", "honest-0"], accept=True, reason="checked", by="ann@host", now=now)
    accepted = decide(
        store, SCREEN, ["swap-0"], accept=True, reason="the chart says hydralazine", by="ann@host", now=now
    )
    rejected = decide(
        store,
        SCREEN,
        ["swap-1", "swap-2"],
        accept=False,
        reason="one user, no source",
        by="ann@host",
        now=now,
    )
    assert [e["decision"] for e in accepted + rejected] == ["accepted", "rejected", "rejected"]
    assert store.resolve_for(["swap-0"], now=now).applied["swap-0"]["source"] == "review"
    assert {h.prediction_id for h in held_corrections(store, SCREEN)}.isdisjoint(
        {"swap-0", "swap-1", "swap-2"}
    )
    settings = DatasetSettings(
        audio_roots=[tempfile.gettempdir()], holdout_fraction=0.2, max_user_share=1.0, replay_share=0.0
    )
    m = build_dataset(store, tmp_path / "ds", settings, watermark=now, screen=SCREEN)
    assert m.quarantine_reasons["rejected_in_review"] == 2
    ids = {r["id"] for s in ("train", "heldout") for r in load_split(tmp_path / "ds", s)}
    assert "swap-0" in ids and "swap-1" not in ids
    lines = [
        orjson.loads(line)
        for p in sorted((tmp_path / "store" / "review").rglob("*.jsonl"))
        for line in p.read_text().splitlines()
    ]
    assert sorted((e["prediction_id"], e["decision"], e["by"]) for e in lines) == [
        ("swap-0", "accepted", "ann@host"),
        ("swap-1", "rejected", "ann@host"),
        ("swap-2", "rejected", "ann@host"),
    ]


def test_review_from_the_cli_lists_decides_and_audits(
    cli, config_factory, tmp_path: Path, new_utts: list[Utterance]
) -> None:  # type: ignore[no-untyped-def]
    from stt_flywheel.data.error_store import open_error_store
    from stt_flywheel.deployment.backends import open_registry

    path, config = config_factory(tmp_path, dataset={"audio_roots": [tempfile.gettempdir()]})
    store = open_error_store(config)
    assert "metformin" in config.validation.critical_terms
    rows = [
        _record(u, f"p{i}", "mallory", "take methotrexate at night", "take metformin at night")
        for i, u in enumerate(new_utts[:3])
    ]
    assert store.ingest(rows).accepted == 3
    code, out, _ = cli("review", "list", "-c", str(path), "--json")
    assert code == 0 and sorted(h["prediction_id"] for h in orjson.loads(out)) == ["p0", "p1", "p2"]
    assert "mallory" not in out
    code, out, err = cli("review", "accept", "p0", "-c", str(path))
    assert code == 2 and "--reason" in err
    code, out, err = cli("review", "reject", "p1", "nope", "--reason", "x", "-c", str(path))
    assert code == 1 and "no held correction for nope" in err and "Traceback" not in err
    code, out, _ = cli("review", "reject", "p1", "p2", "--reason", "swap", "-c", str(path))
    assert code == 0 and "2 rejected" in out
    assert [e.action for e in open_registry(config).audit_log()].count("review") == 2
    code, out, _ = cli("review", "list", "-c", str(path))
    assert code == 0 and "p0" in out and "p1" not in out
