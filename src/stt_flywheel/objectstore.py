"""Object stores for shared state, local or on GCS, with generation preconditions.

State that several runs read and write (pointers, leases, watermarks) needs compare-and-swap: a
write names the generation it read, and fails if someone wrote in between. On GCS that is the
object generation (`if_generation_match`; 0 means "only if absent"), and the client's default
retry policy retries such conditional writes safely. Locally a generation is the SHA-256 of the
content, checked and replaced under an exclusive `flock`, and written by temp file + rename.

`open_store("gs://bucket/prefix")` or `open_store("/some/dir")` picks the backend; keys are
`/`-separated relative paths in both.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "GCSStore",
    "LocalStore",
    "ObjectStore",
    "PreconditionFailed",
    "Versioned",
    "open_store",
    "split_gs_uri",
]


class PreconditionFailed(Exception):
    """The object changed (or appeared, or vanished) since the generation the writer named."""


@dataclass(frozen=True)
class Versioned:
    data: bytes
    generation: str


class ObjectStore(Protocol):
    uri: str

    def read(self, key: str) -> Versioned | None: ...

    def create(self, key: str, data: bytes) -> str:
        """Write only if the key does not exist; returns the new generation."""
        ...

    def replace(self, key: str, data: bytes, if_generation: str) -> str:
        """Write only if the key is still at `if_generation`; returns the new generation."""
        ...

    def write(self, key: str, data: bytes) -> str:
        """Unconditional write, for content nobody else writes (reports, immutable outputs)."""
        ...

    def delete(self, key: str, if_generation: str | None = None) -> None: ...

    def list(self, prefix: str = "") -> list[str]: ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key


class LocalStore:
    """A directory; generations are content hashes, conditional writes happen under a file lock."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.uri = str(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        lock_dir = self.root / ".locks"
        lock_dir.mkdir(exist_ok=True)
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        with open(lock_dir / name, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @staticmethod
    def _generation(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def _put(self, path: Path, data: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return self._generation(data)

    def read(self, key: str) -> Versioned | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return Versioned(data, self._generation(data))

    def create(self, key: str, data: bytes) -> str:
        path = self._path(key)
        with self._locked(key):
            if path.exists():
                raise PreconditionFailed(f"{self.uri}/{key} already exists")
            return self._put(path, data)

    def replace(self, key: str, data: bytes, if_generation: str) -> str:
        path = self._path(key)
        with self._locked(key):
            current = self.read(key)
            if current is None or current.generation != if_generation:
                raise PreconditionFailed(f"{self.uri}/{key} is no longer at generation {if_generation[:12]}")
            return self._put(path, data)

    def write(self, key: str, data: bytes) -> str:
        path = self._path(key)
        with self._locked(key):
            return self._put(path, data)

    def delete(self, key: str, if_generation: str | None = None) -> None:
        path = self._path(key)
        with self._locked(key):
            current = self.read(key)
            if current is None:
                if if_generation is not None:
                    raise PreconditionFailed(f"{self.uri}/{key} does not exist")
                return
            if if_generation is not None and current.generation != if_generation:
                raise PreconditionFailed(f"{self.uri}/{key} is no longer at generation {if_generation[:12]}")
            path.unlink()

    def list(self, prefix: str = "") -> list[str]:
        base = self.root
        out = []
        for path in base.rglob("*"):
            rel = path.relative_to(base).as_posix()
            hidden = rel.startswith(".locks/") or path.name.startswith(".")
            if path.is_file() and not hidden and rel.startswith(prefix):
                out.append(rel)
        return sorted(out)


def split_gs_uri(uri: str) -> tuple[str, str]:
    """`gs://bucket/some/prefix` → ("bucket", "some/prefix")."""
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri}")
    bucket, _, prefix = uri[len("gs://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri}")
    return bucket, prefix.strip("/")


class GCSStore:
    """A `gs://bucket/prefix` through google-cloud-storage; generations are object generations."""

    def __init__(self, uri: str, client: Any = None) -> None:
        from google.cloud import storage

        self.uri = uri.rstrip("/")
        bucket, self.prefix = split_gs_uri(uri)
        if client is None:
            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                client = storage.Client(project="emulator", credentials=AnonymousCredentials())
            else:
                client = storage.Client()
        self.client = client
        self.bucket = client.bucket(bucket)

    def _name(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def read(self, key: str) -> Versioned | None:
        from google.api_core import exceptions

        blob = self.bucket.blob(self._name(key))
        try:
            data = blob.download_as_bytes()
        except exceptions.NotFound:
            return None
        return Versioned(data, str(blob.generation))

    def _upload(self, key: str, data: bytes, if_generation_match: int | None) -> str:
        from google.api_core import exceptions

        blob = self.bucket.blob(self._name(key))
        try:
            blob.upload_from_string(data, if_generation_match=if_generation_match)
        except exceptions.PreconditionFailed as exc:
            raise PreconditionFailed(f"{self.uri}/{key}: {exc.message}") from exc
        return str(blob.generation)

    def create(self, key: str, data: bytes) -> str:
        return self._upload(key, data, 0)

    def replace(self, key: str, data: bytes, if_generation: str) -> str:
        return self._upload(key, data, int(if_generation))

    def write(self, key: str, data: bytes) -> str:
        return self._upload(key, data, None)

    def delete(self, key: str, if_generation: str | None = None) -> None:
        from google.api_core import exceptions

        blob = self.bucket.blob(self._name(key))
        try:
            blob.delete(if_generation_match=int(if_generation) if if_generation is not None else None)
        except exceptions.NotFound:
            if if_generation is not None:
                raise PreconditionFailed(f"{self.uri}/{key} does not exist") from None
        except exceptions.PreconditionFailed as exc:
            raise PreconditionFailed(f"{self.uri}/{key}: {exc.message}") from exc

    def list(self, prefix: str = "") -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        full = base + prefix
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(b.name[cut:] for b in self.client.list_blobs(self.bucket, prefix=full))


def open_store(uri: str | Path) -> ObjectStore:
    text = str(uri)
    return GCSStore(text) if text.startswith("gs://") else LocalStore(text)
