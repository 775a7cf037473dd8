"""What the pages of `stt-flywheel ui` read: one prediction and its feedback, the datasets that
hold it, the run behind each version, the changes to what serves. Reads only; every page reads
again, so what it shows is what the store, the ledgers and the registry hold now."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.records import id_ms
from stt_flywheel.deployment.protocols import Registry
from stt_flywheel.deployment.registry import AuditEntry
from stt_flywheel.errors import InputNotFound
from stt_flywheel.run.entries import DatasetEntry
from stt_flywheel.run.ledger import list_runs, read_ledger
from stt_flywheel.run.lineage import dataset_dir

__all__ = [
    "SERVING_CHANGES",
    "DatasetUse",
    "dataset_runs",
    "dataset_uses",
    "feedback_history",
    "find_prediction",
    "serving_changes",
]

# The audit actions that change which version serves, or how much.
SERVING_CHANGES = (
    "deploy",
    "promote",
    "rollback",
    "traffic",
    "monitor_canary",
    "monitor_default",
    "undeploy",
)


def find_prediction(store: ErrorStore, prediction_id: str) -> dict[str, Any] | None:
    """One prediction by id. A UUIDv7 id carries its time, so only the hours around it are read."""
    ms = id_ms(prediction_id)
    start = end = None
    if ms is not None:
        at = datetime.fromtimestamp(ms / 1000, UTC)
        start, end = at - timedelta(hours=1), at + timedelta(hours=1)
    table = store.predictions(start, end)
    found = table.filter(pc.equal(table["prediction_id"], prediction_id))
    if found.num_rows == 0 and ms is not None:  # written with a time its id does not carry
        table = store.predictions()
        found = table.filter(pc.equal(table["prediction_id"], prediction_id))
    return found.slice(0, 1).to_pylist()[0] if found.num_rows else None


def feedback_history(store: ErrorStore, prediction: dict[str, Any]) -> list[dict[str, Any]]:
    """Every feedback event about one prediction, in arrival order (repeats included)."""
    after = prediction["predicted_at"] - timedelta(hours=1)
    events: pa.Table = store.feedback_for([prediction["prediction_id"]], after=after)
    return sorted(events.to_pylist(), key=lambda e: (e["ingested_at"], e["event_id"]))


def dataset_runs(config: FlywheelConfig, version: str) -> list[str]:
    """The runs that built dataset `version`."""
    return [
        r
        for r in list_runs(config)
        if (d := read_ledger(config, r, DatasetEntry)) is not None and d.version == version
    ]


@dataclass(frozen=True)
class DatasetUse:
    """One dataset that holds a prediction: in which split, and the versions trained on it."""

    dataset: str
    split: str
    versions: list[int]


def _ids_by_split(directory: Path) -> dict[str, set[str]]:
    """The `id` column of each split of a published dataset, read from its Arrow files alone."""
    out: dict[str, set[str]] = {}
    for path in sorted(glob.glob(str(directory / "data" / "*" / "*.arrow"))):
        split = Path(path).parent.name
        with pa.memory_map(path) as source:
            ids = pa.ipc.open_stream(source).read_all().column("id")
        out.setdefault(split, set()).update(ids.to_pylist())
    return out


def dataset_uses(config: FlywheelConfig, registry: Registry, prediction_id: str) -> list[DatasetUse]:
    """The datasets of the registered versions (and of the runs) that hold this prediction."""
    trained: dict[str, list[int]] = {}
    for v in registry.versions():
        if v.dataset_version:
            trained.setdefault(v.dataset_version, []).append(v.version)
    for run_id in list_runs(config):
        entry = read_ledger(config, run_id, DatasetEntry)
        if entry is not None:
            trained.setdefault(entry.version, [])
    uses = []
    for version, versions in sorted(trained.items()):
        try:
            splits = _ids_by_split(dataset_dir(config, version))
        except (InputNotFound, FileNotFoundError):  # pruned, or in another store
            continue
        uses += [
            DatasetUse(version, s, sorted(versions)) for s, ids in splits.items() if prediction_id in ids
        ]
    return uses


def serving_changes(registry: Registry) -> list[AuditEntry]:
    """The audit entries that changed what serves, oldest first."""
    return [e for e in registry.audit_log() if e.action in SERVING_CHANGES]
