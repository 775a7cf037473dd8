"""`stt-flywheel forget`: a person's deletion request, carried out in the error store, and which
registered model versions learnt from them.

In order: the request's tombstone (so ingest, compaction and the dataset builder keep nothing it
covers from then on), then the person's rows, events, quarantine lines and audio
(`data.error_store.forget`; the tombstone widens with each prediction id found before its file is
rewritten), then the versions whose datasets (or their ancestors') hold the person, then an audit
entry without the raw id, then the tombstone marked done. A rerun of the same request finds its
tombstone and finishes what a `kill -9` left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.data.error_store.forget import (
    ForgetCounts,
    forget_rows,
    hashed_id,
    request_id,
    write_tombstone,
)
from stt_flywheel.data.identity import ANONYMOUS
from stt_flywheel.deployment.backends import open_registry
from stt_flywheel.errors import InputError, InputNotFound
from stt_flywheel.storage.objectstore import join_uri
from stt_flywheel.storage.trees import fetch_tree

__all__ = ["ForgetResult", "forget"]


@dataclass
class ForgetResult:
    request: str  # the tombstone's id
    dry_run: bool
    counts: ForgetCounts
    learnt_by: list[int] = field(default_factory=list)  # registered versions that learnt from them
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "request": self.request,
            "dry_run": self.dry_run,
            **self.counts.as_dict(),
            "learnt_by_versions": self.learnt_by,
            "notes": self.notes,
        }


def forget(
    config: FlywheelConfig,
    *,
    user: str | None,
    prediction_ids: list[str],
    reason: str,
    now: datetime,
    dry_run: bool = False,
) -> ForgetResult:
    """Carry out a deletion request for a user (their raw id, hashed here) or prediction ids."""
    if not reason.strip():
        raise InputError("say why (--reason): the audit log keeps it")
    store = open_error_store(config)
    users: set[str] = set()
    if user is not None:
        pseudonym = store.senders.pseudonym(user)
        if pseudonym == ANONYMOUS:
            raise InputError("an empty user id names nobody: give the id the application sends as `user`")
        users.add(pseudonym)
    ids = {p.strip() for p in prediction_ids if p.strip()}
    if not users and not ids:
        raise InputError("name whom to forget: --user ID or --prediction-id ID…")
    request = request_id(users, ids)
    stone = {
        "request": request,
        "users": sorted(users),
        "predictions": sorted(hashed_id(p) for p in ids),
        "reason": reason,
        "at": now.isoformat(),
        "done": False,
    }

    def found(more: set[str], audio: set[str]) -> None:  # before the file holding them is rewritten
        write_tombstone(
            store, request, {"predictions": sorted(hashed_id(p) for p in more), "audio": sorted(audio)}
        )

    audio: list[str] = []
    if not dry_run:
        audio = write_tombstone(store, request, stone).get("audio", [])  # found by an earlier run
    counts = forget_rows(store, users, ids, dry_run=dry_run, found=None if dry_run else found, audio=audio)
    result = ForgetResult(request, dry_run, counts)
    result.learnt_by, result.notes = _learnt_by(config, users, ids | counts.prediction_ids)
    if not dry_run:
        detail = {
            "request": request,
            "reason": reason,
            **counts.as_dict(),
            "learnt_by_versions": result.learnt_by,
        }
        open_registry(config).record("forget", None, detail)
        write_tombstone(store, request, {"done": True})
    return result


def _learnt_by(config: FlywheelConfig, users: set[str], ids: set[str]) -> tuple[list[int], list[str]]:
    """Registered versions trained on a dataset holding these users or predictions, or descended
    from one (a version is fine-tuned from its parent, so it carries what the parent learnt)."""
    from datasets import load_from_disk

    registry = open_registry(config)
    versions = {v.version: v for v in registry.versions()}
    holds: dict[str, bool] = {}
    notes: list[str] = []
    for v in versions.values():
        name = v.dataset_version
        if not name or name in holds:
            continue
        try:
            train = load_from_disk(
                str(fetch_tree(join_uri(config.paths.datasets, name), "manifest.json") / "data")
            )["train"]
        except (FileNotFoundError, InputNotFound):
            holds[name] = False
            notes.append(f"dataset {name} (version {v.version}) is not in {config.paths.datasets}: unknown")
            continue
        columns = train.select_columns([c for c in ("id", "user") if c in train.column_names])
        holds[name] = any(row.get("user") in users or row.get("id") in ids for row in columns)
    learnt = []
    for number, v in sorted(versions.items()):
        seen: set[int] = set()
        current: Any = v
        while current is not None and current.version not in seen:
            seen.add(current.version)
            if holds.get(current.dataset_version or "", False):
                learnt.append(number)
                break
            parent = current.lineage.get("parent_version")
            current = versions.get(int(parent)) if parent is not None else None
    return learnt, notes
