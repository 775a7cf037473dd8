"""Conditional writes and trees, on a local directory and on GCS (fake-gcs-server, real client)."""

from pathlib import Path

import pytest

from stt_flywheel.storage.objectstore import (
    GCSStore,
    LocalStore,
    ObjectStore,
    PreconditionFailed,
    join_uri,
    open_store,
    read_uri,
    split_gs_uri,
)
from stt_flywheel.storage.trees import fetch_tree, put_tree, remove_tree, tree_exists


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.gcs)])
def root_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "root") if request.param == "local" else request.getfixturevalue("gcs_bucket")


def test_open_store_picks_the_backend(tmp_path: Path, gcs_bucket: str) -> None:
    assert isinstance(open_store(tmp_path), LocalStore)
    assert isinstance(open_store(gcs_bucket), GCSStore)
    assert split_gs_uri("gs://b/x/y/") == ("b", "x/y")
    with pytest.raises(ValueError, match="no bucket"):
        split_gs_uri("gs:///x")


def test_create_only_if_absent(store: ObjectStore) -> None:
    gen = store.create("pointers/default.json", b"v1")
    assert store.read("pointers/default.json").data == b"v1"
    with pytest.raises(PreconditionFailed):
        store.create("pointers/default.json", b"v2")
    assert store.read("pointers/default.json").generation == gen  # nothing overwritten


def test_compare_and_swap_refuses_a_stale_generation(store: ObjectStore) -> None:
    first = store.create("watermark", b"2026-11-01")
    second = store.replace("watermark", b"2026-11-02", first)
    with pytest.raises(PreconditionFailed):
        store.replace("watermark", b"2026-10-30", first)  # a retried or late writer
    assert store.read("watermark") == type(store.read("watermark"))(b"2026-11-02", second)
    with pytest.raises(PreconditionFailed):
        store.replace("missing", b"x", second)
    if isinstance(store, LocalStore):  # fake-gcs-server checks preconditions on upload only
        with pytest.raises(PreconditionFailed):
            store.delete("watermark", if_generation=first)
    store.delete("watermark", if_generation=second)
    assert store.read("watermark") is None


def test_list_and_unconditional_write(store: ObjectStore) -> None:
    store.write("runs/a/report.html", b"<html>")
    store.write("runs/a/report.html", b"<html>2")
    store.write("runs/b/verdict.json", b"{}")
    store.write("other/x", b"")
    assert store.list("runs/") == ["runs/a/report.html", "runs/b/verdict.json"]
    assert store.read("runs/a/report.html").data == b"<html>2"
    with pytest.raises(ValueError, match="invalid object key"):
        store.write("../escape", b"")


def test_trees_round_trip_with_the_commit_file_last(
    root_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STT_FLYWHEEL_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "weights.bin").write_bytes(bytes(range(256)) * 40)
    (src / "sub" / "tok.json").write_text('{"a": 1}')
    target = join_uri(root_uri, "models", "m", "v1")
    assert not tree_exists(target, "config.json")
    with pytest.raises(FileNotFoundError, match="no nothing.json"):
        put_tree(src, target, commit_file="nothing.json")
    assert put_tree(src, target, commit_file="config.json") == target
    assert tree_exists(target, "config.json")
    local = fetch_tree(target, "config.json")
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == [
        "config.json",
        "sub/tok.json",
        "weights.bin",
    ]
    assert (local / "weights.bin").read_bytes() == (src / "weights.bin").read_bytes()
    assert read_uri(join_uri(target, "sub", "tok.json")) == b'{"a": 1}'
    remove_tree(target)
    assert not tree_exists(target, "config.json")
    with pytest.raises(FileNotFoundError):
        read_uri(join_uri(target, "sub", "tok.json"))


def test_a_half_uploaded_tree_is_not_there(gcs_bucket: str, tmp_path: Path) -> None:
    """Readers look for the commit file, which an interrupted upload never wrote."""
    store = open_store(join_uri(gcs_bucket, "models", "m", "v2"))
    store.write("weights.bin", b"partial")
    assert not tree_exists(join_uri(gcs_bucket, "models", "m", "v2"), "config.json")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        fetch_tree(join_uri(gcs_bucket, "models", "m", "v2"), "config.json")
