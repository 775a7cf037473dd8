"""`store retain`: delete what is past its days (`retention.*`), everywhere the flywheel keeps it.

The error store's streams and audio (`data.error_store.retain`); datasets, whose examples carry
audio and transcripts; run reports and ledgers, and the pipeline's outputs, which carry
transcripts. A dataset or a run that a registered model version names (the dataset it learnt
from, the run that trained it) is kept however old, so every registered version keeps its
lineage: delete the version to let them go.

`lifecycle_rules` says the same for the error store's streams as a Cloud Storage Object Lifecycle
configuration, so a bucket enforces them itself. Audio, datasets and runs are not in it: whether
they may go depends on what names them, which a bucket's rules cannot see.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from stt_flywheel.config import ConfigError, FlywheelConfig
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.data.error_store.retain import STREAM_DAYS
from stt_flywheel.deployment.backends import open_registry
from stt_flywheel.storage.objectstore import open_store, split_gs_uri

__all__ = ["RetainResult", "lifecycle_rules", "retain"]


@dataclass
class RetainResult:
    now: datetime
    dry_run: bool
    deleted: dict[str, int] = field(default_factory=dict)  # objects (files), datasets and runs gone
    kept: dict[str, int] = field(default_factory=dict)  # past their days, kept because named

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "dry_run": self.dry_run,
            "deleted": self.deleted,
            "kept": self.kept,
        }

    def to_markdown(self) -> str:
        """What a scheduled run says in the console: a line per kind."""
        if not self.deleted:
            return "# Retention\n\nNothing to do: no `retention.*` days are set (null keeps everything).\n"
        verb = "Would delete" if self.dry_run else "Deleted"
        rows = [f"| {k} | {n} | {self.kept.get(k, 0)} |" for k, n in self.deleted.items()]
        return "\n".join(
            [
                "# Retention",
                "",
                f"{verb} at {self.now.isoformat(timespec='seconds')} what was past its days; kept: past "
                "them, but a younger prediction or a registered version names it.",
                "",
                "| kind | deleted | kept |",
                "|---|---|---|",
                *rows,
                "",
            ]
        )


def retain(config: FlywheelConfig, now: datetime, dry_run: bool = False) -> RetainResult:
    """Delete (with `dry_run`, only count) everything past its days at `now`."""
    settings = config.retention
    found = open_error_store(config).retain(settings, now, dry_run)
    result = RetainResult(now, dry_run, dict(found.deleted), dict(found.kept))
    if settings.datasets_days is None and settings.reports_days is None:
        return result
    versions = open_registry(config).versions()
    trees = [
        ("datasets", config.paths.datasets, settings.datasets_days, {v.dataset_version for v in versions}),
        ("runs", config.paths.reports, settings.reports_days, {v.source_run for v in versions}),
        (
            "pipeline_runs",
            config.paths.pipeline_root,
            settings.reports_days,
            {v.source_run for v in versions},
        ),
    ]
    for kind, location, days, named in trees:
        if days is None:
            continue
        gone, kept = _retain_tree(location, now - timedelta(days=days), {n for n in named if n}, dry_run)
        result.deleted[kind], result.kept[kind] = gone, kept
    return result


def _retain_tree(location: str, cutoff: datetime, named: set[str], dry_run: bool) -> tuple[int, int]:
    """Delete each entry at the top of `location` (a directory: a dataset or a run; or a file)
    whose newest file was written before `cutoff`, unless it is `named`. (Deleted, kept.)"""
    store = open_store(location)
    newest: dict[str, datetime] = {}
    keys: dict[str, list[str]] = defaultdict(list)
    for key, written in store.list_dated():
        top = key.split("/", 1)[0] if "/" in key else key
        if key.startswith("monitor/"):  # the monitor's decisions: one file each
            top = key
        keys[top].append(key)
        newest[top] = max(written, newest.get(top, written))
    expired = [top for top, written in newest.items() if written < cutoff]
    gone = [top for top in expired if top not in named]
    if not dry_run:
        for top in gone:
            for key in keys[top]:
                store.delete(key)
    return len(gone), len(expired) - len(gone)


def lifecycle_rules(config: FlywheelConfig) -> dict[str, Any]:
    """The error store's retention as a Cloud Storage Object Lifecycle configuration, for
    `gcloud storage buckets update gs://BUCKET --lifecycle-file=FILE`: one Delete rule per stream
    with days set, by object age and the stream's prefix. A file's age counts from when it was
    written (a compaction writes anew), so the bucket deletes a partition up to a day or so after
    `store retain` would: run both."""
    from google.cloud.storage.bucket import LifecycleRuleDelete

    store = config.paths.error_store
    if not store.startswith("gs://"):
        raise ConfigError(
            f"a lifecycle configuration is for a Cloud Storage bucket; paths.error_store is {store}"
        )
    _, prefix = split_gs_uri(store)
    rules = []
    for stream, (name, _) in STREAM_DAYS.items():
        days = getattr(config.retention, name)
        if days is not None:
            # a partition is past its days once its hour has ended: a file written in it is at most an hour older
            rules.append(
                LifecycleRuleDelete(
                    age=days + 1, matches_prefix=[f"{prefix}/{stream}/" if prefix else f"{stream}/"]
                )
            )
    return {"rule": [dict(rule) for rule in rules]}
