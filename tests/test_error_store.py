"""The error store: ingestion with quarantine and de-duplication, watermarked scans, error flags."""

from datetime import timedelta
from pathlib import Path

import orjson
from records import T0, record

from stt_flywheel.data.error_store import ErrorStore


def test_ingest_balances_and_quarantines_with_reasons(tmp_path: Path) -> None:
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
    assert result.balanced
    assert [q.reason for q in result.quarantined] == [
        "invalid_json",
        "not_an_object",
        "invalid_record",
        "invalid_record",
    ]
    assert "timezone" in result.quarantined[-1].detail
    saved = list((tmp_path / "quarantine").glob("*.jsonl"))
    assert len(saved) == 1
    assert len(saved[0].read_bytes().splitlines()) == 4
    # a second ingest of the same ids only counts duplicates
    again = store.ingest([orjson.dumps(record(1)), orjson.dumps(record(2))], now=T0 + timedelta(hours=1))
    assert (again.accepted, again.duplicates) == (0, 2)


def test_scan_respects_watermark(tmp_path: Path) -> None:
    store = ErrorStore(tmp_path)
    store.ingest([record(i) for i in range(3)], now=T0)
    store.ingest([record(i) for i in range(3, 5)], now=T0 + timedelta(days=1))
    assert len(list(store.scan())) == 5
    assert {r.id for r in store.scan(after=T0)} == {"r3", "r4"}
    assert {r.id for r in store.scan(upto=T0)} == {"r0", "r1", "r2"}


def test_error_and_correction_flags() -> None:
    from stt_flywheel.data.error_store import TranscriptRecord

    assert TranscriptRecord.model_validate(record(1)).is_corrected
    flagged = TranscriptRecord.model_validate(record(2, corrected=False))
    assert flagged.is_error
    assert not flagged.is_corrected
    same = TranscriptRecord.model_validate({**record(3), "corrected_text": "Take two ibuprofin."})
    assert not same.is_error
