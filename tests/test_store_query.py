"""The store's questions in SQL (DuckDB) give the Arrow path's answers, row for row, on stores
built to hold every case the rules name: repeats, a prediction id written twice, another user's
event, a reviewer's, an event with no prediction (pending, then quarantined), corrections equal
after normalisation, non-ASCII text, files from before a column existed."""

import random
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from records import T0

from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.error_store.layout import parquet_bytes, partition
from stt_flywheel.data.error_store.query import StoreQuery
from stt_flywheel.data.records import PREDICTION_SCHEMA, event_row, new_prediction_id
from stt_flywheel.errors import StateError
from stt_flywheel.monitoring.live import live_quality

TEXTS = ["take two ibuprofen", "Take two ibuprofen!", "take 'two' ibuprofen", "naïve café", "Naïve café", ""]
USERS = ["u1", "u2", "u3", None]


def _store(root: Path, seed: int) -> ErrorStore:
    """A store of 6 hours of predictions and feedback, with every case of the rules."""
    rng = random.Random(seed)
    store = ErrorStore(root, pending_horizon=timedelta(hours=6))
    ids = []
    for hour in range(6):
        at = T0 + timedelta(hours=hour)
        rows = []
        for _ in range(rng.randint(5, 25)):
            t = at + timedelta(minutes=rng.randint(0, 59))
            pid = new_prediction_id(t) if rng.random() < 0.9 else f"ext-{rng.randint(0, 10**9)}"
            rows.append(
                {
                    "prediction_id": pid,
                    "predicted_at": t,
                    "model_version": rng.choice(["1", "2"]),
                    "endpoint": "stt",
                    "hypothesis": rng.choice(TEXTS),
                    "metadata": {"domain": rng.choice(["pharmacy", "general"])},
                    "user": rng.choice(USERS),
                    "duration_s": 1.0,
                    "audio_uri": None,
                    "audio_sha256": None,
                    "confidence": rng.random(),
                }
            )
            ids.append((pid, rows[-1]["user"], t))
        store.write_predictions(rows, now=at + timedelta(minutes=59))
        if hour == 2 and rows:  # the same id written again later, with another hypothesis: the first stands
            again = {**rows[0], "hypothesis": "written again"}
            store.write_predictions([again], now=at + timedelta(minutes=59, seconds=30))
    # a file from before `confidence`, `words` and `signature` existed
    old = PREDICTION_SCHEMA.empty_table().drop_columns(["confidence", "words", "signature"])
    t = T0 + timedelta(hours=1, minutes=30)
    old_id = new_prediction_id(t)
    old_row = {"prediction_id": old_id, "predicted_at": t, "hypothesis": "an old one", "user": "u1",
               "ingested_at": t, "metadata": []}  # fmt: skip
    old = pa.Table.from_pylist([old_row], schema=old.schema)
    store.store.create(
        f"predictions/{partition(t)}/part-20000101T000000000000Z-old.parquet", parquet_bytes(old)
    )
    ids.append((old_id, "u1", t))
    for batch in range(8):
        arrive = T0 + timedelta(hours=1 + batch, minutes=rng.randint(0, 59))
        events = []
        # events come after their prediction, or a little before it is stored (within the clock skew)
        known = [i for i in ids if i[2] <= arrive + timedelta(minutes=30)]
        for _ in range(rng.randint(10, 30)):
            pid, owner, made = rng.choice(known)
            if rng.random() < 0.1:
                pid = new_prediction_id(arrive)  # no such prediction
            sender = owner if rng.random() < 0.8 else rng.choice(USERS)
            events.append(
                event_row(
                    pid,
                    rng.choice([*TEXTS, None]),
                    rng.random() < 0.3,
                    made + timedelta(minutes=rng.randint(0, 300)),
                    "app",
                    arrive,
                    user=sender or "anonymous",
                    reviewer=rng.random() < 0.05,
                )
            )
        store.write_feedback(events, arrive)
        if batch % 3 == 0:  # the same events again, a little later (a file ingested twice)
            store.write_feedback(
                [{**e, "ingested_at": arrive + timedelta(seconds=5)} for e in events], arrive
            )
    return store


def _engines(root: Path, seed: int) -> tuple[ErrorStore, ErrorStore]:
    sql = _store(root, seed)
    return sql, ErrorStore(root, pending_horizon=sql.pending_horizon, engine="arrow")


@pytest.mark.parametrize("seed", range(3))
def test_stats_errors_and_exports_are_the_arrow_paths(tmp_path: Path, seed: int) -> None:
    sql, arrow = _engines(tmp_path / "store", seed)
    for now in (T0 + timedelta(hours=5), T0 + timedelta(hours=20)):
        for since in (None, T0 + timedelta(hours=4)):
            counted = sql.stats(since=since, now=now)
            assert counted == arrow.stats(since=since, now=now)
            events = counted["feedback_events"]
            assert (
                events["pending"] + events["quarantined"] > 0 and events["superseded"] > 0
            )  # the cases are there
        assert list(sql.errors(upto=now)) == list(arrow.errors(upto=now))
        for since, version in ((None, None), (T0 + timedelta(hours=3), None), (T0 + timedelta(hours=2), "2")):
            key = lambda r: (r["predicted_at"], r["prediction_id"])  # noqa: E731
            got = sorted(sql.export(since=since, version=version, now=now), key=key)
            assert got == sorted(arrow.export(since=since, version=version, now=now), key=key)
            assert any(r["label"] for r in got)
    assert {k for _, _, k in sql.errors()} == {"corrected", "flagged"}


@pytest.mark.parametrize("seed", range(3))
def test_each_predictions_label_is_the_arrow_paths(tmp_path: Path, seed: int) -> None:
    store = _store(tmp_path / "store", seed)
    now = T0 + timedelta(hours=20)
    resolution = store.resolve(store.feedback(upto=now), now=now)
    batches = list(StoreQuery(store).labelled(upto=now, prediction_columns=["predicted_at"]))
    table = pa.Table.from_batches(batches) if batches else None
    assert table is not None
    got = {
        r["prediction_id"]: (r["kind"], r["event_event_id"], r["hypothesis"])
        for r in table.to_pylist()
        if r["kind"] is not None
    }
    want = {
        pid: (resolution.kind(pid), event["event_id"], resolution.predictions[pid]["hypothesis"])
        for pid, event in resolution.applied.items()
    }
    assert got == want
    assert {"corrected", "flagged", "confirmed"} <= {k for k, _, _ in got.values()}
    # every prediction once, labelled or not
    assert table.num_rows == store.predictions().num_rows
    assert pc.count_distinct(table["prediction_id"]).as_py() == table.num_rows
    # a window of predictions: the same labels for those in it
    start, end = T0 + timedelta(hours=2), T0 + timedelta(hours=4)
    window = pa.Table.from_batches(
        list(StoreQuery(store).labelled(start=start, end=end, upto=now, after=start - timedelta(hours=1)))
    )
    in_window = {p["prediction_id"] for p in store.predictions(start, end).to_pylist()}
    assert set(window["prediction_id"].to_pylist()) == in_window
    for r in window.to_pylist():
        if r["kind"] is not None:
            assert got[r["prediction_id"]][:2] == (r["kind"], r["event_event_id"])


@pytest.mark.parametrize("seed", range(3))
def test_a_windows_labels_and_live_quality_are_the_arrow_paths(tmp_path: Path, seed: int) -> None:
    sql, arrow = _engines(tmp_path / "store", seed)
    now = T0 + timedelta(hours=20)
    for start, end in ((T0, T0 + timedelta(hours=3)), (T0 + timedelta(hours=2), now), (None, now)):
        for reviewers in (True, False):
            key = lambda r: (r[0]["predicted_at"], r[0]["prediction_id"])  # noqa: E731
            got = sorted(sql.window(start, end, now, columns=["user"], reviewers=reviewers), key=key)
            want = sorted(arrow.window(start, end, now, reviewers=reviewers), key=key)
            assert [(p["prediction_id"], e and e["event_id"], k) for p, e, k in got] == [
                (p["prediction_id"], e and e["event_id"], k) for p, e, k in want
            ]
        assert live_quality(sql, start=start, end=end, now=now, slice_by=["domain"]) == live_quality(
            arrow, start=start, end=end, now=now, slice_by=["domain"]
        )


def test_duckdb_never_draws_its_progress_bar(tmp_path: Path) -> None:
    """DuckDB draws a progress bar on stdout for a query past two seconds: inside `errors export
    | ...` it would land among the JSON lines."""
    query = StoreQuery(ErrorStore(tmp_path))
    assert query.con.execute("SELECT current_setting('enable_progress_bar')").fetchall() == [(False,)]


def test_a_question_past_the_memory_limit_says_which_setting_to_raise(tmp_path: Path) -> None:
    sql = _store(tmp_path / "store", 0)
    tight = ErrorStore(sql.root, pending_horizon=sql.pending_horizon, memory_limit="1MB")
    with pytest.raises(StateError, match="raise store.memory_limit"):
        list(tight.errors(upto=T0 + timedelta(hours=20)))
