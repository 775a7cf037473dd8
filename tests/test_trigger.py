"""The trigger policy: thresholds, forcing, and evidence counted only after the watermark."""

from datetime import timedelta
from pathlib import Path

import pytest
from records import T0, record

from stt_flywheel.config import TriggerPolicy
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.run.trigger import check_trigger


def _store(tmp_path: Path, errors: int, correct: int, corrected: bool = True) -> ErrorStore:
    store = ErrorStore(tmp_path)
    rows = [record(i, corrected=corrected, when=T0 - timedelta(hours=1)) for i in range(errors)]
    rows += [record(1000 + i, wrong=False, when=T0 - timedelta(hours=1)) for i in range(correct)]
    if rows:
        store.ingest(rows, now=T0 - timedelta(minutes=5))
    return store


POLICY = TriggerPolicy(min_error_cases=10, min_corrected_cases=5, error_rate_threshold=0.2, cooldown_hours=24)


TRIGGER_CASES = [
    (20, 20, True, None, False, True, set()),
    (5, 20, True, None, False, False, {"min_error_cases"}),
    (4, 10, True, None, False, False, {"min_error_cases", "min_corrected_cases"}),
    (20, 200, True, None, False, False, {"error_rate_threshold"}),
    (20, 20, False, None, False, False, {"min_corrected_cases"}),
    (20, 20, True, 2.0, False, False, {"cooldown"}),
    (20, 20, True, 48.0, False, True, set()),
    (0, 0, True, None, False, False, {"min_error_cases", "min_corrected_cases", "error_rate_threshold"}),
    (0, 0, True, None, True, True, {"min_error_cases", "min_corrected_cases", "error_rate_threshold"}),
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
    assert len(decision.checks) == 4
    assert all(c.reason for c in decision.checks)
    assert decision.forced is (force and bool(failing))
    assert "# Trigger check" in decision.to_markdown()


def test_trigger_counts_only_evidence_after_the_watermark(tmp_path: Path) -> None:
    store = _store(tmp_path, 20, 20)
    first = check_trigger(store, POLICY, production_watermark=None, last_deployed_at=None, now=T0)
    assert first.should_train
    assert first.watermark is not None
    again = check_trigger(store, POLICY, production_watermark=first.watermark, last_deployed_at=None, now=T0)
    assert not again.should_train
    assert again.stats.new_error_cases == 0
    assert "0 new error cases since" in again.summary
