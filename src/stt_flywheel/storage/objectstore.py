"""Object stores for shared state, local or on GCS, with generation preconditions.

State that several runs read and write (pointers, leases, watermarks) needs compare-and-swap: a
write names the generation it read, and fails if someone wrote in between. On GCS that is the
object generation (`if_generation_match`; 0 means "only if absent"), and the client's default
retry policy retries such conditional writes safely. Locally a generation is the SHA-256 of the
content, checked and replaced under an exclusive `flock`, and written by temp file + rename.

`open_store("gs://bucket/prefix")` or `open_store("/some/dir")` picks the backend; keys are
`/`-separated relative paths in both. Whole directories move with `storage.trees`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from stt_flywheel.errors import InputError, InputNotFound

__all__ = [
    "GCSStore",
    "LocalStore",
    "ObjectStore",
    "PreconditionFailed",
    "Versioned",
    "is_remote",
    "join_uri",
    "open_store",
    "read_uri",
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

    def open_bytes(self, key: str) -> BinaryIO | None:
        """The object as a readable binary stream (a file where one is, without hashing it for a
        generation), or None when it does not exist. The caller closes it."""
        ...

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

    def list_dated(self, prefix: str = "") -> Sequence[tuple[str, datetime]]:
        """(key, when the object was last written, UTC) of the keys under `prefix`."""
        ...

    def total_bytes(self, prefix: str = "") -> int:
        """The size of every object under `prefix`, summed (for what storing it costs)."""
        ...

    def upload_file(self, key: str, path: Path) -> None:
        """Unconditional upload of a local file (large files stream instead of being read whole)."""
        ...

    def download_file(self, key: str, path: Path) -> None: ...


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

    def open_bytes(self, key: str) -> BinaryIO | None:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            return None

    def create(self, key: str, data: bytes) -> str:
        """Only if absent: the bytes go to a temp file that is hard-linked into place, which fails
        when the name exists; no lock is needed, and a reader never sees a partial file."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise PreconditionFailed(f"{self.uri}/{key} already exists") from None
        finally:
            tmp.unlink()
        return self._generation(data)

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
        base = str(self.root)
        start = (
            os.path.join(base, prefix.rsplit("/", 1)[0]) if "/" in prefix else base
        )  # only under the prefix
        out = []
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = os.path.relpath(dirpath, base).replace(os.sep, "/")
            if rel_dir == ".locks" or rel_dir.startswith(".locks/"):
                dirnames.clear()
                continue
            for name in filenames:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if not name.startswith(".") and rel.startswith(prefix):
                    out.append(rel)
        return sorted(out)

    def list_dated(self, prefix: str = "") -> Sequence[tuple[str, datetime]]:
        out = []
        for key in self.list(prefix):
            with contextlib.suppress(FileNotFoundError):  # deleted since it was listed
                out.append((key, datetime.fromtimestamp(self._path(key).stat().st_mtime, UTC)))
        return out

    def total_bytes(self, prefix: str = "") -> int:
        total = 0
        for key in self.list(prefix):
            with contextlib.suppress(FileNotFoundError):
                total += self._path(key).stat().st_size
        return total

    def upload_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)

    def download_file(self, key: str, path: Path) -> None:
        shutil.copyfile(self._path(key), path)


def split_gs_uri(uri: str) -> tuple[str, str]:
    """`gs://bucket/some/prefix` → ("bucket", "some/prefix")."""
    if not uri.startswith("gs://"):
        raise InputError(f"not a gs:// URI: {uri}")
    bucket, _, prefix = uri[len("gs://") :].partition("/")
    if not bucket:
        raise InputError(f"no bucket in {uri}")
    return bucket, prefix.strip("/")


class GCSStore:
    """A `gs://bucket/prefix` through google-cloud-storage; generations are object generations."""

    def __init__(self, uri: str, client: Any = None) -> None:
        from google.cloud import storage  # type: ignore[attr-defined]  # namespace package

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

    def open_bytes(self, key: str) -> BinaryIO | None:
        found = self.read(key)
        return io.BytesIO(found.data) if found is not None else None

    def _upload(self, key: str, data: bytes, if_generation_match: int | None) -> str:
        from google.api_core import exceptions
        from google.cloud.storage.retry import DEFAULT_RETRY

        blob = self.bucket.blob(self._name(key))
        try:
            # retried on 429/5xx and resets: a conditional upload by the client's own rule, an
            # unconditional one because writing the same bytes again is harmless
            blob.upload_from_string(data, if_generation_match=if_generation_match, retry=DEFAULT_RETRY)
        except exceptions.PreconditionFailed as exc:
            raise PreconditionFailed(f"{self.uri}/{key}: {exc.message}") from exc
        return str(blob.generation)

    def create(self, key: str, data: bytes) -> str:
        try:
            return self._upload(key, data, 0)
        except PreconditionFailed:
            # The client retries a create whose answer was lost (a 503 or a reset after the write
            # landed); the retry then finds the object. If it holds these very bytes, it is ours.
            current = self.read(key)
            if current is not None and current.data == data:
                return current.generation
            raise

    def replace(self, key: str, data: bytes, if_generation: str) -> str:
        return self._upload(key, data, int(if_generation))

    def write(self, key: str, data: bytes) -> str:
        return self._upload(key, data, None)

    def delete(self, key: str, if_generation: str | None = None) -> None:
        from google.api_core import exceptions
        from google.cloud.storage.retry import DEFAULT_RETRY

        blob = self.bucket.blob(self._name(key))
        try:
            blob.delete(
                if_generation_match=int(if_generation) if if_generation is not None else None,
                retry=DEFAULT_RETRY,  # deleting again is harmless: a second NotFound is ignored below
            )
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

    def list_dated(self, prefix: str = "") -> Sequence[tuple[str, datetime]]:
        base = f"{self.prefix}/" if self.prefix else ""
        cut = len(base)
        blobs = self.client.list_blobs(self.bucket, prefix=base + prefix)
        return sorted((b.name[cut:], b.updated.astimezone(UTC)) for b in blobs)

    def total_bytes(self, prefix: str = "") -> int:
        base = f"{self.prefix}/" if self.prefix else ""
        return sum(int(b.size or 0) for b in self.client.list_blobs(self.bucket, prefix=base + prefix))

    def upload_file(self, key: str, path: Path) -> None:
        from google.cloud.storage.retry import DEFAULT_RETRY

        self.bucket.blob(self._name(key)).upload_from_filename(str(path), retry=DEFAULT_RETRY)

    def download_file(self, key: str, path: Path) -> None:
        self.bucket.blob(self._name(key)).download_to_filename(str(path))


def is_remote(uri: str | Path) -> bool:
    return str(uri).startswith("gs://")


def join_uri(base: str | Path, *parts: str) -> str:
    """`base/part/...` for a local path or a `gs://` URI alike."""
    text = str(base).rstrip("/")
    return "/".join([text, *(p.strip("/") for p in parts if p)])


def open_store(uri: str | Path) -> ObjectStore:
    text = str(uri)
    return GCSStore(text) if is_remote(text) else LocalStore(text)


def read_uri(uri: str | Path) -> bytes:
    """The bytes of one object or file (`gs://…`, `file://…` or a path)."""
    text = str(uri)
    if not is_remote(text):
        return Path(text.removeprefix("file://")).read_bytes()
    bucket, name = split_gs_uri(text)
    if not name:
        raise InputError(f"no object name in {text}")
    parent, _, key = name.rpartition("/")
    store = GCSStore(f"gs://{bucket}/{parent}" if parent else f"gs://{bucket}")
    found = store.read(key)
    if found is None:
        raise InputNotFound(f"no such object: {text}")
    return found.data


def read_gcs_bounded(uri: str, max_bytes: int, timeout_s: float) -> bytes:
    """One `gs://` object of at most `max_bytes` (its size is checked before it is downloaded),
    fetched within `timeout_s` per request. Raises `InputNotFound` or `ObjectTooLarge`."""
    from google.api_core import exceptions

    bucket, name = split_gs_uri(uri)
    store = GCSStore(f"gs://{bucket}")
    blob = store.bucket.get_blob(name, timeout=timeout_s) if name else None
    if blob is None:
        raise InputNotFound(f"no such object: {uri}")
    if blob.size is not None and blob.size > max_bytes:
        raise ObjectTooLarge(f"{blob.size} bytes > {max_bytes}")
    try:
        return blob.download_as_bytes(timeout=timeout_s, end=max_bytes)
    except exceptions.NotFound:
        raise InputNotFound(f"no such object: {uri}") from None


class ObjectTooLarge(InputError):
    """An object larger than the reader allows."""
