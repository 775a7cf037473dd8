"""Forgetting a person in the error store: what goes, what stays, and a forget beside others."""

from __future__ import annotations

import hashlib
import multiprocessing
import random
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stt_flywheel.data.capture import CapturedPrediction, CaptureWriter
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.error_store.forget import forget_rows, hashed_id, request_id, write_tombstone
from stt_flywheel.data.identity import Identity, Senders
from stt_flywheel.data.records import new_prediction_id
from stt_flywheel.storage.objectstore import open_store

T0 = datetime(2026, 12, 1, tzinfo=UTC)
KEY = b"k" * 32
PEOPLE = ("alice", "bob", "carol")


def _store(root: Path | str) -> ErrorStore:
    return ErrorStore(root, senders=Senders(Identity(KEY)))


@pytest.fixture(params=["directory", pytest.param("gcs", marks=pytest.mark.gcs)])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the store is: a directory, or a bucket on the GCS emulator."""
    if request.param == "directory":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("gcs_bucket"))


def _populate(
    root: Path | str, hours: int = 6, batches: int = 2, spill: Path | None = None
) -> dict[str, list[str]]:
    """Each person asks `hours` × `batches` times (one file per batch and hour), corrects each
    answer, and sends one bad line; alice and bob once send the same audio bytes. Their ids."""
    store = _store(root)
    ids: dict[str, list[str]] = {p: [] for p in PEOPLE}
    for batch in range(batches):
        writer = CaptureWriter(store, spill or Path(root).parent / "spill", flush_interval_s=3600)
        for h in range(hours):
            for person in PEOPLE:
                at = T0 + timedelta(hours=h, minutes=batch)
                pid = new_prediction_id(at)
                audio = (
                    b"RIFF shared" if (h, batch) == (0, 0) and person != "carol" else f"RIFF {pid}".encode()
                )
                pseudonym = store.senders.pseudonym(person)
                writer.offer(
                    CapturedPrediction(
                        pid, at, "1", None, f"{person} said {h}", {}, 1.0, audio, user=pseudonym
                    )
                )
                ids[person].append(pid)
        assert writer.close()["captured"] == hours * len(PEOPLE)
    events = [
        {
            "prediction_id": pid,
            "corrected_text": f"{person} meant {k}",
            "event_time": T0 + timedelta(hours=k % hours),
            "source": "app",
            "user": person,
        }
        for person in PEOPLE
        for k, pid in enumerate(ids[person])
    ]
    store.ingest_feedback(events, now=T0 + timedelta(hours=hours))
    bad = [
        orjson.dumps({"prediction_id": ids[p][0], "user": p, "source": "app", "event_time": 5})
        for p in PEOPLE
    ]
    store.ingest_feedback(bad, now=T0 + timedelta(hours=hours))
    return ids


def _everything(root: Path | str) -> list[tuple[str, str]]:
    """Every row, line and object name in the store, as text, with the key it came from."""
    out = []
    objects = open_store(root)
    for key in sorted(objects.list()):
        if key.startswith(".locks/") or "/.locks/" in key:
            continue
        found = objects.read(key)
        if found is None:
            continue
        if key.endswith(".parquet"):
            rows = pq.read_table(pa.BufferReader(found.data)).to_pylist()
            out += [(key, orjson.dumps(r, default=str).decode()) for r in rows]
        elif key.endswith((".jsonl", ".json")):
            out += [(key, line) for line in found.data.decode().splitlines()]
        else:
            out.append((key, key.rsplit("/", 1)[-1]))
    return out


def _traces(root: Path | str, person: str, ids: list[str]) -> list[tuple[str, str]]:
    """What in the store names `person`: their pseudonym, a prediction id, their words, their audio."""
    pseudonym = Senders(Identity(KEY)).pseudonym(person)
    marks = [pseudonym, f"{person} said", f"{person} meant", *ids, *(f"RIFF {p}" for p in ids)]
    shas = [hashlib.sha256(f"RIFF {p}".encode()).hexdigest() for p in ids]  # their own audio
    return [
        (f, text)
        for f, text in _everything(root)
        if any(m in text for m in marks) or any(s in text for s in shas)
    ]


def _others(root: Path | str, ids: dict[str, list[str]], gone: set[str]) -> list[tuple[str, Any]]:
    """The rows of the people not forgotten, by what they hold (not by file)."""
    store = _store(root)
    mine = {p for person in gone for p in ids[person]}
    rows = [
        ("prediction", {k: v for k, v in r.items() if k != "ingested_at"})
        for r in store.predictions().to_pylist()
        if r["prediction_id"] not in mine
    ]
    rows += [("event", r) for r in store.feedback().to_pylist() if r["prediction_id"] not in mine]
    rows += [("quarantine", q["raw"]) for q in store.quarantine() if not any(p in q["raw"] for p in mine)]
    return sorted(
        (kind, orjson.dumps(r, default=str, option=orjson.OPT_SORT_KEYS).decode()) for kind, r in rows
    )


def _forget(root: Path | str, person: str) -> Any:
    """What `stt-flywheel forget --user PERSON` does in the store."""
    store = _store(root)
    users = {store.senders.pseudonym(person)}
    request = request_id(users, [])
    stone = write_tombstone(store, request, {"request": request, "users": sorted(users), "predictions": []})

    def found(ids: set[str], audio: set[str]) -> None:
        write_tombstone(
            store, request, {"predictions": sorted(hashed_id(p) for p in ids), "audio": sorted(audio)}
        )

    return forget_rows(store, users, set(), found=found, audio=stone.get("audio", []))


def test_forgetting_a_person_leaves_nothing_of_them_but_the_tombstone_and_everyone_else_as_they_were(
    tmp_path: Path,
) -> None:
    """alice's predictions, events, quarantined line and audio leave the store; the audio bob sent
    with the same bytes stays; bob's and carol's rows are the same rows as before; the tombstone
    names alice by her pseudonym and her predictions by hashes only. A later ingest of alice's
    records or of events about her predictions keeps nothing of them (`forgotten`)."""
    root = tmp_path / "store"
    ids = _populate(root)
    before = _others(root, ids, {"alice"})
    shared = [p for p in (root / "audio").rglob("*.wav") if p.read_bytes() == b"RIFF shared"]
    assert _traces(root, "alice", ids["alice"])

    counted = forget_rows(_store(root), {_store(root).senders.pseudonym("alice")}, set(), dry_run=True)
    assert (counted.predictions, counted.feedback_events, counted.quarantine_lines) == (12, 12, 1)
    assert counted.audio_objects == 11  # the shared bytes stay: bob's prediction names them
    assert len(_traces(root, "alice", ids["alice"])) > 0

    done = _forget(root, "alice")
    assert (done.predictions, done.feedback_events, done.quarantine_lines, done.audio_objects) == (
        12,
        12,
        1,
        11,
    )
    traces = _traces(root, "alice", ids["alice"])
    assert traces and all(f.startswith("tombstones/") for f, _ in traces)
    stone = orjson.loads((root / traces[0][0]).read_text())
    assert sorted(stone["predictions"]) == sorted(hashed_id(p) for p in ids["alice"])
    assert not any(p in orjson.dumps(stone).decode() for p in ids["alice"])
    assert _others(root, ids, {"alice"}) == before
    assert [p.read_bytes() for p in shared] == [b"RIFF shared"] and shared[0].exists()

    store = _store(root)
    later = T0 + timedelta(days=1)
    again = {
        "id": ids["alice"][0],
        "audio_uri": "/a.wav",
        "hypothesis": "x",
        "timestamp": T0.isoformat(),
        "user": "alice",
    }
    fresh = {**again, "id": new_prediction_id(T0)}
    result = store.ingest(
        [orjson.dumps(again), orjson.dumps({**fresh, "user": "carol"}), orjson.dumps(fresh)], now=later
    )
    assert [(q.line, q.reason, q.raw) for q in result.quarantined] == [
        (1, "forgotten", ""),
        (3, "forgotten", ""),
    ]
    assert result.accepted == 1
    event = {"prediction_id": ids["alice"][1], "flagged": True, "event_time": later, "source": "review-team"}
    assert [q.reason for q in store.ingest_feedback([event], now=later).quarantined] == ["forgotten"]
    assert all(f.startswith("tombstones/") for f, _ in _traces(root, "alice", ids["alice"]))


def _forget_in_child(root: str) -> None:
    _forget(root, "alice")


@pytest.mark.parametrize("round_", range(4))
def test_a_forget_killed_at_any_point_is_finished_by_its_rerun(
    tmp_path: Path, where: str, round_: int
) -> None:
    """`kill -9` of a forget at a random moment, then the same request again: nothing of alice
    is left but her tombstone, and bob's and carol's rows are as they were."""
    root = where
    ids = _populate(root, hours=12, batches=2, spill=tmp_path / "spill")
    before = _others(root, ids, {"alice"})
    child = multiprocessing.get_context("fork").Process(target=_forget_in_child, args=(str(root),))
    child.start()
    child.join(timeout=random.Random(round_).uniform(0.05, 0.6))
    child.kill()
    child.join()
    _forget(root, "alice")
    left = [f for f, _ in _traces(root, "alice", ids["alice"]) if not f.startswith("tombstones/")]
    assert not left
    assert _others(root, ids, {"alice"}) == before


@pytest.mark.parametrize("round_", range(3))
def test_two_forgets_and_a_compaction_at_once_leave_neither_person_and_the_third_whole(
    tmp_path: Path, where: str, round_: int
) -> None:
    """alice's forget, bob's forget and a compaction of the same hours run together: afterwards
    neither alice nor bob is anywhere but in a tombstone, and carol's rows are all there."""
    root = where
    ids = _populate(root, hours=8, batches=3, spill=tmp_path / "spill")
    before = _others(root, ids, {"alice", "bob"})
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def run(job: Any) -> None:
        try:
            start.wait()
            job()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    jobs = [
        lambda: _forget(root, "alice"),
        lambda: _forget(root, "bob"),
        lambda: _store(root).compact(now=T0 + timedelta(days=2)),
    ]
    random.Random(round_).shuffle(jobs)
    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for person in ("alice", "bob"):
        left = [(f, t[:80]) for f, t in _traces(root, person, ids[person]) if not f.startswith("tombstones/")]
        assert not left, person
    assert _others(root, ids, {"alice", "bob"}) == before


def test_forget_on_the_command_line_audits_the_request_and_keeps_no_raw_id(tmp_path: Path, cli: Any) -> None:
    """`stt-flywheel forget --prediction-id`: a dry run changes nothing; the run removes the
    prediction and its event, writes one audit entry (reason, counts, no id) and a tombstone of
    hashes; a rerun finds nothing more. Mistakes get one line and exit 1."""
    import yaml

    from stt_flywheel.config import load_config
    from stt_flywheel.deployment.backends import open_registry

    path = tmp_path / "flywheel.yaml"
    path.write_text(yaml.safe_dump({"paths": {"root": "state"}}))
    store = ErrorStore(Path(load_config(path).paths.error_store))
    records = [
        {
            "id": f"r{i}",
            "audio_uri": f"/a/{i}.wav",
            "hypothesis": "take two",
            "corrected_text": f"take {i}",
            "timestamp": T0.isoformat(),
        }
        for i in range(3)
    ]
    assert store.ingest(records, now=T0 + timedelta(hours=1)).accepted == 3
    args = ["forget", "--prediction-id", "r1", "--reason", "ticket 118", "--config", str(path)]

    status, out, err = cli(*args, "--dry-run", "--json")
    assert status == 0, err
    assert orjson.loads(out)["predictions"] == 1 and store.predictions().num_rows == 3
    assert not (Path(store.root) / "tombstones").exists()

    status, out, err = cli(*args)
    assert status == 0, err
    assert "removed 1 predictions, 1 feedback events" in out and "no registered version learnt" in out
    assert sorted(store.predictions()["prediction_id"].to_pylist()) == ["r0", "r2"]
    assert sorted(store.feedback()["prediction_id"].to_pylist()) == ["r0", "r2"]
    [entry] = [e for e in open_registry(load_config(path)).audit_log() if e.action == "forget"]
    assert entry.detail["reason"] == "ticket 118" and entry.detail["predictions"] == 1
    assert "r1" not in orjson.dumps(entry.detail).decode()
    [stone] = (Path(store.root) / "tombstones").glob("*.json")
    assert (
        orjson.loads(stone.read_bytes())["predictions"] == [hashed_id("r1")]
        and b"r1" not in stone.read_bytes()
    )

    status, out, err = cli(*args, "--json")
    assert status == 0 and orjson.loads(out)["predictions"] == 0

    for wrong, says in (
        (["forget", "--reason", "x", "--config", str(path)], "name whom to forget"),
        (["forget", "--prediction-id", "r0", "--reason", " ", "--config", str(path)], "say why"),
        (["forget", "--user", " ", "--reason", "x", "--config", str(path)], "names nobody"),
    ):
        status, out, err = cli(*wrong)
        assert status == 1 and says in err and "Traceback" not in err, (wrong, err)


def _publish(root: Path, name: str, rows: list[dict[str, str]], quarantined: list[str]) -> None:
    """A published dataset as the builder leaves one: its splits, manifest and quarantine."""
    from datasets import Dataset, DatasetDict

    columns = {k: [r[k] for r in rows] for k in ("id", "text", "user", "source")}
    columns["audio_wav"] = [f"RIFF {r['id']}".encode() for r in rows]
    DatasetDict(
        {
            "train": Dataset.from_dict(columns),
            "heldout": Dataset.from_dict({k: v[:1] for k, v in columns.items()}),
        }
    ).save_to_disk(str(root / name / "data"))
    (root / name / "quarantine.jsonl").write_bytes(
        b"".join(orjson.dumps({"id": i, "reason": "x"}) + b"\n" for i in quarantined)
    )
    (root / name / "manifest.json").write_bytes(
        orjson.dumps({"version": name, "splits": {"train": len(rows)}})
    )


def _flywheel(tmp_path: Path) -> tuple[Path, Any, dict[str, list[str]]]:
    """A config whose state holds the populated store (two hours, one batch) under its key."""
    import yaml

    from stt_flywheel.config import load_config

    path = tmp_path / "flywheel.yaml"
    path.write_text(yaml.safe_dump({"paths": {"root": "state"}}))
    config = load_config(path)
    root = Path(config.paths.error_store)
    root.parent.mkdir(parents=True, exist_ok=True)
    (root.parent / "identity.key").write_bytes(KEY)
    (root.parent / "identity.key").chmod(0o600)
    return path, config, _populate(root, hours=2, batches=1)


def _rows(ids: dict[str, list[str]], **users: str) -> list[dict[str, str]]:
    """Dataset rows of these people's corrections (name → pseudonym)."""
    return [
        {"id": p, "text": f"{who} meant it", "user": u, "source": "correction"}
        for who, u in users.items()
        for p in ids[who]
    ]


def test_forget_writes_each_dataset_again_without_them_and_names_the_versions_that_learnt(
    tmp_path: Path,
) -> None:
    """A dataset a registered version trained on holds alice's corrections (and a quarantined
    line of hers): forget names that version and its child, writes the dataset again without
    her under a new version, empties the old one to a manifest naming it (lineage follows), and
    afterwards nothing in the store, the datasets or the audit log names her but the tombstone."""

    from stt_flywheel.config import DEFAULT_BASE_MODEL
    from stt_flywheel.deployment.backends import open_registry
    from stt_flywheel.run.forget import forget
    from stt_flywheel.run.lineage import trained_users

    path, config, ids = _flywheel(tmp_path)
    alice, bob = (_store(Path(config.paths.error_store)).senders.pseudonym(p) for p in ("alice", "bob"))
    datasets = Path(config.paths.datasets)
    rows = _rows(ids, alice=alice, bob=bob)
    _publish(datasets, "ds-one", rows, [ids["alice"][1], ids["bob"][1]])
    _publish(datasets, "ds-other", [r for r in rows if r["user"] == bob], [])
    run = Path(config.paths.reports) / "run-1"
    run.mkdir(parents=True)
    example = {"id": ids["alice"][0], "ref": "alice meant 0", "candidate_errors": 1}
    (run / "validation.json").write_bytes(
        orjson.dumps({"churn": {"broken": [example, {**example, "id": ids["bob"][0], "ref": "bob meant 0"}]}})
    )
    (run / "utterances.jsonl").write_bytes(
        b"".join(orjson.dumps({"id": p, "ref": "x"}) + b"\n" for p in ids["alice"] + ids["bob"])
    )
    outputs = Path(config.paths.pipeline_root) / "run-1"
    (outputs / "validate-model").mkdir(parents=True)
    (outputs / "validate-model" / "report").write_text(
        f"<html><td>{ids['alice'][1]}</td><td>alice meant 1</td></html>"
    )
    (run / "dataset.md").write_text(
        f"# Dataset\n\n| {ids['alice'][0]} | held for review |\n"
    )  # a kept report
    _publish(outputs / "build-dataset", "dataset", rows, [])
    registry = open_registry(config)
    parent = registry.register(DEFAULT_BASE_MODEL, dataset_version="ds-one", source_run="run-1")
    registry.register(
        DEFAULT_BASE_MODEL,
        dataset_version="ds-other",
        source_run="run-2",
        lineage={"parent_version": parent.version},
    )

    result = forget(config, user="alice", prediction_ids=[], reason="ticket 7", now=T0 + timedelta(days=1))
    assert result.learnt_by == [
        parent.version,
        parent.version + 1,
    ]  # the child carries what its parent learnt
    assert result.datasets.successors == {"ds-one": f"ds-one-f{result.request[:8]}"}
    assert result.datasets.rows == len(ids["alice"]) + 2  # train, the held-out copy, a quarantine line
    assert sorted(p.name for p in (datasets / "ds-one").iterdir()) == ["manifest.json"]
    [chain] = [c for c in trained_users(config, registry, parent.version) if c.version == parent.version]
    assert chain.users == [bob]
    assert result.run_files == 5  # the ledger entry, the lines, both reports, the run's dataset
    kept = orjson.loads((run / "validation.json").read_bytes())["churn"]["broken"]
    assert [e["id"] for e in kept] == [ids["bob"][0]]
    assert [orjson.loads(line)["id"] for line in (run / "utterances.jsonl").read_text().splitlines()] == ids[
        "bob"
    ]
    assert "withdrawn" in (outputs / "validate-model" / "report").read_text()
    assert (run / "dataset.md").read_text().startswith("# Report withdrawn")  # still Markdown
    assert not list((outputs / "build-dataset").rglob("*.arrow"))

    state = Path(config.paths.root)
    marks = [alice, "alice said", "alice meant", *ids["alice"]]
    found = []
    for file in state.rglob("*"):
        if file.is_file() and "tombstones" not in file.parts:
            data = file.read_bytes()
            if file.suffix == ".parquet":
                data = orjson.dumps(pq.read_table(file).to_pylist(), default=str)
            elif file.suffix == ".arrow":
                import pyarrow as pa

                data = orjson.dumps(
                    pa.ipc.open_stream(file).read_all().drop_columns(["audio_wav"]).to_pylist()
                )
            found += [(str(file.relative_to(state)), m) for m in marks if m.encode() in data]
    assert found == []
    assert [e.detail["reason"] for e in registry.audit_log() if e.action == "forget"] == ["ticket 7"]


@pytest.mark.gcs
def test_forget_proposes_a_retraining_from_the_newest_version_that_did_not_learn_from_them(
    tmp_path: Path, cli: Any
) -> None:
    """v2 trained on alice's corrections and v3 was fine-tuned from v2: `forget --propose-retraining`
    proposes a run from v1. Until a person approves it nothing trains; once approved, the next
    run trains on it whatever the trigger's thresholds say, from v1, and only that one run."""
    from stt_flywheel.config import DEFAULT_BASE_MODEL
    from stt_flywheel.deployment.backends import open_registry
    from stt_flywheel.run.proposed import start_version
    from stt_flywheel.run.stages import bootstrap_registry, stage_check_trigger

    path, config, ids = _flywheel(tmp_path)
    alice, bob = (_store(Path(config.paths.error_store)).senders.pseudonym(p) for p in ("alice", "bob"))
    _publish(Path(config.paths.datasets), "ds-one", _rows(ids, alice=alice, bob=bob), [])
    _publish(Path(config.paths.datasets), "ds-two", _rows(ids, bob=bob), [])
    base = bootstrap_registry(config)
    registry = open_registry(config)
    learnt = registry.register(
        DEFAULT_BASE_MODEL,
        dataset_version="ds-one",
        source_run="r1",
        lineage={"parent_version": base.version},
    )
    child = registry.register(
        DEFAULT_BASE_MODEL,
        dataset_version="ds-two",
        source_run="r2",
        lineage={"parent_version": learnt.version},
    )
    registry.set_alias("default", child.version)

    args = ("forget", "--user", "alice", "--reason", "ticket 9", "--config", str(path))
    status, out, err = cli(*args, "--dry-run", "--propose-retraining")
    assert status == 0 and "with --dry-run nothing is proposed" in out, err
    status, out, err = cli(*args, "--propose-retraining", "--json")
    assert status == 0, err
    proposal = orjson.loads(out)["retraining"]
    assert proposal["kind"] == "retrain-without" and proposal["state"] == "pending"
    assert proposal["dataset"]["start_from_version"] == base.version
    assert proposal["evidence"]["learnt_by_versions"] == [learnt.version, child.version]
    assert "alice" not in out and alice not in out

    waiting = stage_check_trigger(config, "run-a")  # six corrections: the trigger does not fire
    assert not waiting.should_train and (waiting.proposal or {}).get("kind") != "retrain-without"
    status, out, err = cli("status", "--config", str(path))
    assert status == 0 and f"Proposal {proposal['id']} pending" in out and "retrain without" in out, err
    status, _, err = cli("approve", proposal["id"], "--reason", "DPO agreed", "--config", str(path))
    assert status == 0, err

    retrain = stage_check_trigger(config, "run-b")
    assert retrain.should_train and retrain.summary.startswith("retraining: retrain without")
    assert retrain.proposal is not None and retrain.proposal["claimed"]["run_id"] == "run-b"
    assert retrain.proposal["claimed"]["start_from_version"] == base.version
    start = start_version(config, "run-b")
    assert start is not None and start.version == base.version
    assert start_version(config, "run-a").version == child.version  # type: ignore[union-attr]
    open_store(config.paths.state).delete("leases/flywheel-run.json")  # as run-b's last stage would
    assert not stage_check_trigger(config, "run-c").should_train  # one approval, one run


def test_forget_and_retain_on_cloud_storage(gcs_bucket: str, tmp_path: Path) -> None:
    """The same on the GCS emulator, through google-cloud-storage: forget rewrites the files that
    hold alice and deletes her audio; a later `store retain` deletes what is past its days."""
    from stt_flywheel.config import RetentionSettings

    store = ErrorStore(gcs_bucket, senders=Senders(Identity(KEY)))
    ids = {p: [new_prediction_id(T0 + timedelta(minutes=i)) for i in range(3)] for p in PEOPLE}
    writer = CaptureWriter(store, tmp_path / "spill", flush_interval_s=3600)
    for person, pids in ids.items():
        for pid in pids:
            at = T0 + timedelta(minutes=1)
            user = store.senders.pseudonym(person)
            writer.offer(
                CapturedPrediction(
                    pid, at, "1", None, f"{person} said", {}, 1.0, f"RIFF {pid}".encode(), user=user
                )
            )
    assert writer.close()["captured"] == 9
    events = [
        {"prediction_id": p, "corrected_text": "x", "event_time": T0, "source": "app", "user": who}
        for who in PEOPLE
        for p in ids[who]
    ]
    assert store.ingest_feedback(events, now=T0 + timedelta(hours=1)).accepted == 9

    done = _forget_gcs(store, "alice")
    assert (done.predictions, done.feedback_events, done.audio_objects) == (3, 3, 3)
    assert sorted(store.predictions()["hypothesis"].to_pylist()) == ["bob said"] * 3 + ["carol said"] * 3
    assert len(store.feedback()) == 6
    assert len(store.store.list("audio/")) == 6
    assert len(store.store.list("tombstones/")) == 1

    later = datetime.now(UTC) + timedelta(days=40)
    settings = RetentionSettings(predictions_days=30, feedback_days=30, audio_days=30)
    assert store.retain(settings, later).deleted == {"predictions": 1, "feedback": 1, "audio": 6}
    assert store.predictions().num_rows == 0 and not store.store.list("audio/")


def _forget_gcs(store: ErrorStore, person: str) -> Any:
    users = {store.senders.pseudonym(person)}
    request = request_id(users, [])
    write_tombstone(store, request, {"request": request, "users": sorted(users), "predictions": []})
    return forget_rows(store, users, set())


def test_capture_refuses_a_forgotten_user_and_a_replayed_spill_of_them(tmp_path: Path) -> None:
    """After a forget, the capture writer keeps nothing of that user: a batch is written without
    them, and a batch spilled before the forget and replayed after it as well; every offered
    prediction is counted once (`forgotten`)."""
    root = tmp_path / "store"
    store = _store(root)
    alice, bob = (store.senders.pseudonym(p) for p in ("alice", "bob"))
    spilled = tmp_path / "spill"
    (root / "predictions").parent.mkdir(parents=True, exist_ok=True)
    (root / "predictions").write_bytes(b"")  # the store cannot take predictions: the batch spills
    writer = CaptureWriter(store, spilled, flush_interval_s=0.05, retry_interval_s=3600)
    for user in (alice, bob):
        writer.offer(
            CapturedPrediction(new_prediction_id(T0), T0, "1", None, "h", {}, 1.0, b"RIFF", user=user)
        )
    writer.close()
    assert len(list(spilled.glob("spill-*.parquet"))) >= 1
    (root / "predictions").unlink()
    request = request_id({alice}, [])
    write_tombstone(store, request, {"request": request, "users": [alice], "predictions": []})
    replay = CaptureWriter(store, spilled, flush_interval_s=0.05)
    replay.offer(
        CapturedPrediction(new_prediction_id(T0), T0, "1", None, "h", {}, 1.0, b"RIFF a", user=alice)
    )
    replay.offer(CapturedPrediction(new_prediction_id(T0), T0, "1", None, "h", {}, 1.0, b"RIFF b", user=bob))
    counters = replay.close()
    assert (counters["captured"], counters["forgotten"]) == (2, 2)  # bob's two, alice's two refused
    assert store.predictions()["user"].to_pylist() == [bob, bob]
    # the spill's two were offered to the first writer; bob's of them is recovered here
    assert (counters["offered"], counters["recovered"]) == (2, 1)


def test_forget_rewrites_the_spilled_batches_without_them(tmp_path: Path) -> None:
    """Batches spilled while the store was down hold alice beside bob: forgetting alice rewrites
    them (0600) with bob alone, so nothing of her waits on disk for the store to come back."""
    from stt_flywheel.data.capture import forget_spilled
    from stt_flywheel.data.error_store.forget import Forgotten

    root = tmp_path / "store"
    store = _store(root)
    alice, bob = (store.senders.pseudonym(p) for p in ("alice", "bob"))
    (root / "predictions").parent.mkdir(parents=True, exist_ok=True)
    (root / "predictions").write_bytes(b"")
    writer = CaptureWriter(store, tmp_path / "spill", flush_interval_s=0.05, retry_interval_s=3600)
    for user in (alice, bob, alice):
        writer.offer(
            CapturedPrediction(new_prediction_id(T0), T0, "1", None, "h", {}, 1.0, b"RIFF", user=user)
        )
    assert writer.close()["spilled"] == 3
    request = request_id({alice}, [])
    write_tombstone(store, request, {"request": request, "users": [alice], "predictions": []})
    assert forget_spilled(tmp_path / "spill", Forgotten.load(store)) == 2
    files = list((tmp_path / "spill").glob("spill-*.parquet"))
    assert [u for f in files for u in pq.read_table(f)["user"].to_pylist()] == [bob]
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    assert forget_spilled(tmp_path / "spill", Forgotten.load(store)) == 0


@pytest.mark.parametrize("round_", range(3))
def test_forget_beside_capture_retention_compaction_and_another_forget(
    tmp_path: Path, where: str, round_: int
) -> None:
    """While a serving process's writer keeps capturing all three, alice's and bob's forgets run
    beside a compaction and a retention (of the quarantine): afterwards neither is anywhere but in
    a tombstone, and every prediction and event of carol's, old or captured meanwhile, is there."""
    from stt_flywheel.config import RetentionSettings

    root = where
    ids = _populate(root, hours=6, batches=2, spill=tmp_path / "spill")
    store = _store(root)
    writer = CaptureWriter(store, tmp_path / "spill-live", flush_interval_s=0.01)
    stop = threading.Event()
    captured: dict[str, list[str]] = {p: [] for p in PEOPLE}

    def serve() -> None:
        k = 0
        while not stop.is_set():
            person = PEOPLE[k % 3]
            at = T0 + timedelta(hours=k % 6, seconds=k)
            pid = new_prediction_id(at)
            user = store.senders.pseudonym(person)
            writer.offer(
                CapturedPrediction(
                    pid, at, "1", None, f"{person} said live", {}, 1.0, f"RIFF {pid}".encode(), user=user
                )
            )
            captured[person].append(pid)
            k += 1
            time.sleep(0.002)

    jobs = [
        lambda: _forget(root, "alice"),
        lambda: _forget(root, "bob"),
        lambda: _store(root).compact(now=T0 + timedelta(days=2)),
        lambda: _store(root).retain(RetentionSettings(quarantine_days=1), T0 + timedelta(days=3)),
    ]
    random.Random(round_).shuffle(jobs)
    server = threading.Thread(target=serve)
    server.start()
    errors: list[BaseException] = []

    def run(job: Any) -> None:
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        time.sleep(random.Random(round_).uniform(0, 0.05))
        t.start()
    for t in threads:
        t.join()
    stop.set()
    server.join()
    counters = writer.close()
    assert not errors
    for person in ("alice", "bob"):
        everything = ids[person] + captured[person]
        left = [(f, t[:60]) for f, t in _traces(root, person, everything) if not f.startswith("tombstones/")]
        assert not left, person
    carol = set(ids["carol"] + captured["carol"])
    assert carol <= set(_store(root).predictions()["prediction_id"].to_pylist())
    assert set(ids["carol"]) <= set(_store(root).feedback()["prediction_id"].to_pylist())
    assert counters["captured"] + counters["forgotten"] == counters["offered"]


def test_a_writer_that_read_the_tombstones_before_a_forget_settles_what_it_wrote(tmp_path: Path) -> None:
    """The window a race leaves: a writer (capture, ingest) reads the tombstones, a forget of
    alice begins and finishes, then the writer's batch lands. `settle`, which every writer runs
    after writing, takes alice's rows out of what it wrote, and her audio with them."""
    from stt_flywheel.data.error_store.forget import Forgotten, settle

    store = _store(tmp_path / "store")
    alice, bob = (store.senders.pseudonym(p) for p in ("alice", "bob"))
    before = Forgotten.load(store)
    request = request_id({alice}, [])
    write_tombstone(store, request, {"request": request, "users": [alice], "predictions": []})
    rows = []
    for user in (alice, bob):
        pid = new_prediction_id(T0)
        uri, sha = store.put_audio(f"RIFF {user}".encode())
        rows.append(
            {
                "prediction_id": pid,
                "predicted_at": T0,
                "model_version": "1",
                "endpoint": None,
                "hypothesis": "h",
                "metadata": {},
                "duration_s": 1.0,
                "user": user,
                "signature": None,
                "audio_uri": uri,
                "audio_sha256": sha,
            }
        )
    written = store.write_predictions(rows)
    assert settle(store, written, before) == 1
    assert store.predictions()["user"].to_pylist() == [bob]
    assert [p.read_bytes() for p in (tmp_path / "store" / "audio").rglob("*.wav")] == [f"RIFF {bob}".encode()]
    assert settle(store, written, Forgotten.load(store)) == 0


def test_the_user_index_leads_forget_to_their_hours_and_agrees_with_reading_every_file(
    tmp_path: Path,
) -> None:
    """carol alone speaks for six more hours; bob labels a prediction of alice's the store does not
    hold yet (capture is slower), a reviewer one it holds. Forgetting alice by the user index reads
    only the files of the hours that name her and leaves the store as a forget that reads every file
    does (a copy without `who/complete.json`); her entries leave the index; retention takes the
    entries of the hours it deletes."""
    from stt_flywheel.config import RetentionSettings
    from stt_flywheel.data.error_store.who import locate

    root = tmp_path / "store"
    ids = _populate(root, hours=6, batches=1)
    store = _store(root)
    early = new_prediction_id(T0 + timedelta(hours=2, minutes=30))
    at = T0 + timedelta(hours=7)
    bob = {
        "prediction_id": early,
        "corrected_text": "bob heard",
        "event_time": at,
        "source": "app",
        "user": "bob",
    }
    review = {
        "prediction_id": ids["alice"][0],
        "flagged": True,
        "event_time": at,
        "source": "review",
        "user": "rita",
    }
    assert store.ingest_feedback([bob], now=at).accepted == 1  # the hour of no event of hers
    assert store.ingest_feedback([review], now=at + timedelta(hours=1)).accepted == 1
    writer = CaptureWriter(store, tmp_path / "spill-late", flush_interval_s=3600)
    alice, carol = (store.senders.pseudonym(p) for p in ("alice", "carol"))
    late = [(early, T0 + timedelta(hours=2, minutes=30), alice, "alice said late")]
    late += [
        (new_prediction_id(T0 + timedelta(hours=h)), T0 + timedelta(hours=h), carol, "c")
        for h in range(6, 12)
    ]
    for pid, when, user, text in late:
        writer.offer(
            CapturedPrediction(pid, when, "1", None, text, {}, 1.0, f"RIFF {pid}".encode(), user=user)
        )
    assert writer.close()["captured"] == 7
    scanned = tmp_path / "scanned"
    shutil.copytree(root, scanned)
    (scanned / "who" / "complete.json").unlink()

    by_index, by_scan = _forget(root, "alice"), _forget(scanned, "alice")
    assert (by_index.predictions, by_index.feedback_events, by_index.audio_objects) == (
        by_scan.predictions,
        by_scan.feedback_events,
        by_scan.audio_objects,
    )
    assert by_index.feedback_events == len(ids["alice"]) + 2  # hers, bob's early one, the reviewer's
    files = sum(len(_store(root).list_files(s)) for s in ("predictions", "feedback"))
    assert by_index.files_read < by_scan.files_read, (by_index.files_read, by_scan.files_read, files)
    assert [e for e in _everything(root) if not e[0].startswith("who/")] == [
        e for e in _everything(scanned) if not e[0].startswith("who/")
    ]
    everything = [*ids["alice"], early]
    assert [f for f, _ in _traces(root, "alice", everything) if not f.startswith("tombstones/")] == []
    assert not [t for _, t in _everything(root) if "bob heard" in t]

    found = locate(_store(root), {carol})
    assert found is not None and len(found["predictions"]) == 12
    _store(root).compact(now=T0 + timedelta(days=1))
    assert not open_store(root).list("who/new/")  # merged into shards
    _store(root).retain(RetentionSettings(predictions_days=1), T0 + timedelta(days=1, hours=6))
    assert locate(_store(root), {carol})["predictions"] == {  # type: ignore[index]
        f"date=2026-12-01/hour={h:02d}" for h in range(6, 12)
    }


def test_store_index_builds_the_index_of_a_store_written_before_it(tmp_path: Path, cli: Any) -> None:
    """A store written before the user index existed: forget reads every file until `store index`
    builds the index (marking audio sent twice as shared); then forget reads only her hours and
    still keeps bob's copy of the audio they both sent."""
    from stt_flywheel.data.error_store.who import locate

    path, config, ids = _flywheel(tmp_path)
    root = Path(config.paths.error_store)
    shutil.rmtree(root / "who")
    alice = _store(root).senders.pseudonym("alice")
    assert locate(_store(root), {alice}) is None
    status, out, err = cli("store", "index", "--config", str(path), "--json")
    assert status == 0, err
    assert orjson.loads(out) == {"predictions": 6, "feedback": 6, "shared_audio": 1}
    found = locate(_store(root), {alice})
    assert found is not None and found["predictions"] == {
        "date=2026-12-01/hour=00",
        "date=2026-12-01/hour=01",
    }
    done = _forget(root, "alice")
    assert (done.predictions, done.audio_objects) == (2, 1)  # the bytes she shared with bob stay
    assert b"RIFF shared" in [p.read_bytes() for p in (root / "audio").rglob("*.wav")]
    status, out, err = cli("store", "index", "--config", str(path))
    assert status == 0 and "already" in out, err
