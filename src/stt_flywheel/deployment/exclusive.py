"""One change to what serves at a time: a promotion, a canary step or a rollback moves the
registry's aliases and the endpoint's traffic in two systems that share no transaction, so each
change holds a lock over both. The second of two changes at once waits for the first and then
acts on what it left (or, after `wait_s`, fails loudly having changed nothing).

Locally the lock is an advisory file lock beside the registry database (the kernel drops it when
its process dies, `kill -9` included); on Vertex AI it is a lease in the run-state store, whose
expiry frees it from a process that died holding it."""

from __future__ import annotations

import fcntl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from stt_flywheel.errors import StateError
from stt_flywheel.storage.leases import LeaseHeld, acquire_lease, release_lease
from stt_flywheel.storage.objectstore import ObjectStore

__all__ = ["DEPLOY_LEASE", "ExclusiveChanges"]

DEPLOY_LEASE = "flywheel-deploy"
POLL_S = 0.05


class ExclusiveChanges:
    """A re-entrant lock (within one process) over the changes to what serves."""

    def __init__(self, wait_s: float = 120.0) -> None:
        self.wait_s = wait_s
        self._depth = 0
        self._mutex = threading.RLock()

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._mutex:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._take()
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0
                self._give()

    def _take(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while not self._try():
            if time.monotonic() > deadline:
                raise StateError(
                    f"another change to what serves (a promotion, canary step or rollback) has held "
                    f"the lock for over {self.wait_s:g} s ({self._holder()}); nothing was changed"
                )
            time.sleep(POLL_S)

    def _try(self) -> bool:
        raise NotImplementedError

    def _give(self) -> None:
        raise NotImplementedError

    def _holder(self) -> str:
        return "holder unknown"


class FileLock(ExclusiveChanges):
    """`flock` on a file: the local registry's."""

    def __init__(self, path: Path, wait_s: float = 120.0) -> None:
        super().__init__(wait_s)
        self.path = path
        self._fh: object | None = None

    def _try(self) -> bool:
        fh = open(self.path, "a+")  # noqa: SIM115 - held open while the lock is
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        self._fh = fh
        return True

    def _give(self) -> None:
        fh = self._fh
        self._fh = None
        if fh is not None:
            fcntl.flock(fh, fcntl.LOCK_UN)  # type: ignore[arg-type]
            fh.close()  # type: ignore[attr-defined]

    def _holder(self) -> str:
        return f"lock {self.path}"


class LeaseLock(ExclusiveChanges):
    """A lease in the run-state store: the Vertex registry's."""

    def __init__(
        self, store: ObjectStore, holder: str, ttl: timedelta = timedelta(minutes=15), wait_s: float = 300.0
    ):
        super().__init__(wait_s)
        self.store, self.holder, self.ttl = store, holder, ttl
        self._last: str = ""

    def _try(self) -> bool:
        try:
            acquire_lease(self.store, DEPLOY_LEASE, self.holder, self.ttl)
        except LeaseHeld as exc:
            self._last = str(exc)
            return False
        return True

    def _give(self) -> None:
        release_lease(self.store, DEPLOY_LEASE, self.holder)

    def _holder(self) -> str:
        return self._last or "lease held"
