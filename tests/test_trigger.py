"""The trigger policy: thresholds, forcing, and evidence counted only after the watermark."""

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from records import T0, record

from stt_flywheel.config import TriggerPolicy
from stt_flywheel.data.error_store import ErrorStore, Senders
from stt_flywheel.data.identity import Identity
from stt_flywheel.run.trigger import check_trigger


def _store(tmp_path: Path, errors: int, correct: int, corrected: bool = True, users: int = 5) -> ErrorStore:
    """`errors` wrong records (corrected, or only flagged) and `correct` right ones, from `users` users."""
    store = ErrorStore(tmp_path, senders=Senders(Identity(b"k" * 32)))
    rows = [
        {**record(i, corrected=corrected, when=T0 - timedelta(hours=1)), "user": f"user-{i % users}"}
        for i in range(errors)
    ]
    rows += [record(1000 + i, wrong=False, when=T0 - timedelta(hours=1)) for i in range(correct)]
    if rows:
        store.ingest(rows, now=T0 - timedelta(minutes=5))
    return store


POLICY = TriggerPolicy(
    min_error_cases=10,
    min_corrected_cases=5,
    min_distinct_users=3,
    error_rate_threshold=0.2,
    cooldown_hours=24,
)


TRIGGER_CASES = [
    (20, 20, True, None, False, True, set()),
    (5, 20, True, None, False, False, {"min_error_cases"}),
    (4, 10, True, None, False, False, {"min_error_cases", "min_corrected_cases"}),
    (2, 2, True, None, False, False, {"min_error_cases", "min_corrected_cases", "min_distinct_users"}),
    (20, 200, True, None, False, False, {"error_rate_threshold"}),
    (20, 20, False, None, False, False, {"min_corrected_cases", "min_distinct_users"}),
    (20, 20, True, 2.0, False, False, {"cooldown"}),
    (20, 20, True, 48.0, False, True, set()),
    (
        0,
        0,
        True,
        None,
        False,
        False,
        {"min_error_cases", "min_corrected_cases", "min_distinct_users", "error_rate_threshold"},
    ),
    (
        0,
        0,
        True,
        None,
        True,
        True,
        {"min_error_cases", "min_corrected_cases", "min_distinct_users", "error_rate_threshold"},
    ),
]


@pytest.mark.parametrize(
    ("errors", "correct", "corrected", "deployed_h", "force", "fires", "failing"), TRIGGER_CASES
)
def test_trigger_policy(
    tmp_path: Path,
    errors: int,
    correct: int,
    corrected: bool,
    deployed_h: float | None,
    force: bool,
    fires: bool,
    failing: set,
) -> None:
    store = _store(tmp_path, errors, correct, corrected)
    policy = POLICY.model_copy(update={"force": force})
    decision = check_trigger(
        store,
        policy,
        production_watermark=None,
        last_deployed_at=T0 - timedelta(hours=deployed_h) if deployed_h is not None else None,
        now=T0,
    )
    assert decision.should_train is fires
    assert {c.name for c in decision.checks if not c.passed} == failing
    assert len(decision.checks) == 5
    assert all(c.reason for c in decision.checks)
    assert decision.forced is (force and bool(failing))
    assert "# Trigger check" in decision.to_markdown()


def test_one_voice_does_not_start_a_run_however_much_it_says(tmp_path: Path) -> None:
    """Fifty corrections from one user (or from requests that name none) fire nothing."""
    for users in (1, 2):
        store = _store(tmp_path / str(users), 50, 20, users=users)
        decision = check_trigger(store, POLICY, production_watermark=None, last_deployed_at=None, now=T0)
        assert not decision.should_train
        assert [c.name for c in decision.checks if not c.passed] == ["min_distinct_users"]
        assert decision.stats.new_corrected_users == users
        assert f"from {users} user{'s' if users > 1 else ''}, the largest" in decision.summary
    anonymous = ErrorStore(tmp_path / "anon")
    anonymous.ingest(
        [record(i, when=T0 - timedelta(hours=1)) for i in range(50)], now=T0 - timedelta(minutes=5)
    )
    decision = check_trigger(anonymous, POLICY, production_watermark=None, last_deployed_at=None, now=T0)
    assert decision.stats.new_corrected_users == 1 and decision.stats.largest_user_share == 1.0


def test_trigger_counts_only_evidence_after_the_watermark(tmp_path: Path) -> None:
    store = _store(tmp_path, 20, 20)
    first = check_trigger(store, POLICY, production_watermark=None, last_deployed_at=None, now=T0)
    assert first.should_train
    assert first.watermark is not None
    again = check_trigger(store, POLICY, production_watermark=first.watermark, last_deployed_at=None, now=T0)
    assert not again.should_train
    assert again.stats.new_error_cases == 0
    assert "0 new error cases since" in again.summary


def _captured(store: ErrorStore, n: int, version: str, at: datetime, first: int = 0) -> list[str]:
    from stt_flywheel.data.records import new_prediction_id

    pids = [new_prediction_id(at + timedelta(seconds=first + i)) for i in range(n)]
    store.write_predictions(
        [
            {
                "prediction_id": p,
                "predicted_at": at + timedelta(seconds=first + i),
                "model_version": version,
                "endpoint": "stt",
                "hypothesis": "take two ibuprofin",
                "metadata": {},
                "duration_s": 1.0,
                "audio_uri": None,
                "audio_sha256": None,
            }
            for i, p in enumerate(pids)
        ],
        now=at,
    )
    return pids


def _correct(pid: str, text: str = "take two ibuprofen") -> dict:
    return {"prediction_id": pid, "corrected_text": text, "event_time": T0.isoformat(), "source": "app"}


def test_late_feedback_on_old_predictions_counts_after_the_watermark(tmp_path: Path) -> None:
    """Predictions served before the watermark, corrected after it, are new evidence; what arrived
    before it is not, and a prediction whose latest word came before it is not new either."""
    store = ErrorStore(tmp_path)
    old = _captured(store, 30, "1", T0 - timedelta(days=2))
    store.ingest_feedback([_correct(p) for p in old[:10]], now=T0 - timedelta(days=1))
    watermark = T0 - timedelta(hours=12)
    store.ingest_feedback([_correct(p) for p in old[10:25]], now=T0 - timedelta(hours=1))
    # a repeat of an event already trained on is not new evidence
    store.ingest_feedback([_correct(old[0])], now=T0 - timedelta(hours=1))
    policy = POLICY.model_copy(update={"recent_window_hours": 24 * 7})
    decision = check_trigger(store, policy, production_watermark=watermark, last_deployed_at=None, now=T0)
    assert (decision.stats.new_error_cases, decision.stats.new_corrected_cases) == (15, 15)
    assert decision.stats.new_feedback == 16
    assert decision.watermark == T0 - timedelta(hours=1)


def test_the_error_rate_is_over_the_production_versions_own_traffic(tmp_path: Path) -> None:
    store = ErrorStore(tmp_path)
    v1 = _captured(store, 40, "1", T0 - timedelta(hours=3))
    v2 = _captured(store, 60, "2", T0 - timedelta(hours=3), first=100)
    store.ingest_feedback(
        [_correct(p) for p in v1[:20]] + [_correct(p) for p in v2[:3]], now=T0 - timedelta(hours=1)
    )
    as_v1 = check_trigger(
        store, POLICY, production_watermark=None, last_deployed_at=None, production_version=1, now=T0
    )
    as_v2 = check_trigger(
        store, POLICY, production_watermark=None, last_deployed_at=None, production_version=2, now=T0
    )
    assert (as_v1.stats.recent_requests, as_v1.stats.recent_errors) == (40, 20)
    assert (as_v2.stats.recent_requests, as_v2.stats.recent_errors) == (60, 3)
    assert as_v1.stats.error_rate == 0.5 and as_v2.stats.error_rate == 0.05
    assert "version 2" in as_v2.checks[3].reason


def test_feedback_whose_predictions_are_not_here_yet_counts_nothing(tmp_path: Path) -> None:
    """Once, a store holding only early feedback (its predictions not captured yet) made the
    trigger, and with it `status`, raise."""
    store = ErrorStore(tmp_path)
    store.ingest_feedback([_correct("not-captured-yet")], now=T0 - timedelta(minutes=5))
    decision = check_trigger(store, POLICY, production_watermark=None, last_deployed_at=None, now=T0)
    assert decision.stats.new_error_cases == 0 and decision.stats.new_feedback == 1
