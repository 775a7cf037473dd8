"""Leases on an object store, on a local directory and on GCS (fake-gcs-server, real client)."""

import threading
from datetime import UTC, datetime, timedelta

import pytest

from stt_flywheel.storage.leases import LeaseHeld, acquire_lease, read_lease, release_lease
from stt_flywheel.storage.objectstore import (
    ObjectStore,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_lease_is_exclusive_until_it_expires(store: ObjectStore) -> None:
    ttl = timedelta(hours=6)
    mine = acquire_lease(store, "flywheel", "run-a", ttl, now=T0)
    with pytest.raises(LeaseHeld, match="held by run-a"):
        acquire_lease(store, "flywheel", "run-b", ttl, now=T0 + timedelta(hours=1))
    renewed = acquire_lease(store, "flywheel", "run-a", ttl, now=T0 + timedelta(hours=2))
    assert renewed.acquired_at == mine.acquired_at
    assert renewed.expires_at > mine.expires_at
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
    assert len(winners) == 1
    assert len(losers) == 5
    assert read_lease(store, "race").holder == f"run-{winners[0]}"
