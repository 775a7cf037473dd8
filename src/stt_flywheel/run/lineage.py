"""Which users' corrections taught a version: its dataset's training split, and its ancestors'.

A version is registered with the dataset it was trained on and the version it was trained from
(`lineage.parent_version`); each dataset row keeps the pseudonym of the user whose prediction it
corrects. Walking the parents answers "whose data is in version N" — what forgetting a person
must act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.deployment.protocols import Registry
from stt_flywheel.errors import InputNotFound
from stt_flywheel.storage.objectstore import join_uri
from stt_flywheel.storage.trees import fetch_tree

__all__ = ["VersionUsers", "dataset_dir", "trained_users"]


@dataclass
class VersionUsers:
    """One version in the chain: the dataset it trained on and that dataset's training users."""

    version: int
    dataset_version: str | None
    users: list[str] = field(default_factory=list)  # pseudonyms, sorted; `anonymous` is one
    note: str = ""  # why the users are unknown, where they are

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "dataset_version": self.dataset_version,
            "users": self.users,
            "note": self.note,
        }


def dataset_dir(config: FlywheelConfig, version: str) -> Path:
    """A local directory of published dataset `version`, or of the dataset that replaced it when
    a forget request wrote it again without someone."""
    seen: set[str] = set()
    while version not in seen:
        seen.add(version)
        local = fetch_tree(join_uri(config.paths.datasets, version), "manifest.json")
        successor = orjson.loads((local / "manifest.json").read_bytes()).get("forgotten_into")
        if not successor:
            return local
        version = successor
    raise InputNotFound(f"dataset {version}: its successors loop")


def _dataset_users(config: FlywheelConfig, dataset_version: str) -> tuple[list[str], str]:
    from datasets import load_from_disk

    try:
        train = load_from_disk(str(dataset_dir(config, dataset_version) / "data"))["train"]
    except (FileNotFoundError, InputNotFound):
        return [], f"dataset {dataset_version} is not in {config.paths.datasets} (pruned, or another store)"
    if "user" not in train.column_names:
        return [], "built before datasets recorded their users"
    users = {u for u, source in zip(train["user"], train["source"], strict=True) if source == "correction"}
    return sorted(users), ""


def trained_users(config: FlywheelConfig, registry: Registry, version: int) -> list[VersionUsers]:
    """`version` and each ancestor it was trained from, newest first, with their training users.
    A version registered without a dataset (the base model) ends the chain."""
    chain: list[VersionUsers] = []
    seen: set[int] = set()
    current: int | None = version
    while current is not None and current not in seen:
        seen.add(current)
        v = registry.get(current)
        entry = VersionUsers(current, v.dataset_version)
        if v.dataset_version:
            entry.users, entry.note = _dataset_users(config, v.dataset_version)
        else:
            entry.note = "not trained by a run (a base model): no user's corrections"
        chain.append(entry)
        parent = v.lineage.get("parent_version")
        current = int(parent) if parent is not None else None
    return chain
