"""Whose corrections trained a version, through the versions it was trained from."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import orjson

from stt_flywheel.config import DatasetSettings
from stt_flywheel.data.dataset import build_dataset, publish_dataset
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.data.manifest import Utterance
from stt_flywheel.deployment.registry import LocalRegistry

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _dataset(config, utts: list[Utterance], users: list[str], out: Path) -> str:  # type: ignore[no-untyped-def]
    store = open_error_store(config)
    rows = [
        {
            "id": f"{out.name}-{i}",
            "audio_uri": u.audio,
            "hypothesis": "something else entirely",
            "corrected_text": u.text,
            "timestamp": T0.isoformat(),
            "user": users[i % len(users)],
        }
        for i, u in enumerate(utts)
    ]
    assert store.ingest(rows, now=T0).accepted == len(rows)
    settings = DatasetSettings(
        audio_roots=[tempfile.gettempdir()], holdout_fraction=0.01, max_user_share=1.0, replay_share=0.0
    )
    manifest = build_dataset(store, out, settings, watermark=T0)
    publish_dataset(out, config.paths.datasets)
    return manifest.version


def test_lineage_names_the_users_of_a_version_and_its_ancestors(
    cli,
    config_factory,
    model_dir: Path,
    new_utts: list[Utterance],
    general_utts: list[Utterance],
    tmp_path: Path,
) -> None:  # type: ignore[no-untyped-def]
    path, config = config_factory(tmp_path, dataset={"audio_roots": [tempfile.gettempdir()]})
    registry = LocalRegistry(config.paths.registry_db, config.paths.models, config.deploy.model_name)
    registry.register(model_dir, source_run="bootstrap")
    first = _dataset(config, new_utts, ["alice", "bob"], tmp_path / "ds1")
    registry.register(model_dir, dataset_version=first, source_run="r1", lineage={"parent_version": 1})
    second = _dataset(config, general_utts, ["carol"], tmp_path / "ds2")
    registry.register(model_dir, dataset_version=second, source_run="r2", lineage={"parent_version": 2})
    pseudonym = open_error_store(config).senders.pseudonym
    code, out, _ = cli("lineage", "users", "--version", "3", "-c", str(path), "--json")
    assert code == 0
    answer = orjson.loads(out)
    assert [v["version"] for v in answer["chain"]] == [3, 2, 1]
    # the second dataset was built from the whole store: both batches' users are in it
    assert set(answer["users"]) == {pseudonym(u) for u in ("alice", "bob", "carol")}
    assert set(answer["chain"][1]["users"]) == {pseudonym("alice"), pseudonym("bob")}
    assert "base model" in answer["chain"][2]["note"]
    assert "alice" not in out
    code, out, _ = cli("lineage", "users", "--version", "2", "-c", str(path))
    assert code == 0 and "Users whose corrections trained v2: 2" in out
    code, _, err = cli("lineage", "users", "--version", "9", "-c", str(path))
    assert code == 1 and "Traceback" not in err
