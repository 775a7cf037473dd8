"""Whole directories (a saved model, a built dataset) in a store, local or `gs://`.

`put_tree` uploads a tree's commit file last, so a reader that finds it finds the whole tree;
`fetch_tree` fetches a `gs://` tree once into a local cache (such trees are immutable:
`models/<name>/v<N>`, `datasets/<content-hash version>`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from stt_flywheel.errors import InputNotFound
from stt_flywheel.storage.objectstore import is_remote, open_store

__all__ = ["fetch_tree", "forget_cached", "put_tree", "remove_tree", "tree_exists"]


def tree_exists(uri: str | Path, commit_file: str) -> bool:
    text = str(uri)
    if not is_remote(text):
        return (Path(text) / commit_file).is_file()
    return open_store(text).read(commit_file) is not None


def put_tree(local_dir: str | Path, uri: str | Path, commit_file: str) -> str:
    """Copy a directory to `uri` (local or `gs://`); `commit_file` goes last. Returns the URI.

    Locally the tree is copied next to the target and renamed into place; on GCS every file is
    uploaded under the prefix and the commit file last, so readers check for it.
    """
    local_dir, text = Path(local_dir), str(uri).rstrip("/")
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    if not any(p.relative_to(local_dir).as_posix() == commit_file for p in files):
        raise InputNotFound(f"{local_dir} has no {commit_file}")
    if not is_remote(text):
        target = Path(text)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(local_dir, tmp)
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(target)
        return str(target)
    store = open_store(text)
    rels = [p.relative_to(local_dir).as_posix() for p in files]
    for rel in sorted(rels, key=lambda r: r == commit_file):
        store.upload_file(rel, local_dir / rel)
    return text


def remove_tree(uri: str | Path) -> None:
    text = str(uri)
    if not is_remote(text):
        shutil.rmtree(text, ignore_errors=True)
        return
    store = open_store(text)
    for key in store.list():
        store.delete(key)


def _cache_root() -> Path:
    return Path(os.environ.get("STT_FLYWHEEL_CACHE", Path.home() / ".cache" / "stt-flywheel"))


def _cached(text: str) -> Path:
    return _cache_root() / "trees" / hashlib.sha256(text.encode()).hexdigest()[:24]


def forget_cached(uri: str | Path) -> None:
    """Delete this machine's cached copy of a `gs://` tree (a dataset written again without someone)."""
    text = str(uri).rstrip("/")
    if is_remote(text):
        shutil.rmtree(_cached(text), ignore_errors=True)


def fetch_tree(uri: str | Path, commit_file: str) -> Path:
    """A local directory holding the tree at `uri`: the path itself, or a cached copy of a `gs://` tree."""
    text = str(uri).rstrip("/")
    if not is_remote(text):
        return Path(text.removeprefix("file://"))
    target = _cached(text)
    if (target / commit_file).is_file():
        return target
    store = open_store(text)
    keys = store.list()
    if commit_file not in keys:
        raise InputNotFound(f"no {commit_file} under {text}")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for key in keys:
        dest = tmp / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        store.download_file(key, dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(target)
    except OSError:  # another process cached it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target
