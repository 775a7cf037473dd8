"""Retention (`retention.*`, `store retain`, `store lifecycle`) with a controlled clock."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml

from stt_flywheel.config import DEFAULT_BASE_MODEL, RetentionSettings, load_config
from stt_flywheel.data.capture import CapturedPrediction, CaptureWriter
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.records import new_prediction_id

NOW = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)


def _age(path: Path, when: datetime) -> None:
    os.utime(path, (when.timestamp(), when.timestamp()))


def _capture(store: ErrorStore, tmp_path: Path, made: list[tuple[datetime, bytes]]) -> list[str]:
    """Predictions made at these times with this audio, through the capture writer; their ids."""
    writer = CaptureWriter(store, tmp_path / "spill", flush_interval_s=0.05)
    ids = []
    for at, audio in made:
        ids.append(new_prediction_id(at))
        writer.offer(CapturedPrediction(ids[-1], at, "1", None, "hello there", {}, 1.0, audio))
    assert writer.close()["captured"] == len(made)
    return ids


def test_the_store_keeps_what_is_younger_than_its_days_and_audio_a_younger_prediction_names(
    tmp_path: Path,
) -> None:
    """Predictions go by the hour they were made, feedback and quarantine lines by the hour they
    arrived, each partition whole once its hour ended before the cutoff; an old audio object stays
    while a prediction made since its cutoff names it (the same bytes sent again), an old one that
    only expired predictions named goes, and young audio stays. A dry run deletes nothing."""
    store = ErrorStore(tmp_path / "store")
    old, recent = NOW - timedelta(days=40), NOW - timedelta(days=1)
    shared, lonely, fresh = b"RIFF-shared", b"RIFF-lonely", b"RIFF-fresh"
    first, resent, alone, young = _capture(
        store, tmp_path, [(old, shared), (recent, shared), (old, lonely), (NOW - timedelta(hours=1), fresh)]
    )
    audio = {p.name.split(".")[0]: p for p in (tmp_path / "store" / "audio").rglob("*.wav")}
    assert len(audio) == 3  # the shared bytes are stored once
    for path in audio.values():
        _age(path, old)
    _age(next(p for p in audio.values() if p.read_bytes() == fresh), NOW - timedelta(hours=1))
    for at, pid in ((old, first), (NOW, resent)):
        event = {
            "prediction_id": pid,
            "corrected_text": "hello",
            "event_time": at,
            "source": "app",
        }
        assert store.ingest_feedback([event], now=at).states["applied"] == 1
    store.ingest_feedback([b"not json"], now=old)
    store.ingest_feedback([b"not json either"], now=NOW)

    settings = RetentionSettings(predictions_days=30, feedback_days=30, quarantine_days=30, audio_days=7)
    counted = store.retain(settings, NOW, dry_run=True)
    assert counted.deleted == {"predictions": 1, "feedback": 1, "quarantine": 1, "audio": 1}  # files
    assert counted.kept == {"audio": 1}
    assert store.predictions().num_rows == 4 and len(list(store.quarantine())) == 2

    done = store.retain(settings, NOW)
    assert (done.deleted, done.kept) == (counted.deleted, counted.kept)
    assert set(store.predictions()["prediction_id"].to_pylist()) == {resent, young}
    assert store.feedback()["prediction_id"].to_pylist() == [resent]
    assert [q["raw"] for q in store.quarantine()] == ["not json either"]
    left = {p.read_bytes() for p in (tmp_path / "store" / "audio").rglob("*.wav")}
    assert left == {shared, fresh}
    again = store.retain(settings, NOW)
    assert again.deleted == {"predictions": 0, "feedback": 0, "quarantine": 0, "audio": 0}
    assert store.retain(RetentionSettings(), NOW).deleted == {}  # null days keep everything


def _config(tmp_path: Path, retention: dict[str, int]) -> Path:
    path = tmp_path / "flywheel.yaml"
    path.write_text(yaml.safe_dump({"paths": {"root": "state"}, "retention": retention}))
    return path


def test_datasets_and_runs_go_with_their_days_unless_a_registered_version_names_them(
    tmp_path: Path, cli: object
) -> None:
    """An old dataset and an old run go; the dataset and the run of a registered version stay
    however old, and so do young ones; the monitor's decisions go one file at a time; `store
    retain --dry-run` counts, `store retain` deletes, `--json` says the same."""
    from stt_flywheel.deployment.backends import open_registry

    path = _config(tmp_path, {"datasets_days": 30, "reports_days": 30})
    config = load_config(path)
    open_registry(config).register(DEFAULT_BASE_MODEL, dataset_version="ds-kept", source_run="run-kept")
    old, young = NOW - timedelta(days=90), datetime.now(UTC)
    trees = {
        Path(config.paths.datasets): ["ds-kept", "ds-old", "ds-young"],
        Path(config.paths.reports): ["run-kept", "run-old", "run-young"],
        Path(config.paths.pipeline_root): ["run-kept", "run-old"],
    }
    for root, names in trees.items():
        for name in names:
            (root / name / "sub").mkdir(parents=True)
            for file in (root / name / "manifest.json", root / name / "sub" / "rows.jsonl"):
                file.write_text("{}")
                _age(file, young if name.endswith("young") else old)
    monitor = Path(config.paths.reports) / "monitor"
    monitor.mkdir()
    for name, when in (("old.json", old), ("young.json", young)):
        (monitor / name).write_text("{}")
        _age(monitor / name, when)

    status, out, err = cli("store", "retain", "--config", str(path), "--dry-run", "--json")  # type: ignore[operator]
    assert status == 0, err
    counted = orjson.loads(out)
    assert counted["dry_run"] and counted["deleted"] == {"datasets": 1, "runs": 2, "pipeline_runs": 1}
    assert counted["kept"] == {"datasets": 1, "runs": 1, "pipeline_runs": 1}
    assert (Path(config.paths.datasets) / "ds-old" / "manifest.json").exists()

    status, out, err = cli("store", "retain", "--config", str(path))  # type: ignore[operator]
    assert status == 0, err
    assert "datasets: deleted 1 (kept 1 past their days" in out
    for root, names in trees.items():
        left = {p.name for p in root.iterdir() if any(p.rglob("*.json*"))} - {"monitor"}
        assert left == {n for n in names if not n.endswith("old")}
    assert [p.name for p in monitor.iterdir()] == ["young.json"]


def test_the_retention_pipeline_deletes_what_is_past_its_days_when_run(tmp_path: Path) -> None:
    """The compiled retention pipeline (what a schedule runs), run with kfp.local: the partition
    past its days goes, today's stays, and the run's summary says what went."""
    from flywheel_pipelines.compile import compile_pipeline, run_compiled_locally

    path = _config(tmp_path, {"predictions_days": 30})
    config = load_config(path)
    store = ErrorStore(Path(config.paths.error_store))
    now = datetime.now(UTC)
    old, young = _capture(store, tmp_path, [(now - timedelta(days=40), b"RIFF-a"), (now, b"RIFF-b")])
    package = compile_pipeline(tmp_path / "retention.yaml", pipeline="retention")
    run_compiled_locally(package, config.paths.pipeline_root, {"config_uri": str(path)})
    assert store.predictions()["prediction_id"].to_pylist() == [young]
    (summary,) = Path(config.paths.pipeline_root).rglob("summary")
    assert "| predictions | 1 | 0 |" in summary.read_text() and old not in summary.read_text()


def test_store_lifecycle_is_a_configuration_the_client_library_and_a_bucket_accept(
    tmp_path: Path, gcs_bucket: str, cli: object
) -> None:
    """One Delete rule per stream with days set, by age and the stream's prefix under the
    store; google-cloud-storage reads it back rule for rule, and the GCS emulator takes it. A
    local store is refused with a clear error."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[attr-defined]

    path = tmp_path / "flywheel.yaml"
    store = f"{gcs_bucket}/error-store"
    path.write_text(
        yaml.safe_dump(
            {
                "paths": {"root": "state", "error_store": store},
                "retention": {"predictions_days": 30, "quarantine_days": 7},
            }
        )
    )
    status, out, err = cli("store", "lifecycle", "--config", str(path))  # type: ignore[operator]
    assert status == 0, err
    rules = orjson.loads(out)["rule"]
    prefix = store.removeprefix("gs://").split("/", 1)[1]
    assert rules == [
        {"action": {"type": "Delete"}, "condition": {"age": 31, "matchesPrefix": [f"{prefix}/predictions/"]}},
        {"action": {"type": "Delete"}, "condition": {"age": 8, "matchesPrefix": [f"{prefix}/quarantine/"]}},
    ]
    client = storage.Client(project="emulator", credentials=AnonymousCredentials())
    bucket = client.bucket(store.removeprefix("gs://").split("/", 1)[0])
    bucket.lifecycle_rules = rules
    # the library reads each rule back as one it knows (it drops a rule of an unknown kind)
    assert [type(r).__name__ for r in bucket.lifecycle_rules] == ["LifecycleRuleDelete"] * 2
    assert list(bucket.lifecycle_rules) == rules
    bucket.patch()  # and the emulator takes the request (it does not keep lifecycle rules)

    status, _, err = cli("store", "lifecycle", "--config", str(_config(tmp_path, {"predictions_days": 30})))  # type: ignore[operator]
    assert status == 1 and "is for a Cloud Storage bucket" in err and "Traceback" not in err


@pytest.mark.parametrize("days", [0, -1])
def test_retention_days_are_at_least_one(tmp_path: Path, days: int) -> None:
    from stt_flywheel.config import ConfigError

    with pytest.raises(ConfigError, match="retention.audio_days"):
        load_config(_config(tmp_path, {"audio_days": days}))
