"""`stt-flywheel forget`: a person's deletion request, carried out in the error store and the
published datasets, and which registered model versions learnt from them.

In order: the request's tombstone (so ingest, compaction and the dataset builder keep nothing it
covers from then on), then the person's rows, events, quarantine lines and audio
(`data.error_store.forget`; the tombstone widens with each prediction id found before its file is
rewritten), then the versions whose datasets (or their ancestors') hold the person, then each
dataset that holds them written again without them (the old one emptied to a manifest naming its
successor), then an audit entry without the raw id, then the tombstone marked done. A rerun of
the same request finds its tombstone and finishes what a `kill -9` left.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.capture import forget_spilled
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.data.error_store.forget import (
    ForgetCounts,
    Forgotten,
    forget_rows,
    hashed_id,
    request_id,
    write_tombstone,
)
from stt_flywheel.data.identity import ANONYMOUS
from stt_flywheel.deployment.backends import open_registry
from stt_flywheel.errors import InputError, InputNotFound
from stt_flywheel.run.lineage import dataset_dir
from stt_flywheel.run.proposed import propose_retraining as retraining
from stt_flywheel.storage.objectstore import ObjectStore, is_remote, join_uri, open_store
from stt_flywheel.storage.trees import fetch_tree, forget_cached, put_tree, tree_exists

__all__ = ["DatasetsForgotten", "ForgetResult", "forget", "forget_in_datasets", "forget_in_runs"]


@dataclass
class DatasetsForgotten:
    datasets: int = 0  # datasets written again without them
    rows: int = 0  # their rows (every split) and quarantine lines in those datasets
    successors: dict[str, str] = field(default_factory=dict)  # old version → the one without them


@dataclass
class ForgetResult:
    request: str  # the tombstone's id
    dry_run: bool
    counts: ForgetCounts
    learnt_by: list[int] = field(default_factory=list)  # registered versions that learnt from them
    notes: list[str] = field(default_factory=list)
    datasets: DatasetsForgotten = field(default_factory=DatasetsForgotten)
    spilled: int = 0  # predictions waiting in this machine's capture spill directory
    run_files: int = 0  # reports, ledger entries and pipeline outputs that named them
    retraining: dict[str, Any] | None = None  # the retraining proposed without them (`Proposal.as_dict`)

    def as_dict(self) -> dict[str, Any]:
        return {
            "request": self.request,
            "dry_run": self.dry_run,
            **self.counts.as_dict(),
            "datasets": self.datasets.datasets,
            "dataset_rows": self.datasets.rows,
            "dataset_successors": self.datasets.successors,
            "spilled": self.spilled,
            "run_files": self.run_files,
            "learnt_by_versions": self.learnt_by,
            "retraining": self.retraining,
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
    propose_retraining: bool = False,
) -> ForgetResult:
    """Carry out a deletion request for a user (their raw id, hashed here) or prediction ids; with
    `propose_retraining`, propose a run that trains again without them (`run.proposed`) when a
    registered version learnt from them."""
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
    if not dry_run:  # batches this machine's serving processes could not write yet
        spill = config.capture.spill_dir or config.paths.root / "capture-spill"
        result.spilled = forget_spilled(Path(spill), Forgotten.load(store))
    hashed = {hashed_id(p) for p in ids | counts.prediction_ids}
    if not dry_run:  # with the ids an interrupted run found before it stopped
        hashed |= set(write_tombstone(store, request, {}).get("predictions", []))
    result.learnt_by, result.notes = _learnt_by(config, users, hashed)
    result.datasets = forget_in_datasets(config, users, hashed, request, dry_run)
    if not dry_run:
        result.run_files = forget_in_runs(config, users, hashed, request)
    if not dry_run:
        detail = {
            "request": request,
            "reason": reason,
            **counts.as_dict(),
            "datasets": result.datasets.datasets,
            "learnt_by_versions": result.learnt_by,
        }
        open_registry(config).record("forget", None, detail)
        write_tombstone(store, request, {"done": True})
    if propose_retraining and result.learnt_by and not dry_run:
        proposal, _ = retraining(
            config, request=request, learnt_by=result.learnt_by, run_id=f"forget-{request[:8]}", now=now
        )
        result.retraining = proposal.as_dict(now)
    return result


def _holds(config: FlywheelConfig, name: str, users: set[str], hashed: set[str]) -> bool:
    from datasets import load_from_disk

    splits = load_from_disk(str(dataset_dir(config, name) / "data"))
    return any(_drops(ds, users, hashed).count(True) for ds in splits.values())


def _drops(ds: Any, users: set[str], hashed: set[str]) -> list[bool]:
    """Which rows of a split belong to these users or (hashed) prediction ids."""
    columns = ds.select_columns([c for c in ("id", "user") if c in ds.column_names])
    return [row.get("user") in users or hashed_id(row.get("id") or "") in hashed for row in columns]


def _learnt_by(config: FlywheelConfig, users: set[str], hashed: set[str]) -> tuple[list[int], list[str]]:
    """Registered versions trained on a dataset holding these users or predictions, or descended
    from one (a version is fine-tuned from its parent, so it carries what the parent learnt)."""
    versions = {v.version: v for v in open_registry(config).versions()}
    holds: dict[str, bool] = {}
    notes: list[str] = []
    for v in versions.values():
        name = v.dataset_version
        if not name or name in holds:
            continue
        try:
            holds[name] = _holds(config, name, users, hashed)
        except (FileNotFoundError, InputNotFound):
            holds[name] = False
            notes.append(f"dataset {name} (version {v.version}) is not in {config.paths.datasets}: unknown")
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


def forget_in_datasets(
    config: FlywheelConfig, users: set[str], hashed: set[str], request: str, dry_run: bool = False
) -> DatasetsForgotten:
    """Each published dataset that holds these users or predictions (`hashed`: their ids as a
    tombstone keeps them) is written again without them as a new version (`<old>-f<request>`:
    datasets stay immutable), and the old one is emptied down to a manifest naming its successor,
    which lineage follows. A rerun finds the stubs and finishes them."""
    out = DatasetsForgotten()
    store = open_store(config.paths.datasets)
    for name in sorted({key.split("/", 1)[0] for key in store.list() if "/" in key}):
        found = store.read(f"{name}/manifest.json")
        manifest = orjson.loads(found.data) if found is not None else {}
        if manifest.get("forgotten_into"):  # a stub: what an interrupted run left of the data goes
            if not dry_run:
                _empty_to_stub(store, name)
            continue
        if found is None:  # a dataset still being published, or not one
            continue
        new = f"{name}-f{request[:8]}"
        rows = _rewrite_dataset(config, name, new, manifest, users, hashed, dry_run)
        if not rows:
            continue
        out.datasets += 1
        out.rows += rows
        out.successors[name] = new
        if not dry_run:
            stub = {"version": name, "forgotten_into": new, "forget_request": request}
            store.write(f"{name}/manifest.json", orjson.dumps(stub))
            _empty_to_stub(store, name)
            forget_cached(join_uri(config.paths.datasets, name))
    return out


def _empty_to_stub(store: ObjectStore, name: str) -> None:
    for key in store.list(f"{name}/"):
        if key != f"{name}/manifest.json":
            store.delete(key)
    if not is_remote(store.uri):  # a directory: its emptied folders go too
        for folder in sorted(Path(store.uri, name).rglob("*"), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _rewrite_dataset(
    config: FlywheelConfig,
    name: str,
    new: str,
    manifest: dict[str, Any],
    users: set[str],
    hashed: set[str],
    dry_run: bool,
) -> int:
    """Write dataset `name` again as `new` without these users' and predictions' rows; how many
    rows and quarantine lines it held of them (0: nothing written)."""
    from datasets import DatasetDict, load_from_disk
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    local = fetch_tree(join_uri(config.paths.datasets, name), "manifest.json")
    splits = load_from_disk(str(local / "data"))
    drops = {split: _drops(ds, users, hashed) for split, ds in splits.items()}
    path = local / "quarantine.jsonl"
    quarantine = path.read_bytes().splitlines() if path.exists() else []
    kept_lines = [line for line in quarantine if hashed_id(orjson.loads(line).get("id") or "") not in hashed]
    removed = sum(d.count(True) for d in drops.values()) + len(quarantine) - len(kept_lines)
    if not removed or dry_run:
        return removed
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / new
        kept = {s: [i for i, drop in enumerate(drops[s]) if not drop] for s in splits}
        quiet = not are_progress_bars_disabled()
        disable_progress_bars()  # a command's output, not a progress bar per split
        try:
            # one shard for an empty split: without one `load_from_disk` cannot read it back
            shards = {s: 1 for s in splits if not kept[s]}
            DatasetDict({s: ds.select(kept[s]) for s, ds in splits.items()}).save_to_disk(
                str(target / "data"), num_shards=shards or None
            )
        finally:
            if quiet:
                enable_progress_bars()
        (target / "quarantine.jsonl").write_bytes(b"".join(line + b"\n" for line in kept_lines))
        body = {
            **manifest,
            "version": new,
            "derived_from": name,
            "splits": {s: len(k) for s, k in kept.items()},
        }
        (target / "manifest.json").write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
        if not tree_exists(join_uri(config.paths.datasets, new), "manifest.json"):
            put_tree(target, join_uri(config.paths.datasets, new), "manifest.json")
    return removed


_LEARNT = (".safetensors", ".bin", ".pt", ".pth", ".png", ".npz", ".model")
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_WITHDRAWN = (
    "<!doctype html><meta charset='utf-8'><title>Report withdrawn</title><p>This report was withdrawn: "
    "it showed what a person who asked to be forgotten said (forget request {request}). The run's "
    "verdict and counts are in its ledger.</p>"
)
_WITHDRAWN_MD = (
    "# Report withdrawn\n\nThis report was withdrawn: it showed what a person who asked to be forgotten "
    "said (forget request {request}). The run's verdict and counts are in its ledger.\n"
)


def forget_in_runs(config: FlywheelConfig, users: set[str], hashed: set[str], request: str) -> int:
    """Take the person out of run reports, ledgers and pipeline outputs (`paths.reports`,
    `paths.pipeline_root`): JSON loses the examples and entries that name them, JSON lines the
    lines, an HTML report that shows them is replaced by a note that it was withdrawn, and a
    dataset a run built (an Arrow split that holds them) is deleted: the published one was written
    again without them. How many files changed."""
    changed = 0
    for location in (config.paths.reports, config.paths.pipeline_root):
        store = open_store(location)
        for key in store.list():
            if key.endswith(_LEARNT):  # weights and plots: what a model learnt, not what anyone said
                continue
            found = store.read(key)
            if found is None:
                continue
            data = _scrubbed(key, found.data, users, hashed, request)
            if data is None:
                continue
            changed += 1
            if data != b"":
                store.write(key, data)
            elif "/data/" in key and key.endswith(".arrow"):  # the whole dataset the split is of
                for other in store.list(key.rsplit("/data/", 1)[0] + "/data/"):
                    store.delete(other)
            else:
                store.delete(key)
    return changed


def _names(value: Any, users: set[str], hashed: set[str]) -> bool:
    return isinstance(value, str) and (value in users or hashed_id(value) in hashed)


def _scrub(value: Any, users: set[str], hashed: set[str]) -> Any:
    """`value` without the entries that name them: a dict whose `id` or `user` is theirs, a key or
    a string that is their pseudonym or prediction id."""
    if isinstance(value, dict):
        return {k: _scrub(v, users, hashed) for k, v in value.items() if not _names(k, users, hashed)}
    if isinstance(value, list):
        return [
            _scrub(v, users, hashed)
            for v in value
            if not _names(v, users, hashed)
            and not (
                isinstance(v, dict)
                and (_names(v.get("id"), users, hashed) or _names(v.get("user"), users, hashed))
            )
        ]
    return value


def _scrubbed(key: str, data: bytes, users: set[str], hashed: set[str], request: str) -> bytes | None:
    """The file's new content (b"": delete it), or None when it does not name them."""
    if key.endswith(".arrow"):
        table = pa.ipc.open_stream(data).read_all()
        names = [c for c in ("id", "user") if c in table.column_names]
        holds = any(_names(v, users, hashed) for c in names for v in table[c].to_pylist())
        return b"" if holds else None
    if key.endswith(".json"):
        body = orjson.loads(data)
        clean = _scrub(body, users, hashed)
        return orjson.dumps(clean) if clean != body else None
    if key.endswith(".jsonl"):
        lines = data.splitlines()
        kept = [line for line in lines if _scrub([orjson.loads(line)], users, hashed) != []]
        return (b"\n".join(kept) + b"\n" if kept else b"") if len(kept) < len(lines) else None
    if any(u.encode() in data for u in users) or any(
        hashed_id(m.decode()) in hashed for m in _UUID.findall(data)
    ):
        return (_WITHDRAWN_MD if key.endswith(".md") else _WITHDRAWN).format(request=request).encode()
    return None
