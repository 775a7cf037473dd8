"""Stage 2: build a versioned fine-tuning dataset from corrected error cases.

The error cases are the join of captured predictions (their audio) with the latest feedback that
arrived by the watermark. Every corrected one is read, validated and either accepted, counted
as a duplicate, or quarantined with a reason code — the counts always balance. General-domain
replay is mixed into the training split against forgetting. Audio that belongs to an evaluation or
regression set never enters training. The train / held-out split is a function of the audio hash,
so the same utterance lands in the same split in every run.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from stt_flywheel.config import DatasetSettings
from stt_flywheel.data.audio import audio_hash, decode_audio, encode_wav, load_audio
from stt_flywheel.data.dataset.admission import Row, add_replay, admit_corrections
from stt_flywheel.data.dataset.manifest import SPLITS, DatasetManifest, profile
from stt_flywheel.data.dataset.pseudo import add_pseudo_labels
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.manifest import read_manifest
from stt_flywheel.data.review import Screen
from stt_flywheel.storage.files import atomic_write_bytes, atomic_write_json
from stt_flywheel.storage.objectstore import join_uri
from stt_flywheel.storage.trees import put_tree, tree_exists

__all__ = [
    "DatasetManifest",
    "build_dataset",
    "load_split",
    "protected_hashes",
    "publish_dataset",
    "split_of",
]


def split_of(sha256: str, holdout_fraction: float) -> str:
    return "heldout" if int(sha256[:8], 16) / 0x1_0000_0000 < holdout_fraction else "train"


def protected_hashes(manifests: Iterable[str | Path]) -> set[str]:
    """Audio hashes of every utterance in the given eval / regression manifests."""
    out: set[str] = set()
    for path in manifests:
        for utt in read_manifest(path):
            out.add(utt.audio_sha256 or audio_hash(load_audio(utt.audio).samples))
    return out


def build_dataset(
    store: ErrorStore,
    out_dir: str | Path,
    settings: DatasetSettings,
    *,
    watermark: datetime | None,
    protected: set[str] | frozenset[str] = frozenset(),
    model_window_s: float | None = None,
    target_check: Callable[[str], str | None] | None = None,
    screen: Screen | None = None,
    settled: datetime | None = None,
) -> DatasetManifest:
    """Write `out_dir/{data/<split>.arrow-dataset, manifest.json, quarantine.jsonl}`: admit the
    corrections, split them by user (so that no user is in both; rows without a known user by
    audio hash), cap each user's share of the training split (`max_user_share`), mix replay into
    the train split, write.

    `model_window_s`: the longest audio the model to be trained hears at once (Whisper: 30 s).
    A correction of longer audio is quarantined (`too_long_for_model`): it carries one transcript
    and no word timings, so there is nowhere to cut it that keeps audio and text aligned.
    `target_check`: why a transcript is too long to be the model's training target (None when it
    fits); such a correction is quarantined as `too_long_for_model` too. `screen`: what holds a
    correction for review (`data.review`). `settled`: predictions made before it have had their
    label window: pseudo-labels come from those (`data.dataset.pseudo`, when configured)."""
    admitted = admit_corrections(store, settings, watermark, protected, model_window_s, target_check, screen)
    splits: dict[str, list[Row]] = {s: [] for s in SPLITS}
    for row in admitted.rows:
        splits[split_of(row.split_key, settings.holdout_fraction)].append(row)
    if settings.max_user_share < 1.0:
        splits["train"] = admitted.cap_users(splits["train"], settings.max_user_share)
    pseudo = add_pseudo_labels(
        store,
        splits["train"],
        settings,
        settled=settled,
        heldout=lambda key: split_of(key, settings.holdout_fraction) == "heldout",
        protected=protected,
        model_window_s=model_window_s,
        target_check=target_check,
    )
    replay = add_replay(splits["train"], settings, protected, model_window_s)
    digest = hashlib.sha256()
    for split in SPLITS:
        splits[split].sort(key=lambda r: r.sha)
        for r in splits[split]:
            digest.update(f"{split}\t{r.sha}\t{r.text}\t{r.user}\t{r.weight}\n".encode())
    content_hash = digest.hexdigest()
    manifest = DatasetManifest(
        version=f"ds-{content_hash[:12]}",
        content_hash=content_hash,
        watermark=watermark.isoformat() if watermark else None,
        created_at=datetime.now(UTC).isoformat(),
        counts=dict(admitted.counts),
        quarantine_reasons=dict(admitted.reasons),
        splits={s: len(v) for s, v in splits.items()},
        replay=replay,
        pseudo_labels=pseudo,
        settings=settings.model_dump(mode="json"),
        profile={split: profile(rows_) for split, rows_ in splits.items()},
    )
    _write(Path(out_dir), splits, admitted.quarantine, manifest)
    return manifest


_FEATURES = {
    "id": "string",
    "text": "string",
    "audio_wav": "binary",
    "audio_sha256": "string",
    "duration_s": "float32",
    "source": "string",
    "speaker": "string",
    "domain": "string",
    "language": "string",
    "user": "string",
    "event_id": "string",
    "event_source": "string",
    "weight": "float32",
}


def _columns(rows: list[Row]) -> dict[str, list[Any]]:
    # Column-wise, so that an empty split still carries its schema.
    return {
        "id": [r.id for r in rows],
        "text": [r.text for r in rows],
        "audio_wav": [encode_wav(r.audio.samples, r.audio.sample_rate) for r in rows],
        "audio_sha256": [r.sha for r in rows],
        "duration_s": [r.audio.duration_s for r in rows],
        "source": [r.source for r in rows],
        "speaker": [r.speaker for r in rows],
        "domain": [r.domain for r in rows],
        "language": [r.language for r in rows],
        "user": [r.user for r in rows],
        "event_id": [r.event_id for r in rows],
        "event_source": [r.event_source for r in rows],
        "weight": [r.weight for r in rows],
    }


def _write(
    out_dir: Path, splits: dict[str, list[Row]], quarantine: list[dict[str, Any]], manifest: DatasetManifest
) -> None:
    """The dataset, its quarantine and its manifest, built beside `out_dir` and moved into it."""
    from datasets import Dataset, DatasetDict, Features, Value

    features = Features({name: Value(kind) for name, kind in _FEATURES.items()})
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    DatasetDict(
        {split: Dataset.from_dict(_columns(rows), features=features) for split, rows in splits.items()}
    ).save_to_disk(
        str(tmp / "data"), num_shards=dict.fromkeys(SPLITS, 1)
    )  # an empty split still gets its (empty) shard
    atomic_write_bytes(tmp / "quarantine.jsonl", b"".join(orjson.dumps(q) + b"\n" for q in quarantine))
    atomic_write_json(tmp / "manifest.json", manifest.as_dict())
    out_dir.mkdir(parents=True, exist_ok=True)
    for child in tmp.iterdir():
        target = out_dir / child.name
        if target.is_dir():
            shutil.rmtree(target)
        child.rename(target)
    tmp.rmdir()


def load_split(dataset_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """Rows of one split with decoded audio: `{"id", "text", "audio", "speaker", "domain", "source",
    "language", "user", "event_id", "event_source", "weight"}` (columns a dataset built before them
    lacks read as "", a weight as 1)."""
    from datasets import load_from_disk

    ds = load_from_disk(str(Path(dataset_dir) / "data"))[split]
    return [
        {
            "id": row["id"],
            "text": row["text"],
            "audio": decode_audio(row["audio_wav"]).samples,
            "speaker": row["speaker"],
            "domain": row["domain"],
            "source": row["source"],
            "language": row.get("language") or "",
            "user": row.get("user") or "",
            "event_id": row.get("event_id") or "",
            "event_source": row.get("event_source") or "",
            "weight": float(row["weight"]) if row.get("weight") is not None else 1.0,
        }
        for row in ds
    ]


def publish_dataset(dataset_dir: str | Path, datasets_root: str | Path) -> str:
    """Copy a built dataset into the versioned store (`datasets_root/<version>`, a directory or a
    `gs://` prefix); idempotent, since a version is the hash of its content."""
    manifest = DatasetManifest.load(dataset_dir)
    target = join_uri(datasets_root, manifest.version)
    if not tree_exists(target, "manifest.json"):
        put_tree(dataset_dir, target, commit_file="manifest.json")
    return target
