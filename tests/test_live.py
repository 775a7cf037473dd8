"""Live quality per version, checked against a case counted by hand."""

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from records import T0

from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.records import event_row, new_prediction_id
from stt_flywheel.monitoring.live import daily_trend, live_quality, read_windows

# (hypothesis, feedback, age, version, domain); feedback: a correction, "FLAG", or None
CASES = [
    ("take two ibuprofen daily", "take two ibuprofen tablets daily", 48, "1", "pharmacy"),  # 1 D / 5 words
    ("call the farmacy", "call the pharmacy", 48, "1", "pharmacy"),  # 1 S / 3
    ("hello world", "hello world", 48, "1", "general"),  # confirmed, 0 / 2
    ("see you", "FLAG", 48, "1", "general"),
    ("one", None, 48, "1", "general"),
    ("two", None, 47, "1", "general"),
    ("three", None, 46, "1", "general"),
    ("four", None, 1, "1", "general"),  # young, no feedback yet: pending
    ("five", None, 1, "1", "general"),  # pending
    ("go home now", "go home", 1, "1", "general"),  # young but already corrected: 1 I / 2
    ("a b", "a c", 30, "2", "general"),
]


@pytest.fixture
def store(tmp_path: Path) -> ErrorStore:
    store = ErrorStore(tmp_path)
    preds, events = [], []
    for i, (hyp, feedback, age_h, version, domain) in enumerate(CASES):
        at = T0 - timedelta(hours=age_h, seconds=i)
        pid = new_prediction_id(at)
        preds.append(
            {
                "prediction_id": pid,
                "predicted_at": at,
                "model_version": version,
                "endpoint": "stt",
                "hypothesis": hyp,
                "metadata": {"domain": domain},
                "duration_s": 1.0,
                "audio_uri": None,
                "audio_sha256": None,
            }
        )
        if feedback == "FLAG":
            events.append(
                {"prediction_id": pid, "flagged": True, "event_time": T0.isoformat(), "source": "t"}
            )
        elif feedback is not None:
            events.append(
                {
                    "prediction_id": pid,
                    "corrected_text": feedback,
                    "event_time": T0.isoformat(),
                    "source": "t",
                }
            )
    store.write_predictions(preds, now=T0 - timedelta(hours=48))
    store.ingest_feedback(events, now=T0 - timedelta(minutes=1))
    return store


def test_live_quality_matches_the_hand_count(store: ErrorStore) -> None:
    quality = live_quality(
        store, start=T0 - timedelta(days=3), now=T0, label_window=timedelta(hours=24), slice_by=["domain"]
    )
    v1 = quality["1"]
    assert (v1.requests, v1.labeled, v1.pending) == (10, 5, 2)
    assert (v1.corrected, v1.flagged, v1.confirmed, v1.scored) == (3, 1, 1, 4)
    assert v1.feedback_share is not None and v1.feedback_share.value == pytest.approx(5 / 10)
    # pending predictions are out of the denominator: 10 requests - 2 pending
    assert v1.correction_rate is not None and v1.correction_rate.value == pytest.approx(3 / 8)
    assert v1.flag_rate is not None and v1.flag_rate.value == pytest.approx(1 / 8)
    # WER: (1 D + 1 S + 0 + 1 I) / (5 + 3 + 2 + 2) reference words
    assert v1.wer is not None and v1.wer.value == pytest.approx(3 / 12)
    # CER without spaces, after the normaliser writes "two" as "2": "tablets" deleted (7 of 26
    # characters), ph→f (2/15), none (0/10), "now" inserted (3/6)
    assert v1.cer is not None and v1.cer.value == pytest.approx(12 / 57)
    assert v1.wer.low <= v1.wer.value <= v1.wer.high and v1.wer.units == 4
    pharmacy = v1.slices["domain"]["pharmacy"]
    assert (pharmacy.requests, pharmacy.corrected) == (2, 2)
    assert pharmacy.wer is not None and pharmacy.wer.value == pytest.approx(2 / 8)
    v2 = quality["2"]
    assert (v2.requests, v2.corrected) == (1, 1) and v2.wer is not None and v2.wer.value == pytest.approx(0.5)


def test_a_window_reads_only_its_traffic(store: ErrorStore) -> None:
    recent = live_quality(store, start=T0 - timedelta(hours=12), now=T0)
    assert set(recent) == {"1"} and recent["1"].requests == 3 and recent["1"].pending == 2


def test_daily_trend(store: ErrorStore) -> None:
    trend = daily_trend(store, days=4, now=T0)
    by = {(t["day"], t["version"]): t for t in trend}
    assert by[("2026-10-30", "1")]["requests"] == 7
    assert by[("2026-10-30", "1")]["correction_rate"] == pytest.approx(2 / 7)
    assert by[("2026-10-30", "1")]["wer"] == pytest.approx(2 / 10)
    assert by[("2026-11-01", "1")]["pending"] == 2


def test_live_intervals_resample_users_whole_and_anonymous_predictions_alone() -> None:
    """One user's 300 confirmations beside 30 users' 2 predictions each: the correction rate's
    interval is as wide as 31 users allow. Predictions that name no user are not one cluster (an
    interval of one cluster has no width)."""
    from datetime import UTC, datetime, timedelta

    from stt_flywheel.monitoring.live import LiveRow, live_quality

    t0 = datetime(2026, 12, 1, tzinfo=UTC)

    def row(i: int, user: str, corrected: bool) -> LiveRow:
        kind = "corrected" if corrected else "confirmed"
        return LiveRow("1", t0 + timedelta(seconds=i), "a b", {}, kind, "a c" if corrected else "a b", user)

    honest = [row(i, f"u{i // 2}", i % 3 == 0) for i in range(60)]
    flood = [row(100 + i, "flood", False) for i in range(300)]
    kwargs = {"now": t0 + timedelta(days=1), "label_window": timedelta(0)}
    clustered = live_quality(None, rows=honest + flood, **kwargs)["1"].correction_rate  # type: ignore[arg-type]
    anonymous = [LiveRow(**{**r.__dict__, "user": "anonymous"}) for r in honest + flood]
    alone = live_quality(None, rows=anonymous, **kwargs)["1"].correction_rate  # type: ignore[arg-type]
    assert clustered is not None and alone is not None
    assert clustered.value == alone.value == 20 / 360
    assert alone.high > alone.low  # not one cluster
    assert clustered.high - clustered.low > 3 * (alone.high - alone.low)


def test_each_user_counts_with_at_most_the_cap_in_live_quality() -> None:
    """One user's 300 confirmations beside 30 users' 2 predictions each, capped at 2 a user: the
    flood counts twice, so the correction rate is that of the 31 users, and the capped predictions
    are counted; without a cap they make the rate look 6 times better."""
    from datetime import UTC, datetime, timedelta

    from stt_flywheel.monitoring.live import LiveRow, daily_trend, live_quality

    t0 = datetime(2026, 12, 1, tzinfo=UTC)

    def row(i: int, user: str, corrected: bool) -> LiveRow:
        kind = "corrected" if corrected else "confirmed"
        return LiveRow("1", t0 + timedelta(seconds=i), "a b", {}, kind, "a c" if corrected else "a b", user)

    rows = [row(i, f"u{i // 2}", i % 3 == 0) for i in range(60)] + [
        row(100 + i, "flood", False) for i in range(300)
    ]
    kwargs = {"now": t0 + timedelta(days=1), "label_window": timedelta(0), "rows": rows}
    capped = live_quality(None, max_per_user=2, **kwargs)["1"]  # type: ignore[arg-type]
    free = live_quality(None, **kwargs)["1"]  # type: ignore[arg-type]
    assert (capped.requests, capped.users, capped.capped) == (62, 31, 298)
    assert capped.correction_rate is not None and capped.correction_rate.value == 20 / 62
    assert capped.wer is not None and capped.wer.value == 20 / 124
    assert free.correction_rate is not None and free.correction_rate.value == 20 / 360
    trend = daily_trend(None, days=2, max_per_user=2, **kwargs)  # type: ignore[arg-type]
    assert [(d["requests"], d["correction_rate"]) for d in trend] == [(62, 20 / 62)]


def test_confidence_is_summed_up_per_version_and_hour_over_all_requests() -> None:
    from stt_flywheel.monitoring.live import LiveRow, confidence_by_hour, confidence_summary

    def row(version: str, minute: int, confidence: float | None, kind: str | None = None) -> LiveRow:
        at = T0 + timedelta(minutes=minute)
        return LiveRow(version, at, "h", {}, kind, None, confidence=confidence)

    rows = [row("1", m, 0.1 * (m % 10 + 1)) for m in range(0, 120, 6)] + [
        row("2", 5, None),
        row("2", 7, 0.5, "corrected"),
    ]
    summary = confidence_summary(rows[:20])
    assert summary is not None and summary["predictions"] == 20
    assert summary["mean"] == pytest.approx(np.mean([0.1 * (m % 10 + 1) for m in range(0, 120, 6)]))
    assert summary["p10"] < summary["median"]
    assert confidence_summary([row("2", 1, None)]) is None
    hours = confidence_by_hour(rows)
    assert [(h["version"], h["predictions"]) for h in hours] == [("1", 10), ("2", 1), ("1", 10)]
    assert hours[1]["median"] == 0.5  # the labelled and the unlabelled count alike; no confidence: not at all


def test_a_reviewers_label_moves_no_live_figure(store: ErrorStore) -> None:
    """Reviewers see the predictions the model was least sure of, not a sample of each version's:
    their labels would raise the correction rate of the less sure version."""
    before = live_quality(store, start=T0 - timedelta(days=3), now=T0)["1"]
    unlabelled = [p for p in store.predictions().to_pylist() if p["hypothesis"] in ("one", "two", "three")]
    store.write_feedback(
        [
            event_row(p["prediction_id"], p["hypothesis"] + " more", False, T0, "label-studio",
                      T0 - timedelta(minutes=1), user="reviewer-1", reviewer=True)
            for p in unlabelled
        ],
        T0 - timedelta(minutes=1),
    )  # fmt: skip
    assert len(store.resolve(store.feedback()).applied) == 5 + 1 + 3  # the labels are stored
    after = live_quality(store, start=T0 - timedelta(days=3), now=T0)["1"]
    assert (after.labeled, after.corrected, after.scored) == (before.labeled, before.corrected, before.scored)
    assert after.correction_rate is not None and before.correction_rate is not None
    assert after.correction_rate.value == before.correction_rate.value


def test_the_default_watch_reads_its_two_windows_and_nothing_between(
    store: ErrorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[tuple[Any, Any]] = []
    window = store.window
    monkeypatch.setattr(
        store, "window", lambda start, end, *a, **k: read.append((start, end)) or window(start, end, *a, **k)
    )
    old, young = (T0 - timedelta(hours=49), T0 - timedelta(hours=45)), (T0 - timedelta(hours=2), T0)
    rows = read_windows(store, [young, old, (T0, T0)], T0)
    assert read == [old, young]  # oldest first, the empty one not read
    assert sorted(r.hypothesis for r in rows) == sorted(
        c[0] for c in CASES if c[0] != "a b"
    )  # 30 h old: between
    read.clear()
    read_windows(
        store, [(T0 - timedelta(hours=10), T0 - timedelta(hours=4)), (T0 - timedelta(hours=5), T0)], T0
    )
    assert read == [(T0 - timedelta(hours=10), T0)]  # overlapping: one read
