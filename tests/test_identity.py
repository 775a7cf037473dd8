"""Who sent what: users as keyed pseudonyms, never in the clear; only the requester (or a
reviewer source) labels a prediction."""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from conftest import run_at_once
from records import T0, record

from stt_flywheel.config.base import ConfigError
from stt_flywheel.data.error_store import ErrorStore, Senders, latest_kinds
from stt_flywheel.data.identity import ANONYMOUS, IDENTITY_KEY_ENV, Identity, load_identity

KEY = Identity(b"k" * 32)
LATER = T0 + timedelta(minutes=10)


def _store(root: Path, reviewers: tuple[str, ...] = ("review",)) -> ErrorStore:
    return ErrorStore(root, senders=Senders(KEY, reviewers))


def _event(pid: str, text: str, user: str | None, source: str = "app") -> dict:
    return {
        "prediction_id": pid,
        "corrected_text": text,
        "event_time": LATER.isoformat(),
        "source": source,
        "user": user,
    }


def test_a_pseudonym_is_stable_keyed_and_never_the_id() -> None:
    a = KEY.pseudonym("alice@example.com")
    assert a == KEY.pseudonym(" alice@example.com ") and len(a) == 32 and "alice" not in a
    assert a != Identity(b"x" * 32).pseudonym("alice@example.com")
    assert KEY.pseudonym(None) == KEY.pseudonym("  ") == ANONYMOUS
    assert "k" * 32 not in repr(KEY)
    with pytest.raises(ConfigError, match="at least 16"):
        Identity(b"short")


def _load(state: str) -> None:
    print(load_identity(state, environ={}).pseudonym("u"), flush=True)


def test_the_embedded_key_is_made_once_private_and_the_same_for_racing_processes(tmp_path: Path) -> None:
    for round_ in range(5):
        state = tmp_path / f"state-{round_}"
        assert run_at_once(_load, [(str(state),)] * 4) == [0, 0, 0, 0]
        key_file = state / "identity.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert [p.name for p in state.iterdir()] == ["identity.key"]  # no temp file left
        first = load_identity(state, environ={}).pseudonym("u")
        assert load_identity(state, environ={}).pseudonym("u") == first
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_identity(state, environ={})
    from_env = load_identity(state, environ={IDENTITY_KEY_ENV: "e" * 32})
    assert from_env.pseudonym("u") == Identity(b"e" * 32).pseudonym("u")
    with pytest.raises(ConfigError, match=IDENTITY_KEY_ENV):
        load_identity("gs://bucket/state", environ={})


def test_only_the_requester_or_a_reviewer_labels_a_prediction(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.ingest([{**record(1), "user": "alice"}, record(2)], now=T0).accepted == 2
    result = store.ingest_feedback(
        [
            _event("r1", "mallory says", "mallory"),  # another user's prediction
            _event("r1", "take two ibuprofen", "alice"),  # the requester
            _event("r2", "anyone may not", "bob"),  # an anonymous prediction is nobody's to label
            _event("r2", "a reviewer may", "carol", source="review"),
        ],
        now=LATER,
    )
    assert [(q.line, q.reason) for q in result.quarantined] == [
        (1, "not_the_requester"),
        (3, "not_the_requester"),
    ]
    assert result.accepted == 2 and result.balanced
    applied = store.resolve_for(["r1", "r2"], now=LATER).applied
    assert applied["r1"]["corrected_text"] == "take two ibuprofen"
    assert store.stats(now=LATER)["users"] == 2  # alice, and the requests that named no one
    assert applied["r2"]["corrected_text"] == "a reviewer may"


def test_an_event_that_came_before_its_prediction_is_judged_when_the_prediction_arrives(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    early = store.ingest_feedback([_event("r1", "mallory says", "mallory")], now=T0)
    assert early.states == {"pending": 1}
    store.ingest(
        [{**record(1, corrected=False, wrong=False), "user": "alice"}], now=T0 + timedelta(minutes=1)
    )
    now = T0 + timedelta(hours=1)
    resolution = store.resolve_for(["r1"], now=now)
    assert "r1" not in resolution.applied and resolution.counts["quarantined"] == 1
    assert [r["prediction_id"] for r in resolution.refused] == ["r1"]
    kinds = latest_kinds(store.feedback(upto=now), store.predictions())
    assert kinds.num_rows == 0  # the column-wise engine agrees
    assert [q["reason"] for q in store.export_quarantine(now=now)] == ["not_the_requester"]


def test_no_user_id_is_stored_in_the_clear_not_even_in_the_quarantine(tmp_path: Path) -> None:
    store = _store(tmp_path / "store")
    secret = "patient-8841@clinic.example"
    store.ingest(
        [{**record(1), "user": secret}, {**record(2), "user": secret, "timestamp": "not a time"}], now=T0
    )
    store.ingest_feedback(
        [_event("r1", "x", secret), {**_event("r9", "y", secret), "flagged": "maybe"}], now=LATER
    )
    everything = b"".join(p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert secret.encode() not in everything and b"patient-8841" not in everything
    reasons = [q["reason"] for q in store.quarantine()]
    assert reasons == ["invalid_record", "invalid_record"]
    assert all(orjson.loads(q["raw"])["user"] == KEY.pseudonym(secret) for q in store.quarantine())


def test_a_store_without_a_key_refuses_named_users_in_words(tmp_path: Path) -> None:
    store = ErrorStore(tmp_path)
    assert store.ingest([record(1)], now=T0).accepted == 1  # no user: anonymous, no key needed
    with pytest.raises(ConfigError, match="identity key"):
        store.ingest([{**record(2), "user": "alice"}], now=T0)


def test_a_users_events_past_the_hourly_limit_are_kept_in_the_quarantine(tmp_path: Path) -> None:
    store = ErrorStore(tmp_path, senders=Senders(KEY), max_events_per_user_per_hour=5)
    store.ingest(
        [
            {**record(i), "corrected_text": None, "flagged": False, "user": "alice" if i < 8 else "bob"}
            for i in range(10)
        ],
        now=T0,
    )
    first = store.ingest_feedback([_event(f"r{i}", "take two", "alice") for i in range(3)], now=LATER)
    assert first.accepted == 3
    second = store.ingest_feedback(
        [_event(f"r{i}", "take three", "alice") for i in range(3, 8)]
        + [_event("r8", "take two", "bob"), _event("r0", "a reviewer", "carol", source="review")],
        now=LATER + timedelta(minutes=5),
    )
    assert second.accepted == 4 and second.balanced  # alice's 4th and 5th, bob's, the reviewer's
    assert [q.reason for q in second.quarantined] == ["rate_limited"] * 3
    assert "more than 5 events from one user" in second.quarantined[0].detail
    kept = [q for q in store.quarantine() if q["reason"] == "rate_limited"]
    assert [orjson.loads(q["raw"])["prediction_id"] for q in kept] == ["r5", "r6", "r7"]
    next_hour = store.ingest_feedback([_event("r5", "take three", "alice")], now=LATER + timedelta(hours=1))
    assert next_hour.accepted == 1  # a new hour, a new allowance


def test_where_the_key_comes_from_environment_then_secret_manager_then_the_state_file(
    tmp_path: Path, identity_secret: dict[str, str]
) -> None:
    """`identity.secret` names a Secret Manager version (read by the real client library from a
    local stand-in); `FLYWHEEL_IDENTITY_KEY` wins over it; without either, the embedded default's
    file, and none at all where the state is on gs://. Each failure says what to set."""
    from stt_flywheel.config import FlywheelConfig, IdentitySettings
    from stt_flywheel.demo.users import DEMO_KEY

    settings = IdentitySettings(**identity_secret)
    from_secret = load_identity(tmp_path, {}, settings)
    assert from_secret.pseudonym("alice") == Identity(DEMO_KEY.encode()).pseudonym("alice")
    assert not (tmp_path / "identity.key").exists()
    from_env = load_identity(tmp_path, {IDENTITY_KEY_ENV: "e" * 32}, settings)
    assert from_env.pseudonym("alice") == Identity(b"e" * 32).pseudonym("alice")
    missing = settings.model_copy(update={"secret": "projects/p/secrets/nope/versions/latest"})
    with pytest.raises(ConfigError, match="could not be read from Secret Manager"):
        load_identity(tmp_path, {}, missing)
    with pytest.raises(ConfigError, match="set identity.secret"):
        load_identity("gs://bucket/state", {})
    with pytest.raises(ValueError, match="not a secret version name"):
        FlywheelConfig.model_validate({"identity": {"secret": "flywheel-identity"}})
