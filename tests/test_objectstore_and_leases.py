"""Conditional writes and leases, on a local directory and on GCS (fake-gcs-server, real client)."""

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stt_flywheel.storage.leases import LeaseHeld, acquire_lease, read_lease, release_lease
from stt_flywheel.storage.objectstore import (
    GCSStore,
    LocalStore,
    ObjectStore,
    PreconditionFailed,
    fetch_tree,
    join_uri,
    open_store,
    put_tree,
    read_uri,
    remove_tree,
    split_gs_uri,
    tree_exists,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["local", "gcs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return open_store(tmp_path / "state")
    return open_store(request.getfixturevalue("gcs_bucket"))


def test_open_store_picks_the_backend(tmp_path: Path, gcs_bucket: str) -> None:
    assert isinstance(open_store(tmp_path), LocalStore) and isinstance(open_store(gcs_bucket), GCSStore)
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


def test_lease_is_exclusive_until_it_expires(store: ObjectStore) -> None:
    ttl = timedelta(hours=6)
    mine = acquire_lease(store, "flywheel", "run-a", ttl, now=T0)
    with pytest.raises(LeaseHeld, match="held by run-a"):
        acquire_lease(store, "flywheel", "run-b", ttl, now=T0 + timedelta(hours=1))
    renewed = acquire_lease(store, "flywheel", "run-a", ttl, now=T0 + timedelta(hours=2))
    assert renewed.acquired_at == mine.acquired_at and renewed.expires_at > mine.expires_at
    taken = acquire_lease(store, "flywheel", "run-b", ttl, now=T0 + timedelta(hours=9))  # expired
    assert taken.holder == "run-b"
    assert not release_lease(store, "flywheel", "run-a")  # no longer its lease
    assert release_lease(store, "flywheel", "run-b", now=T0 + timedelta(hours=10))
    released = read_lease(store, "flywheel")
    assert released.expired(T0 + timedelta(hours=10))
    assert acquire_lease(store, "flywheel", "run-c", ttl, now=T0 + timedelta(hours=10)).holder == "run-c"


def test_racing_runs_take_the_lease_once(store: ObjectStore) -> None:
    winners, losers = [], []
    barrier = threading.Barrier(6)

    def contend(k: int) -> None:
        barrier.wait()
        try:
            acquire_lease(store, "race", f"run-{k}", timedelta(hours=1), now=T0)
            winners.append(k)
        except LeaseHeld:
            losers.append(k)

    threads = [threading.Thread(target=contend, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 5
    assert read_lease(store, "race").holder == f"run-{winners[0]}"


@pytest.fixture(params=["local", "gcs"])
def root_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "root") if request.param == "local" else request.getfixturevalue("gcs_bucket")


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
