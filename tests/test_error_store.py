"""The error store: predictions and late feedback joined by prediction id, hive-partitioned Parquet,
counts that balance, compaction beside writers and after a crash."""

import base64
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest
from records import T0, record

from stt_flywheel.data.error_store import FEEDBACK_STATES, ErrorStore, latest_kinds
from stt_flywheel.data.records import id_time, new_prediction_id


def prediction(
    pid: str, at: datetime = T0, hyp: str = "take two ibuprofin", version: str = "1"
) -> dict[str, Any]:
    return {
        "prediction_id": pid,
        "predicted_at": at,
        "model_version": version,
        "endpoint": "stt",
        "hypothesis": hyp,
        "metadata": {"domain": "pharmacy"},
        "duration_s": 1.5,
        "audio_uri": None,
        "audio_sha256": None,
    }


def event(
    pid: str, text: str | None = "take two ibuprofen", at: datetime = T0, **extra: Any
) -> dict[str, Any]:
    return {
        "prediction_id": pid,
        "corrected_text": text,
        "event_time": at.isoformat(),
        "source": "app",
        **extra,
    }


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.gcs)])
def error_store(request: pytest.FixtureRequest, tmp_path: Path) -> ErrorStore:
    root = tmp_path / "store" if request.param == "local" else request.getfixturevalue("gcs_bucket")
    return ErrorStore(root, pending_horizon=timedelta(hours=6))


def test_uuid7_ids_carry_their_time() -> None:
    pid = new_prediction_id(T0 + timedelta(milliseconds=5))
    assert id_time(pid) == T0 + timedelta(milliseconds=5)
    assert id_time("r1") is None
    assert id_time("00000000-0000-4000-8000-000000000000") is None  # a UUIDv4


def test_combined_records_balance_and_quarantine_with_reasons(tmp_path: Path) -> None:
    store = ErrorStore(tmp_path)
    lines = [
        orjson.dumps(record(1)),
        orjson.dumps(record(2, wrong=False)),
        b"{not json",
        b"[1, 2]",
        orjson.dumps({"id": "x", "hypothesis": "no audio", "timestamp": T0.isoformat()}),
        orjson.dumps({**record(3), "timestamp": "2026-11-01T12:00:00"}),
        orjson.dumps(record(1)),
    ]
    result = store.ingest(lines, now=T0)
    assert (result.read, result.accepted, result.duplicates, len(result.quarantined)) == (7, 2, 1, 4)
    assert result.balanced and result.feedback_events == 1
    assert [q.reason for q in result.quarantined] == [
        "invalid_json",
        "not_an_object",
        "invalid_record",
        "invalid_record",
    ]
    assert "timezone" in result.quarantined[-1].detail
    kept = list(store.quarantine())
    assert [q["reason"] for q in kept] == [q.reason for q in result.quarantined]
    assert {q["stream"] for q in kept} == {"records"}


def test_timestamps_past_the_calendar_or_in_the_future_are_one_quarantined_line_each(tmp_path: Path) -> None:
    """Once, one such line raised OverflowError and nothing of the file was stored."""
    store = ErrorStore(tmp_path)
    lines = [
        orjson.dumps({**record(1), "timestamp": "9999-12-31T23:30:00-05:00"}),
        orjson.dumps({**record(2), "timestamp": "0001-01-01T00:30:00+05:00"}),
        orjson.dumps({**record(3), "timestamp": (T0 + timedelta(days=400)).isoformat()}),
        orjson.dumps(record(4)),
    ]
    result = store.ingest(lines, now=T0)
    assert result.accepted == 1
    assert [(q.line, q.reason) for q in result.quarantined] == [
        (1, "invalid_timestamp"),
        (2, "invalid_timestamp"),
        (3, "timestamp_in_future"),
    ]
    assert store.predictions()["prediction_id"].to_pylist() == ["r4"]
    events = [
        orjson.dumps(event("r4", corrected_text="x", event_time="9999-12-31T23:30:00-05:00")),
        orjson.dumps(event("r4", corrected_text="x", event_time=(T0 + timedelta(days=3)).isoformat())),
        orjson.dumps(event("r4", corrected_text="x", event_time=T0.isoformat())),
    ]
    fed = store.ingest_feedback(events, now=T0)
    assert fed.accepted == 1
    assert [q.reason for q in fed.quarantined] == ["invalid_timestamp", "timestamp_in_future"]


def test_quarantine_keeps_physical_line_numbers_and_exact_bytes(tmp_path: Path) -> None:
    source = tmp_path / "records.jsonl"
    bad_utf8 = b'{"id": "\xff\xfe", broken'
    cr_inside = orjson.dumps({**record(2), "hypothesis": "carriage\rreturn"}).replace(b"\\r", b"\r")
    assert b"\r" in cr_inside  # a bare CR byte inside the JSON string
    source.write_bytes(
        b"\xef\xbb\xbf"  # a byte-order mark before the first record
        + orjson.dumps(record(1))
        + b"\r\n\n   \n"  # CRLF, then two blank lines
        + bad_utf8
        + b"\n"
        + cr_inside
        + b"\n"
        + b"x" * (2 << 20)  # one line of 2 MiB
        + b"\n"
        + orjson.dumps({**record(5), "id": "i" * 300})
        + b"\n"
    )
    store = ErrorStore(tmp_path / "store")
    result = store.ingest_file(source, now=T0)
    assert result.read == 5
    assert result.accepted == 1  # the first line, its BOM skipped
    assert [(q.line, q.reason) for q in result.quarantined] == [
        (4, "invalid_json"),
        (5, "invalid_json"),  # a raw CR is invalid JSON: it stays one line, and is quarantined whole
        (6, "line_too_long"),
        (7, "id_too_long"),
    ]
    kept = {q["line"]: q for q in store.quarantine()}
    assert base64.b64decode(kept[4]["raw_base64"]) == bad_utf8
    assert base64.b64decode(kept[5]["raw_base64"]) == cr_inside


def test_a_late_correction_of_a_stored_id_is_applied_not_dropped(tmp_path: Path) -> None:
    store = ErrorStore(tmp_path)
    store.ingest([record(1, wrong=True, corrected=False)], now=T0)  # flagged only
    [(pred, ev, kind)] = list(store.errors())
    assert kind == "flagged"
    later = {**record(1), "corrected_text": "take two ibuprofen tablets"}
    result = store.ingest([later], now=T0 + timedelta(hours=3))
    assert result.feedback_events == 1
    [(pred, ev, kind)] = list(store.errors())
    assert (pred["prediction_id"], ev["corrected_text"], kind) == (
        "r1",
        "take two ibuprofen tablets",
        "corrected",
    )
    assert store.predictions().num_rows == 1  # the prediction is still one prediction


def test_feedback_out_of_order_repeated_conflicting_and_unknown(error_store: ErrorStore) -> None:
    store = error_store
    a, b, c = (new_prediction_id(T0 + timedelta(seconds=i)) for i in range(3))
    store.write_predictions([prediction(a), prediction(b), prediction(c, hyp="hello")], now=T0)
    unknown = new_prediction_id(T0)
    arrive = T0 + timedelta(hours=1)
    batch = [
        event(a, "take two ibuprofen", at=T0 + timedelta(minutes=10)),  # the user's latest word
        event(a, "take too ibuprofen", at=T0 + timedelta(minutes=5)),  # older, arrives in the same batch
        event(b, None, flagged=True),
        event(b, None, flagged=True),  # repeated
        event(c, "hello"),  # confirmed: equals the hypothesis
        event(unknown, "something"),  # no such prediction (yet)
        {"prediction_id": a, "event_time": T0.isoformat(), "source": "app"},  # says nothing
        b'{"prediction_id": 3}',
    ]
    result = store.ingest_feedback([orjson.dumps(e) if isinstance(e, dict) else e for e in batch], now=arrive)
    assert (result.read, result.accepted, len(result.quarantined)) == (8, 6, 2)
    assert result.states == {"applied": 3, "superseded": 1, "duplicate": 1, "pending": 1}
    assert result.balanced
    # the same batch again: every event is a duplicate now
    again = store.ingest_feedback([orjson.dumps(e) for e in batch[:6]], now=arrive + timedelta(minutes=1))
    assert again.states == {"duplicate": 6}
    # a contradicting correction that happened later wins; the earlier one is superseded, and kept
    store.ingest_feedback([event(a, "take two ibuprofen now", at=T0 + timedelta(minutes=20))], now=arrive)
    joined = {p["prediction_id"]: (e["corrected_text"], k) for p, e, k in store.errors()}
    assert joined == {a: ("take two ibuprofen now", "corrected"), b: (None, "flagged")}

    before = store.resolve(store.feedback(), now=arrive + timedelta(hours=5))
    assert before.counts["pending"] == 1 and before.counts["quarantined"] == 0
    after = store.resolve(store.feedback(), now=arrive + timedelta(hours=7))
    assert after.counts["pending"] == 0 and after.counts["quarantined"] == 1
    assert after.quarantined[0]["prediction_id"] == unknown
    read = store.feedback().num_rows
    assert read == 6 + 6 + 1
    assert read == sum(after.counts[s] for s in FEEDBACK_STATES)
    assert after.counts == {"applied": 3, "superseded": 2, "duplicate": 7, "pending": 0, "quarantined": 1}
    # the column-wise join (what the trigger uses) labels every prediction as the resolution does
    vectorized = latest_kinds(store.feedback(), store.predictions()).to_pylist()
    assert {r["prediction_id"]: r["kind"] for r in vectorized} == {
        pid: after.kind(pid) for pid in after.applied
    }


def test_an_event_before_its_prediction_is_pending_then_applied(tmp_path: Path) -> None:
    store = ErrorStore(tmp_path)
    pid = new_prediction_id(T0)
    early = store.ingest_feedback([event(pid)], now=T0 + timedelta(seconds=1))
    assert early.states == {"pending": 1}
    store.write_predictions([prediction(pid)], now=T0 + timedelta(seconds=30))  # capture was slower
    assert [p["prediction_id"] for p, _, _ in store.errors()] == [pid]


def test_layout_is_hive_partitioned_parquet(tmp_path: Path) -> None:
    store = ErrorStore(tmp_path)
    pids = [new_prediction_id(T0 + timedelta(hours=h)) for h in range(3)]
    store.write_predictions([prediction(p, at=id_time(p) or T0) for p in pids], now=T0)
    store.ingest_feedback([event(pids[0])], now=T0 + timedelta(days=1))
    keys = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("part-*.parquet"))
    keys = [k for k in keys if not k.startswith("who/")]  # the user index: not a stream
    assert [k.rsplit("/", 1)[0] for k in keys] == [
        "feedback/date=2026-11-02/hour=12",
        "predictions/date=2026-11-01/hour=12",
        "predictions/date=2026-11-01/hour=13",
        "predictions/date=2026-11-01/hour=14",
    ]
    # what BigQuery's external tables (and any hive reader) see: the partition keys as columns
    table = pads.dataset(tmp_path / "predictions", format="parquet", partitioning="hive").to_table()
    assert sorted(table["hour"].to_pylist()) == [12, 13, 14]
    assert set(table["prediction_id"].to_pylist()) == set(pids)


def test_lookup_of_a_minted_id_reads_one_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ErrorStore(tmp_path)
    pids = [new_prediction_id(T0 + timedelta(hours=h)) for h in range(24)]
    for p in pids:
        store.write_predictions([prediction(p, at=id_time(p) or T0)], now=T0)
    read: list[str] = []
    original = store.read_file
    monkeypatch.setattr(
        store, "read_file", lambda key, columns=None: read.append(key) or original(key, columns)
    )
    found = store.lookup([pids[7]])
    assert found["prediction_id"].to_pylist() == [pids[7]]
    assert {k.split("/")[2] for k in read} == {"hour=19"}


def test_time_window_reads_only_its_partitions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ErrorStore(tmp_path)
    pids = [new_prediction_id(T0 + timedelta(hours=h)) for h in range(48)]
    store.write_predictions([prediction(p, at=id_time(p) or T0) for p in pids], now=T0)
    read: list[str] = []
    original = store.read_file
    monkeypatch.setattr(
        store, "read_file", lambda key, columns=None: read.append(key) or original(key, columns)
    )
    window = store.predictions(T0 + timedelta(hours=10), T0 + timedelta(hours=13))
    assert window["prediction_id"].to_pylist() == pids[10:13]
    assert len(read) == 3


def _write_batches(root: str, worker: int, n: int) -> None:
    store = ErrorStore(root)
    for i in range(n):
        pid = new_prediction_id(T0 + timedelta(minutes=worker * 7 + i))
        store.write_predictions([prediction(pid)], now=T0 + timedelta(hours=1))
        store.ingest_feedback([event(pid)], now=T0 + timedelta(hours=1, seconds=i))


def _compact(root: str) -> None:
    ErrorStore(root).compact(now=T0 + timedelta(days=1), min_files=1)


@pytest.mark.parametrize("round_", range(3))
def test_compaction_beside_writers_and_another_compaction_loses_nothing(tmp_path: Path, round_: int) -> None:
    root = str(tmp_path / "store")
    ErrorStore(root)
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_write_batches, args=(root, w, 15)) for w in range(2)]
    compactors = [ctx.Process(target=_compact, args=(root,)) for _ in range(2)]
    for p in writers + compactors:
        p.start()
    for p in writers + compactors:
        p.join(60)
        assert p.exitcode == 0
    store = ErrorStore(root)
    assert store.predictions().num_rows == 30
    assert store.resolve(store.feedback(), now=T0 + timedelta(days=1)).counts["applied"] == 30
    store.compact(now=T0 + timedelta(days=1))
    files = list(Path(root).rglob("part-*.parquet"))
    assert len([f for f in files if "predictions" in f.parts]) == 1
    assert store.predictions().num_rows == 30 and store.feedback().num_rows == 30


def test_a_compaction_killed_before_its_deletes_leaves_no_duplicates(tmp_path: Path) -> None:
    store = ErrorStore(tmp_path)
    pids = [new_prediction_id(T0 + timedelta(seconds=i)) for i in range(5)]
    for p in pids:
        store.write_predictions([prediction(p)], now=T0)
    store.store.delete = lambda key, if_generation=None: (_ for _ in ()).throw(SystemExit("killed"))  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        store.compact(now=T0 + timedelta(days=1))
    fresh = ErrorStore(tmp_path)
    assert len(list(tmp_path.rglob("part-*.parquet"))) == 6  # the inputs and the merged file
    assert sorted(fresh.predictions()["prediction_id"].to_pylist()) == sorted(pids)
    result = fresh.compact(now=T0 + timedelta(days=1))
    assert (result.files_in, result.rows_in, result.rows_out) == (6, 10, 5)
    assert len(list(tmp_path.rglob("part-*.parquet"))) == 1


def test_audio_is_content_addressed(error_store: ErrorStore) -> None:
    uri, sha = error_store.put_audio(b"RIFF fake audio")
    again, sha2 = error_store.put_audio(b"RIFF fake audio")
    assert (uri, sha) == (again, sha2) and uri.endswith(f"audio/{sha[:2]}/{sha}.wav")


def test_current_hour_is_left_to_writers(tmp_path: Path) -> None:
    store = ErrorStore(tmp_path)
    now = datetime.now(UTC)
    for _ in range(3):
        store.write_predictions([prediction(new_prediction_id(now), at=now)])
    assert store.compact(now=now).partitions == 0


def _ingest_same(root: str, path: str) -> None:
    ErrorStore(root).ingest_file(path, now=T0 + timedelta(hours=2))


@pytest.mark.parametrize("round_", range(5))
def test_two_ingests_of_the_same_file_at_once_store_each_record_once(tmp_path: Path, round_: int) -> None:
    """Both processes write their files (neither can know of the other); every reader, and so the
    trigger, sees each prediction and each event once."""
    from stt_flywheel.run.trigger import gather_evidence

    source = tmp_path / "records.jsonl"
    source.write_bytes(b"\n".join(orjson.dumps(record(i)) for i in range(1000)) + b"\n")
    root = str(tmp_path / "store")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_ingest_same, args=(root, str(source))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = ErrorStore(root)
    assert store.predictions().num_rows == 1000
    events = store.feedback()
    assert pc.count_distinct(events["event_id"]).as_py() == 1000  # the same ids twice: repeats, not news
    stats = gather_evidence(store, None, T0 + timedelta(hours=3), timedelta(hours=24))
    assert (stats.new_feedback, stats.new_error_cases, stats.recent_requests) == (1000, 1000, 1000)


def test_two_records_of_one_id_in_one_file_keep_both_events_and_the_later_applies(tmp_path: Path) -> None:
    """Once, the second line was counted a duplicate and its correction never written; the same
    two lines as two files kept both."""
    store = ErrorStore(tmp_path)
    first = {**record(1), "corrected_text": "take two ibuprofen"}
    later = {
        **record(1),
        "corrected_text": "take ten ibuprofen",
        "timestamp": (T0 + timedelta(minutes=5)).isoformat(),
    }
    result = store.ingest([first, later, first], now=T0 + timedelta(hours=1))
    assert (result.read, result.accepted, result.duplicates, result.feedback_events) == (3, 2, 1, 2)
    assert result.balanced
    assert store.predictions().num_rows == 1
    resolution = store.resolve_for(["r1"], now=T0 + timedelta(hours=1))
    assert resolution.applied["r1"]["corrected_text"] == "take ten ibuprofen"
    assert sorted(resolution.states.values()) == ["applied", "superseded"]


def test_an_id_sent_again_with_other_audio_or_hypothesis_is_quarantined_not_merged(tmp_path: Path) -> None:
    """Once, the later record was accepted, the first prediction kept and the new correction
    applied to the old audio: a pair of audio and text that never belonged together."""
    store = ErrorStore(tmp_path)
    assert store.ingest([record(1), record(2)], now=T0).accepted == 2
    other_audio = {**record(1), "audio_uri": "/audio/other.wav", "corrected_text": "something else"}
    other_hyp = {**record(2), "hypothesis": "another hypothesis"}
    in_batch = [record(3), {**record(3), "audio_uri": "/audio/x.wav"}]
    again = {**record(1), "corrected_text": "take two ibuprofen tablets"}  # same prediction: a new event
    result = store.ingest([other_audio, other_hyp, *in_batch, again], now=T0 + timedelta(hours=1))
    assert result.balanced
    assert [(q.line, q.reason) for q in result.quarantined] == [
        (1, "conflicting_prediction"),
        (2, "conflicting_prediction"),
        (4, "conflicting_prediction"),
    ]
    assert "audio_uri" in result.quarantined[0].detail and "hypothesis" in result.quarantined[1].detail
    assert result.accepted == 2 and result.feedback_events == 2
    predictions = {r["prediction_id"]: r for r in store.predictions().to_pylist()}
    assert predictions["r1"]["audio_uri"] == "/audio/1.wav" and len(predictions) == 3
    applied = store.resolve_for(["r1"], now=T0 + timedelta(hours=1)).applied["r1"]
    assert applied["corrected_text"] == "take two ibuprofen tablets"


def test_metadata_beyond_what_a_request_may_carry_is_quarantined(tmp_path: Path) -> None:
    store = ErrorStore(tmp_path)
    many = {**record(1), "metadata": {f"k{i}": "v" for i in range(17)}}
    long = {**record(2), "metadata": {"domain": "x" * 201}}
    result = store.ingest([many, long, {**record(3), "metadata": {"domain": "pharmacy"}}], now=T0)
    assert result.accepted == 1 and result.balanced
    assert [(q.line, q.reason) for q in result.quarantined] == [
        (1, "metadata_too_large"),
        (2, "metadata_too_large"),
    ]
    assert "17 metadata keys; at most 16" in result.quarantined[0].detail


def _as_column_row(value: dict[str, Any]) -> dict[str, Any]:
    """A record as the line-by-line rules keep it, in the form of a row of `RECORD_COLUMNS`."""
    return {
        "id": value["id"],
        "audio_uri": value["audio_uri"],
        "hypothesis": value["hypothesis"],
        "corrected_text": value.get("corrected_text"),
        "flagged": value.get("flagged", False),
        "model_version": value.get("model_version"),
        "timestamp": value["timestamp"].astimezone(UTC),
        "metadata": dict(value.get("metadata") or {}),
        "user": value.get("user"),
    }


def test_the_fast_parse_of_records_keeps_and_refuses_what_the_rules_do_line_by_line() -> None:
    """`parse_records` reads lines a block at a time as columns and sends any line the columns
    cannot vouch for through `parse_rows`: for lines of every kind — good, bad JSON, not an object,
    two objects on a line, an id too long, a line too long, a wrong type, an extra field, a key
    given twice, `null` where only absence is allowed (and inside text, and as a metadata key
    named like an optional field), metadata too large or of the wrong type, times past the
    calendar, in the future, not in the calendar or not RFC 3339, invalid UTF-8, dicts and text as
    well as bytes — what it keeps (as columns) and what it quarantines (reason, detail, line) equal
    what `parse_rows` alone decides, each line alone and all in one block."""
    from stt_flywheel.config import ServingLimits
    from stt_flywheel.data.error_store.columns import fast_records
    from stt_flywheel.data.error_store.lines import MAX_LINE_BYTES, parse_records, parse_rows, record_reason
    from stt_flywheel.data.records import bounded_records

    limits = ServingLimits(max_metadata_keys=3, max_metadata_chars=20)
    good = record(1)
    variants: list[Any] = [
        good,
        {**good, "metadata": {"a": "b"}, "user": "alice", "model_version": "3", "flagged": True},
        {**good, "metadata": {"é" * 20: "ü" * 20}, "corrected_text": None, "user": None},
        {**good, "metadata": {"user": "x", "b": "y"}},
        {**good, "metadata": {}},
        {**good, "hypothesis": 'she said "user": null, then left'},
        {**good, "timestamp": (T0 + timedelta(hours=23)).isoformat()},
        {**good, "timestamp": "2026-10-01T12:00:00.5-09:30"},
        {**good, "timestamp": "2026-10-01 12:00:00+01:00"},
        {**good, "metadata": {str(i): "v" for i in range(4)}},
        {**good, "metadata": {"k": "v" * 21}},
        {**good, "metadata": {"k" * 21: "v"}},
        {**good, "metadata": {"k": 1}},
        {**good, "metadata": {"k": None}},
        {**good, "metadata": {"user": None}},
        {**good, "metadata": {"k": {"n": "v"}}},
        {**good, "metadata": None},
        {**good, "metadata": "domain=x"},
        {**good, "metadata": {"k": "v" * 21, "j": 2}},
        {**good, "flagged": None},
        {**good, "flagged": 1},
        {**good, "extra": None},
        {**good, "id": "x" * 257},
        {**good, "id": ""},
        {**good, "id": 7},
        {**good, "hypothesis": 5},
        {**good, "audio_uri": None},
        {**good, "extra": True},
        {**good, "timestamp": "9999-12-31T23:30:00-05:00"},
        {**good, "timestamp": "0001-01-01T00:30:00+05:00"},
        {**good, "timestamp": (T0 + timedelta(days=2)).isoformat()},
        {**good, "timestamp": "2026-11-01T12:00:00"},
        {**good, "timestamp": "2026-02-30T12:00:00Z"},
        {**good, "timestamp": "2026-10-01 12:00:00z"},
        {**good, "timestamp": "2026-10-01T12:00:00.1234567+02:00"},
        [good],
        "a string",
    ]
    dumped = [orjson.dumps(v) for v in variants]
    base = orjson.dumps(good)[:-1]
    odd = [
        b"{not json",
        b'{"id": "r9"' + b" " * MAX_LINE_BYTES + b"}",
        base + b"}" + orjson.dumps(good),  # two objects on one line
        base + b', "id": "r2"}',  # a key given twice
        base + b', "us\\u0065r": null}',  # an optional key's null, the key escaped
        base + b', "model_version" :\tnull}',
        base.replace(b'"hypothesis":"', b'"hypothesis":"\\ud800'),
        base.replace(b'"hypothesis":"', b'"hypothesis":"\xff'),
        base + b"}\r" + orjson.dumps(good),
        b"  " + orjson.dumps(good),
    ]
    lines: list[Any] = (
        dumped + odd + [v for v in variants if isinstance(v, dict)] + ["  {}  ", dumped[0].decode()]
    )

    def outcome(parse: Any) -> tuple[list[Any], list[Any]]:
        quarantined: list[Any] = []
        kept = parse(quarantined)
        return kept, [(q.line, q.reason, q.detail) for q in quarantined]

    def columns(rows: list[Any]) -> tuple[list[Any], list[Any]]:
        def parse(q: list[Any]) -> list[Any]:
            kept = parse_records(rows, limits, q, T0, lambda data: None).to_pylist()
            return [
                (r.pop("line"), {**r, "metadata": dict(r["metadata"])}) for r in kept if r.pop("item") >= 0
            ]

        return outcome(parse)

    slow = bounded_records(limits.max_metadata_keys, limits.max_metadata_chars).validator.validate_python

    def by_line(rows: list[Any]) -> tuple[list[Any], list[Any]]:
        def parse(q: list[Any]) -> list[Any]:
            kept = parse_rows(rows, slow, q, "timestamp", T0, lambda data: None, record_reason(limits))
            return [(n, _as_column_row(v)) for n, _, v in kept]

        return outcome(parse)

    # what the columns vouch for, nothing left to the lines (the quoted null and, beside a line with
    # a metadata key named "user", one with a top-level "user": null are left to them)
    block = [*dumped[:3], dumped[4], *dumped[6:9]]
    at = np.arange(len(block))
    vouched, left = fast_records(
        block, at, at + 1, (MAX_LINE_BYTES, 256, 3, 20), (T0 - timedelta(days=400), T0 + timedelta(days=1))
    )
    assert vouched.num_rows == len(block) and not left.any()
    for rows in [lines, *([line] for line in dumped + odd)]:
        assert columns(rows) == by_line(rows), rows
    kept, refused = columns(lines)
    # as bytes and as dicts: the first nine variants, and what pydantic's lax mode reads (a flag
    # of 1, a time with a space and a small z, seven digits of a second); the key given twice (the
    # last counts), the escaped optional null, the tab before a null, the padded line, the text
    assert len(kept) == 2 * (9 + 3) + 5
    assert {reason for _, reason, _ in refused} == {
        "metadata_too_large",
        "invalid_record",
        "id_too_long",
        "invalid_timestamp",
        "timestamp_in_future",
        "not_an_object",
        "invalid_json",
        "line_too_long",
    }


def test_lines_in_many_blocks_with_a_few_bad_ones_are_kept_and_refused_as_line_by_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Beyond one block (`PROBE` lines; here two chunks of 4 × PROBE), a line Arrow refuses spoils
    its block, which is halved until the bad line is in a small one: in order, across blocks and
    chunks, what is kept and what is quarantined equal the line-by-line decisions, and most lines
    are still read as columns."""
    from stt_flywheel.config import ServingLimits
    from stt_flywheel.data.error_store import lines as parsing
    from stt_flywheel.data.records import bounded_records

    probe = parsing.PROBE
    monkeypatch.setattr(parsing, "CHUNK", 4 * probe)
    vouched: list[int] = []

    def counted(*args: Any) -> Any:
        table, left = fast_records(*args)
        vouched.append(table.num_rows)
        return table, left

    fast_records = parsing.fast_records
    monkeypatch.setattr(parsing, "fast_records", counted)
    limits = ServingLimits()
    rows: list[Any] = [orjson.dumps(record(i)) for i in range(8 * probe)]
    rows[probe + 5] = orjson.dumps({**record(5), "timestamp": "2026-02-30T10:00:00Z"})
    rows[5 * probe + 1] = rows[5 * probe + 1][:-1] + b', "id": "again"}'
    rows[6 * probe + 3] = rows[3] + rows[4]
    rows[-1] = b"[]"
    quarantined: list[Any] = []
    kept = parsing.parse_records(rows, limits, quarantined, T0, lambda data: None).to_pylist()
    slow = bounded_records(limits.max_metadata_keys, limits.max_metadata_chars).validator.validate_python
    by_line: list[Any] = []
    one_by_one = parsing.parse_rows(
        rows, slow, by_line, "timestamp", T0, lambda data: None, parsing.record_reason(limits)
    )
    assert [(r["line"], r["id"]) for r in kept] == [(n, v["id"]) for n, _, v in one_by_one]
    assert [(q.line, q.reason) for q in quarantined] == [(q.line, q.reason) for q in by_line]
    assert len(kept) == len(rows) - 3  # the last line, the two objects on one line, 30 February
    assert sum(vouched) > len(rows) - 3 * probe
