"""Leases in shared state, so that two overlapping runs never both train or deploy.

A lease is one JSON object (`leases/<name>.json`) written with generation preconditions: taken by
creating it only if absent, taken over only by replacing the exact expired generation that was
read, renewed by its holder the same way, released by rewriting the generation it holds as expired. Whoever
loses a race gets `LeaseHeld` naming the holder and when its lease expires.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import orjson

from stt_flywheel.storage.objectstore import ObjectStore, PreconditionFailed

__all__ = ["Lease", "LeaseHeld", "acquire_lease", "read_lease", "release_lease"]


class LeaseHeld(RuntimeError):
    def __init__(self, lease: Lease) -> None:
        super().__init__(f"lease {lease.name!r} is held by {lease.holder} until {lease.expires_at}")
        self.lease = lease


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    acquired_at: str
    expires_at: str
    generation: str = ""

    def expired(self, now: datetime) -> bool:
        return datetime.fromisoformat(self.expires_at) <= now

    def payload(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if k != "generation"}
        return orjson.dumps(body)


def _key(name: str) -> str:
    return f"leases/{name}.json"


def read_lease(store: ObjectStore, name: str) -> Lease | None:
    current = store.read(_key(name))
    if current is None:
        return None
    return Lease(**orjson.loads(current.data), generation=current.generation)


def acquire_lease(
    store: ObjectStore, name: str, holder: str, ttl: timedelta, now: datetime | None = None
) -> Lease:
    """Take (or renew, for the same holder) the lease; raise `LeaseHeld` when another holds it."""
    now = now or datetime.now(UTC)
    fresh = Lease(name, holder, now.isoformat(), (now + ttl).isoformat())
    for _ in range(3):  # a lost race re-reads once the winner's write is visible
        current = read_lease(store, name)
        try:
            if current is None:
                generation = store.create(_key(name), fresh.payload())
            elif current.holder == holder:  # renewal keeps when it was first taken
                taken = Lease(name, holder, current.acquired_at, fresh.expires_at)
                generation = store.replace(_key(name), taken.payload(), current.generation)
            elif current.expired(now):
                taken = fresh
                generation = store.replace(_key(name), taken.payload(), current.generation)
            else:
                raise LeaseHeld(current)
        except PreconditionFailed:
            continue
        base = fresh if current is None else taken
        return Lease(base.name, base.holder, base.acquired_at, base.expires_at, generation)
    current = read_lease(store, name)
    if current is not None and current.holder != holder:
        raise LeaseHeld(current)
    raise PreconditionFailed(f"could not take lease {name!r}: the object kept changing")


def release_lease(store: ObjectStore, name: str, holder: str, now: datetime | None = None) -> bool:
    """End the lease now if `holder` still holds it; returns whether it did.

    Releasing rewrites the lease as expired (a conditional upload) instead of deleting it, so the
    step is guarded by the generation on every backend.
    """
    now = now or datetime.now(UTC)
    current = read_lease(store, name)
    if current is None or current.holder != holder or current.expired(now):
        return False
    ended = Lease(name, holder, current.acquired_at, now.isoformat())
    try:
        store.replace(_key(name), ended.payload(), current.generation)
    except PreconditionFailed:
        return False
    return True
