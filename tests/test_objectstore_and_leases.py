"""Conditional writes and leases, on a local directory and on GCS (fake-gcs-server, real client)."""

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stt_flywheel.leases import LeaseHeld, acquire_lease, read_lease, release_lease
from stt_flywheel.objectstore import (
    GCSStore,
    LocalStore,
    ObjectStore,
    PreconditionFailed,
    open_store,
    split_gs_uri,
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
