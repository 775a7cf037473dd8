"""Local storage primitives. Every file another stage or run reads is written atomically."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import orjson

from stt_flywheel.errors import StateError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "dump_json",
    "file_manifest",
    "file_sha256",
    "private_dir",
    "private_files",
    "read_json",
    "tree_digest",
]


def dump_json(obj: Any) -> bytes:
    """Indented JSON bytes; numpy scalars and arrays allowed."""
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)


def private_dir(path: str | Path) -> Path:
    """`path` as a directory only this user may enter (0700): made so, or tightened when it is
    ours and open to others. One that belongs to another user is refused (in a shared /tmp,
    anyone may have made it first to read what is written there)."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not path.is_dir() or path.is_symlink() or st.st_uid != os.getuid():
        raise StateError(f"{path} is not a directory of this user's: refusing to keep personal data there")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def private_files() -> None:
    """From here on this process creates files 0600 and directories 0700 (a umask of 077 on top of
    the one it had): the store, datasets, reports, status pages and caches hold what people said.
    The `stt-flywheel` script and the serving process call it first; what they start inherits it."""
    os.umask(os.umask(0o077) | 0o077)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path` (mode 0600,
    as `mkstemp` makes it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, dump_json(obj))


def read_json(path: str | Path) -> Any:
    return orjson.loads(Path(path).read_bytes())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_manifest(directory: str | Path) -> list[tuple[str, int, str]]:
    """(relative path, size, sha256) of every file under a directory, in path order."""
    root = Path(directory)
    return [
        (f.relative_to(root).as_posix(), f.stat().st_size, file_sha256(f))
        for f in sorted(root.rglob("*"))
        if f.is_file()
    ]


def tree_digest(
    directory: str | Path, manifest: list[tuple[str, int, str]] | None = None, skip: Collection[str] = ()
) -> str:
    """One SHA-256 for a directory's content: over each file's relative path and SHA-256, in path
    order, leaving out the relative paths in `skip`. What a model directory is proved by, from
    training to serving."""
    digest = hashlib.sha256()
    for rel, _, sha in manifest if manifest is not None else file_manifest(directory):
        if rel not in skip:
            digest.update(f"{rel}\t{sha}\n".encode())
    return digest.hexdigest()
